package checkreq

import (
	"crypto/rand"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// Header names used by HCM and ext_authz.
const (
	hdrXFF             = "x-forwarded-for"
	hdrXFP             = "x-forwarded-proto"
	hdrExternalAddress = "x-envoy-external-address"
	hdrRequestID       = "x-request-id"
	hdrPartialBody     = "x-envoy-auth-partial-body"
)

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
// for the options HCM models.
func mutateRequestHeaders(st *stream, hcm *HCM) {
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
	if hcm.UseRemoteAddress {
		if n := hcm.XFFNumTrustedHops; n > 0 {
			if a, ok := lastAddressFromXFF(*h, n-1); ok {
				final = a
			}
		}
		if !final.IsValid() {
			final = st.peerAddr
		}
		// Append the peer to XFF, or Envoy's own address for a loopback peer.
		if st.peerAddr.IsValid() {
			appendAddr := st.peerAddr.String()
			if st.peerAddr.IsLoopback() {
				appendAddr = hcm.LocalAddress
			}
			h.appendValue(hdrXFF, appendAddr)
		}
		if hcm.XFFNumTrustedHops == 0 || !h.has(hdrXFP) {
			h.set(hdrXFP, scheme)
		}
	} else {
		// Original IP detection (xff extension) with xff_num_trusted_hops.
		if a, ok := lastAddressFromXFF(*h, hcm.XFFNumTrustedHops); ok {
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

	// Since Envoy 1.33 no address is internal by default, so a request
	// is "edge" exactly when use_remote_address is on.
	edge := hcm.UseRemoteAddress
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

	// forward_client_cert_details defaults to SANITIZE; checkreq models no
	// mTLS, so a client-supplied XFCC is always removed.
	h.remove("x-forwarded-client-cert")

	if hcm.GenerateRequestID {
		// UUIDRequestIDExtension::set: keep an existing id unless this is an
		// edge request and preserve_external_request_id is off.
		if !h.has(hdrRequestID) || (edge && !hcm.PreserveExternalRequestID) {
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

// maybeNormalizeHost ports ConnectionManagerUtility::maybeNormalizeHost:
// trailing host dot first, then the port (strip_any_host_port).
func maybeNormalizeHost(st *stream, hcm *HCM) {
	if !hcm.StripTrailingHostDot && !hcm.StripAnyHostPort {
		return
	}
	host, ok := st.headers.first(":authority")
	if !ok {
		return
	}
	if hcm.StripTrailingHostDot {
		host = stripTrailingHostDot(host)
	}
	if hcm.StripAnyHostPort {
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
