package envoysim

import (
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// stream is one request as the filter chain sees it.
type stream struct {
	r        *http.Request
	id       uint64
	start    time.Time
	protocol string // "HTTP/1.1", "HTTP/2", ...
	http1    bool
	tls      bool
	isHead   bool
	isGRPC   bool

	headers headerMap // request headers incl. pseudo-headers, lower-case keys

	peerHost  string
	peerPort  uint32
	peerAddr  netip.Addr // invalid when RemoteAddr is not an IP
	localHost string
	localPort uint32

	trusted string // HCM's final remote address (§4.1)

	vhost *VirtualHost
	route *Route

	body         []byte
	bodyBuffered bool
	bodySettings *BufferSettings
}

// localReply is an Envoy sendLocalReply.
type localReply struct {
	status    int
	body      string
	modify    func(*headerMap)
	details   string
	closeConn bool
}

// Header names used by HCM and ext_authz.
const (
	hdrXFF             = "x-forwarded-for"
	hdrXFP             = "x-forwarded-proto"
	hdrExternalAddress = "x-envoy-external-address"
	hdrRequestID       = "x-request-id"
	hdrPartialBody     = "x-envoy-auth-partial-body"
	hdrFailureAllowed  = "x-envoy-auth-failure-mode-allowed"
)

// newStream runs the codec and HCM stages (steps 1-3 of the package doc). A
// non-nil localReply means Envoy answers before any filter runs.
func (f *Filter) newStream(r *http.Request) (*stream, *localReply) {
	st := &stream{
		r:        r,
		id:       f.streams.Add(1),
		start:    f.cfg.Now(),
		protocol: protocolString(r),
		http1:    r.ProtoMajor < 2,
		tls:      r.TLS != nil,
		isHead:   r.Method == http.MethodHead,
	}
	st.peerHost, st.peerPort = splitHostPort(r.RemoteAddr)
	if a, err := netip.ParseAddr(st.peerHost); err == nil {
		st.peerAddr = a
	}
	local := f.cfg.DestinationAddress
	if local == "" {
		if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && a != nil {
			local = a.String()
		} else {
			local = "127.0.0.1:10000"
		}
	}
	st.localHost, st.localPort = splitHostPort(local)

	// Codec: header map with pseudo-headers first, lower-case keys.
	st.headers = headerMap{
		{":authority", r.Host},
		{":path", requestPath(r)},
		{":method", r.Method},
	}
	for _, e := range fromHTTP(r.Header) {
		if strings.IndexByte(e.key, '_') >= 0 {
			switch f.cfg.HeadersWithUnderscoresAction {
			case RejectUnderscores:
				// http1 codec: sendProtocolError -> local reply 400 "Bad Request",
				// connection closed.
				return st, &localReply{status: http.StatusBadRequest, body: "Bad Request",
					details: "http1.unexpected_underscore", closeConn: true}
			case DropUnderscores:
				continue
			}
		}
		st.headers = append(st.headers, e)
	}
	// Envoy stores one x-forwarded-for (inline header: repeated lines are
	// coalesced with ",").
	if xff, ok := st.headers.joined(hdrXFF); ok {
		st.headers.set(hdrXFF, xff)
	}
	st.isGRPC = isGRPCContentType(st.headers)

	// HCM: relative path check, then path normalisation.
	path, _ := st.headers.first(":path")
	if path != "" && path[0] != '/' {
		return st, &localReply{status: http.StatusNotFound, details: "absolute_path"}
	}
	np, action := maybeNormalizePath(path, &f.cfg)
	switch {
	case action == normReject || (action == normRedirect && st.isGRPC):
		return st, &localReply{status: http.StatusBadRequest, details: "path_normalization_failed"}
	case action == normRedirect:
		return st, &localReply{status: http.StatusTemporaryRedirect, details: "path_normalization_failed",
			modify: func(h *headerMap) { h.add("location", np) }}
	}
	st.headers.set(":path", np)
	f.maybeNormalizeHost(st)

	f.mutateRequestHeaders(st)
	st.isGRPC = isGRPCContentType(st.headers)
	st.vhost, st.route = f.selectRoute(st.headers)
	return st, nil
}

func protocolString(r *http.Request) string {
	switch {
	case r.ProtoMajor == 1 && r.ProtoMinor == 0:
		return "HTTP/1.0"
	case r.ProtoMajor == 1:
		return "HTTP/1.1"
	case r.ProtoMajor == 2:
		return "HTTP/2"
	case r.ProtoMajor == 3:
		return "HTTP/3"
	}
	return ""
}

// requestPath returns the raw request-target the way Envoy's codec turns it
// into :path: origin-form verbatim; absolute-form reduced to path and query.
func requestPath(r *http.Request) string {
	uri := r.RequestURI
	if uri == "" {
		return r.URL.RequestURI()
	}
	if uri[0] == '/' || uri == "*" {
		return uri
	}
	if i := strings.Index(uri, "://"); i >= 0 {
		rest := uri[i+3:]
		if j := strings.IndexAny(rest, "/?"); j >= 0 {
			if rest[j] == '?' {
				return "/" + rest[j:]
			}
			return rest[j:]
		}
		return "/"
	}
	return uri
}

func splitHostPort(hp string) (string, uint32) {
	host, port, err := net.SplitHostPort(hp)
	if err != nil {
		return hp, 0
	}
	p, _ := strconv.ParseUint(port, 10, 16)
	return host, uint32(p)
}

// isGRPCContentType is Grpc::Common::hasGrpcContentType: exactly
// "application/grpc" or "application/grpc+..." (grpc-web is not gRPC).
func isGRPCContentType(h headerMap) bool {
	ct, _ := h.first("content-type")
	const g = "application/grpc"
	return strings.HasPrefix(ct, g) && (len(ct) == len(g) || ct[len(g)] == '+')
}

// isUpgrade is Http::Utility::isUpgrade: connection contains the "upgrade"
// token and an upgrade header is present.
func isUpgrade(h headerMap) bool {
	conn, _ := h.joined("connection")
	if !h.has("upgrade") {
		return false
	}
	for tok := range strings.SplitSeq(conn, ",") {
		if strings.EqualFold(strings.TrimSpace(tok), "upgrade") {
			return true
		}
	}
	return false
}

// envoyInternalHeaders are stripped from every external request
// (ConnectionManagerUtility::cleanInternalHeaders).
var envoyInternalHeaders = []string{
	"x-envoy-retriable-status-codes",
	"x-envoy-retriable-header-names",
	"x-envoy-retry-on",
	"x-envoy-retry-grpc-on",
	"x-envoy-max-retries",
	"x-envoy-upstream-alt-stat-name",
	"x-envoy-upstream-rq-timeout-ms",
	"x-envoy-upstream-rq-per-try-timeout-ms",
	"x-envoy-upstream-rq-timeout-alt-response",
	"x-envoy-expected-rq-timeout-ms",
	"x-envoy-force-trace",
	"x-envoy-ip-tags",
	"x-envoy-original-url",
	"x-envoy-hedge-on-per-try-timeout",
}

// mutateRequestHeaders ports ConnectionManagerUtility::mutateRequestHeaders
// for the options this harness models (§1.2 rule 6, §4.1).
func (f *Filter) mutateRequestHeaders(st *stream) {
	h := &st.headers
	if isUpgrade(*h) {
		// The upgrade request is forwarded with the HTTP/1 codec; without a
		// body marker Envoy adds content-length: 0.
		if !h.has("transfer-encoding") && !h.has("content-length") && st.r.ContentLength <= 0 {
			h.set("content-length", "0")
		}
	} else {
		h.remove("connection")
		h.remove("upgrade")
	}
	// Clean proxy headers.
	h.remove("x-envoy-internal")
	h.remove("keep-alive")
	h.remove("proxy-connection")
	h.remove("transfer-encoding")
	// A referer must be a single absolute URL.
	if refs := h.get("referer"); len(refs) > 0 {
		u, err := url.Parse(refs[0])
		if len(refs) > 1 || err != nil || u.Scheme == "" || u.Host == "" {
			h.remove("referer")
		}
	}
	// TE: only "trailers" survives (sanitizeTEHeader).
	if te, ok := h.joined("te"); ok {
		keep := false
		for tok := range strings.SplitSeq(te, ",") {
			if strings.EqualFold(strings.TrimSpace(tok), "trailers") {
				keep = true
			}
		}
		h.remove("te")
		if keep {
			h.add("te", "trailers")
		}
	}
	// Expect: 100-continue is answered by HCM itself (proxy_100_continue false).
	if v, ok := h.first("expect"); ok && strings.EqualFold(v, "100-continue") {
		h.remove("expect")
	}

	scheme := "http"
	if st.tls {
		scheme = "https"
	}
	var final netip.Addr
	if f.cfg.UseRemoteAddress {
		if n := f.cfg.XFFNumTrustedHops; n > 0 {
			if a, ok := lastAddressFromXFF(*h, n-1); ok {
				final = a
			}
		}
		if !final.IsValid() {
			final = st.peerAddr
		}
		// Append the peer to XFF, or Envoy's own address for a loopback peer (§4.3).
		if st.peerAddr.IsValid() {
			appendAddr := st.peerAddr.String()
			if st.peerAddr.IsLoopback() {
				appendAddr = f.cfg.LocalAddress
			}
			h.appendValue(hdrXFF, appendAddr)
		}
		if f.cfg.XFFNumTrustedHops == 0 || !h.has(hdrXFP) {
			h.set(hdrXFP, scheme)
		}
	} else {
		// Original IP detection (xff extension) with xff_num_trusted_hops.
		if a, ok := lastAddressFromXFF(*h, f.cfg.XFFNumTrustedHops); ok {
			final = a
		} else {
			final = st.peerAddr
		}
	}
	if !h.has(hdrXFP) {
		h.set(hdrXFP, scheme)
	}
	// :scheme from x-forwarded-proto when it is http/https, else transport.
	if !h.has(":scheme") {
		xfp, _ := h.first(hdrXFP)
		s := strings.ToLower(xfp)
		if s != "http" && s != "https" {
			s = scheme
		}
		h.set(":scheme", s)
	}
	if final.IsValid() {
		st.trusted = final.String()
	}

	// Since Envoy 1.33 no address is internal by default (§4.1), so a request
	// is "edge" exactly when use_remote_address is on.
	edge := f.cfg.UseRemoteAddress
	if edge {
		h.remove("x-envoy-decorator-operation")
		h.remove("x-envoy-downstream-service-cluster")
		h.remove("x-envoy-downstream-service-node")
	}
	for _, k := range envoyInternalHeaders {
		h.remove(k)
	}
	if edge && final.IsValid() {
		h.set(hdrExternalAddress, final.String())
	}

	// forward_client_cert_details defaults to SANITIZE; this harness has no
	// mTLS, so a client-supplied XFCC is always removed.
	h.remove("x-forwarded-client-cert")

	if f.cfg.GenerateRequestID {
		// UUIDRequestIDExtension::set: keep an existing id unless this is an
		// edge request and preserve_external_request_id is off.
		if !h.has(hdrRequestID) || (edge && !f.cfg.PreserveExternalRequestID) {
			h.set(hdrRequestID, newUUID4())
		}
	}
}

// lastAddressFromXFF ports Utility::getLastAddressFromXFF: skip numToSkip
// entries from the right, take the next one, trim it and parse it as an IP
// without port.
func lastAddressFromXFF(h headerMap, numToSkip int) (netip.Addr, bool) {
	xff, ok := h.first(hdrXFF)
	if !ok {
		return netip.Addr{}, false
	}
	for range numToSkip {
		i := strings.LastIndexByte(xff, ',')
		if i < 0 {
			return netip.Addr{}, false
		}
		xff = xff[:i]
	}
	if i := strings.LastIndexByte(xff, ','); i >= 0 {
		xff = xff[i+1:]
	}
	a, err := netip.ParseAddr(strings.TrimSpace(xff))
	if err != nil {
		return netip.Addr{}, false
	}
	return a, true
}

func newUUID4() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// selectRoute picks the virtual host by :authority and the route by :path.
// With no VirtualHosts configured every request matches a default route.
func (f *Filter) selectRoute(h headerMap) (*VirtualHost, *Route) {
	if len(f.cfg.VirtualHosts) == 0 {
		return &VirtualHost{Name: "default"}, &Route{}
	}
	auth, _ := h.first(":authority")
	host := strings.ToLower(stripPort(auth))
	vh := matchVirtualHost(f.cfg.VirtualHosts, host)
	if vh == nil {
		return nil, nil
	}
	path, _ := h.first(":path")
	p, _ := splitQuery(path)
	for i := range vh.Routes {
		rt := &vh.Routes[i]
		if rt.Path != "" {
			if p != rt.Path {
				continue
			}
		} else if !strings.HasPrefix(path, rt.Prefix) {
			continue
		}
		if matchHeaders(h, rt.Headers) {
			return vh, rt
		}
	}
	return vh, nil
}

// matchHeaders reports whether every matcher matches (HeaderUtility::matchHeaders).
func matchHeaders(h headerMap, ms []HeaderMatcher) bool {
	for i := range ms {
		if !ms[i].matches(h) {
			return false
		}
	}
	return true
}

// matches ports HeaderUtility::matchHeaders for one HeaderData: a missing
// header matches only an inverted non-presence matcher or present_match:
// false, unless treat_missing_header_as_empty compares "" instead.
func (m *HeaderMatcher) matches(h headerMap) bool {
	v, ok := h.joined(m.Name)
	if !ok && !m.TreatMissingAsEmpty {
		if m.Invert {
			return m.Kind != HeaderPresent
		}
		return m.Kind == HeaderPresent && !m.Present
	}
	var match bool
	want := m.Value
	if m.IgnoreCase {
		v, want = strings.ToLower(v), strings.ToLower(want)
	}
	switch m.Kind {
	case HeaderExact:
		match = v == want
	case HeaderPrefix:
		match = strings.HasPrefix(v, want)
	case HeaderSuffix:
		match = strings.HasSuffix(v, want)
	case HeaderContains:
		match = strings.Contains(v, want)
	case HeaderPresent:
		match = m.Present
	}
	return match != m.Invert
}

// maybeNormalizeHost ports ConnectionManagerUtility::maybeNormalizeHost:
// trailing host dot first, then the port (strip_any_host_port).
func (f *Filter) maybeNormalizeHost(st *stream) {
	if !f.cfg.StripTrailingHostDot && !f.cfg.StripAnyHostPort {
		return
	}
	host, ok := st.headers.first(":authority")
	if !ok {
		return
	}
	if f.cfg.StripTrailingHostDot {
		host = stripTrailingHostDot(host)
	}
	if f.cfg.StripAnyHostPort {
		host = stripPortFromHost(host)
	}
	st.headers.set(":authority", host)
}

// stripTrailingHostDot ports HeaderUtility::stripTrailingHostDot.
func stripTrailingHostDot(host string) string {
	i := strings.LastIndexByte(host, '.')
	switch {
	case i < 0:
		return host
	case i == len(host)-1:
		return host[:i]
	case host[i+1] == ':':
		// A dot right before a colon precedes the port (IPv6 never has ".:").
		return host[:i] + host[i+1:]
	}
	return host
}

// stripPortFromHost ports HeaderUtility::stripPortFromHost with any port: the
// part after the last ':' (outside "[...]") is removed when it is a number.
func stripPortFromHost(host string) string {
	i := strings.LastIndexByte(host, ':')
	if i < 0 {
		return host
	}
	if j := strings.LastIndexByte(host, ']'); j >= 0 && j > i {
		return host
	}
	if _, err := strconv.ParseUint(host[i+1:], 10, 32); err != nil {
		return host
	}
	return host[:i]
}

func stripPort(authority string) string {
	if strings.HasPrefix(authority, "[") {
		if i := strings.IndexByte(authority, ']'); i >= 0 {
			return authority[:i+1]
		}
		return authority
	}
	if i := strings.LastIndexByte(authority, ':'); i >= 0 && strings.Count(authority, ":") == 1 {
		return authority[:i]
	}
	return authority
}

// matchVirtualHost follows Envoy's domain precedence: exact, then the longest
// "*.suffix"/"*suffix" wildcard, then the longest "prefix*", then "*".
func matchVirtualHost(vhs []VirtualHost, host string) *VirtualHost {
	var (
		suffix, prefix, catchAll *VirtualHost
		suffixLen, prefixLen     = -1, -1
	)
	for i := range vhs {
		vh := &vhs[i]
		for _, d := range vh.Domains {
			d = strings.ToLower(d)
			switch {
			case d == "*":
				if catchAll == nil {
					catchAll = vh
				}
			case d == host:
				return vh
			case strings.HasPrefix(d, "*"):
				s := d[1:]
				if len(host) > len(s) && strings.HasSuffix(host, s) && len(s) > suffixLen {
					suffix, suffixLen = vh, len(s)
				}
			case strings.HasSuffix(d, "*"):
				s := d[:len(d)-1]
				if len(host) > len(s) && strings.HasPrefix(host, s) && len(s) > prefixLen {
					prefix, prefixLen = vh, len(s)
				}
			}
		}
	}
	switch {
	case suffix != nil:
		return suffix
	case prefix != nil:
		return prefix
	}
	return catchAll
}
