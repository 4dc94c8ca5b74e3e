// Package checkreq builds, offline, the CheckRequest that Envoy's ext_authz
// HTTP filter (gRPC service) sends for an HTTP request, the way the shipped
// front proxy (envoy/envoy.yaml) is configured. `extauthz check` uses it to
// turn a curl-like request into the CheckRequest the sidecar would receive.
//
// Build runs what Envoy does before the filter calls the authorization
// server, in Envoy's order:
//
//  1. codec: headers with underscores (reject/drop), repeated
//     x-forwarded-for lines coalesced;
//  2. HCM: relative-path check, fragment / escaped-slash / normalize_path /
//     merge_slashes, host normalisation (strip_trailing_host_dot,
//     strip_any_host_port), hop-by-hop and internal-header removal,
//     x-forwarded-for / x-envoy-external-address / x-forwarded-proto /
//     :scheme / x-request-id;
//  3. ext_authz: CheckRequestUtils::createHttpCheck (headers joined with
//     ",", strings UTF-8 sanitised).
//
// When Envoy would answer by itself (400, 404, 307), Build returns a
// *LocalReplyError instead. internal/e2e's TestCheckRequestMatchesRealEnvoy
// compares the result with what real Envoy sends; checkreq_test.go checks
// that ShippedHCM is what envoy/envoy.yaml configures.
//
// Not modelled: routes and per-route settings (context_extensions come from
// the caller), with_request_body, TLS peer attributes, encode_raw_headers,
// allowed/disallowed headers, metadata. http.id is "1" (Envoy: the stream
// id). Every string of the CheckRequest is UTF-8 sanitised ('!'), not only
// the headers map: Envoy would send raw bytes in path/host, which a Go
// authorization server cannot unmarshal.
package checkreq

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// HCM is the HTTP connection manager behaviour that decides what a
// CheckRequest carries. Zero values are Envoy's defaults unless stated
// otherwise.
type HCM struct {
	UseRemoteAddress          bool // Envoy default false; the shipped config uses true
	XFFNumTrustedHops         int
	GenerateRequestID         bool // Envoy's default is true; the Go zero value is false
	PreserveExternalRequestID bool
	NormalizePath             bool
	MergeSlashes              bool
	// StripAnyHostPort and StripTrailingHostDot rewrite :authority
	// (ConnectionManagerUtility::maybeNormalizeHost).
	StripAnyHostPort             bool
	StripTrailingHostDot         bool
	PathWithEscapedSlashesAction EscapedSlashesAction
	HeadersWithUnderscoresAction UnderscoresAction

	// LocalAddress is Envoy's local_info address, appended to
	// x-forwarded-for instead of a loopback peer. Default "10.0.0.1".
	LocalAddress string
	// DestinationAddress is CheckRequest destination.address ("host:port").
	// Default: the request's http.LocalAddrContextKey, else "127.0.0.1:10000".
	DestinationAddress string
	// Now stamps request.time. Default time.Now.
	Now func() time.Time
}

// ShippedHCM is the HCM of envoy/envoy.yaml (a test keeps them in step).
func ShippedHCM() HCM {
	return HCM{UseRemoteAddress: true, GenerateRequestID: true, NormalizePath: true, MergeSlashes: true,
		PathWithEscapedSlashesAction: RejectRequest, HeadersWithUnderscoresAction: RejectUnderscores,
		StripAnyHostPort: true, StripTrailingHostDot: true}
}

// LocalReplyError is returned by Build when Envoy would answer the request
// itself before calling the authorization server.
type LocalReplyError struct {
	Status  int
	Details string // Envoy's response code details, e.g. "path_normalization_failed"
}

func (e *LocalReplyError) Error() string {
	return fmt.Sprintf("checkreq: Envoy answers %d itself (%s)", e.Status, e.Details)
}

// Build returns the CheckRequest Envoy configured with hcm would send for r.
// The request body is not read.
func Build(r *http.Request, hcm HCM) (*authv3.CheckRequest, error) {
	if hcm.XFFNumTrustedHops < 0 {
		return nil, fmt.Errorf("checkreq: XFFNumTrustedHops %d < 0", hcm.XFFNumTrustedHops)
	}
	if hcm.LocalAddress == "" {
		hcm.LocalAddress = "10.0.0.1"
	}
	if hcm.Now == nil {
		hcm.Now = time.Now
	}
	st, lr := newStream(r, &hcm)
	if lr != nil {
		return nil, lr
	}
	return checkRequest(st), nil
}

// stream is one request as the filter chain sees it.
type stream struct {
	r        *http.Request
	start    time.Time
	protocol string // "HTTP/1.1", "HTTP/2", ...
	tls      bool
	isGRPC   bool

	headers headerMap // request headers incl. pseudo-headers, lower-case keys

	peerHost  string
	peerPort  uint32
	peerAddr  netip.Addr // invalid when RemoteAddr is not an IP
	localHost string
	localPort uint32
}

// newStream runs the codec and HCM stages. A non-nil *LocalReplyError means
// Envoy answers before any filter runs.
func newStream(r *http.Request, hcm *HCM) (*stream, *LocalReplyError) {
	st := &stream{
		r:        r,
		start:    hcm.Now(),
		protocol: protocolString(r),
		tls:      r.TLS != nil,
	}
	st.peerHost, st.peerPort = splitHostPort(r.RemoteAddr)
	if a, err := netip.ParseAddr(st.peerHost); err == nil {
		st.peerAddr = a
	}
	local := hcm.DestinationAddress
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
			switch hcm.HeadersWithUnderscoresAction {
			case RejectUnderscores:
				// http1 codec: sendProtocolError -> 400, connection closed.
				return st, &LocalReplyError{Status: http.StatusBadRequest, Details: "http1.unexpected_underscore"}
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
		return st, &LocalReplyError{Status: http.StatusNotFound, Details: "absolute_path"}
	}
	np, action := maybeNormalizePath(path, hcm)
	switch {
	case action == normReject || (action == normRedirect && st.isGRPC):
		return st, &LocalReplyError{Status: http.StatusBadRequest, Details: "path_normalization_failed"}
	case action == normRedirect:
		// 307 with location: np.
		return st, &LocalReplyError{Status: http.StatusTemporaryRedirect, Details: "path_normalization_failed"}
	}
	st.headers.set(":path", np)
	maybeNormalizeHost(st, hcm)

	mutateRequestHeaders(st, hcm)
	return st, nil
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// checkRequest ports CheckRequestUtils::createHttpCheck for the gRPC service
// without body, encode_raw_headers, header matchers or TLS.
func checkRequest(st *stream) *authv3.CheckRequest {
	hdrs := make(map[string]string, len(st.headers)+1)
	for _, e := range st.headers {
		// A client-supplied x-envoy-auth-partial-body never reaches the check.
		if e.key == hdrPartialBody {
			continue
		}
		v := sanitizeUTF8(e.value)
		if old, ok := hdrs[e.key]; ok {
			hdrs[e.key] = old + "," + v
		} else {
			hdrs[e.key] = v
		}
	}
	get := func(k string) string {
		v, _ := st.headers.first(k)
		return sanitizeUTF8(v)
	}
	hr := &authv3.AttributeContext_HttpRequest{
		Id:       "1",
		Method:   get(":method"),
		Headers:  hdrs,
		Path:     get(":path"),
		Host:     get(":authority"),
		Scheme:   get(":scheme"),
		Protocol: st.protocol,
	}
	source := &authv3.AttributeContext_Peer{Address: socketAddress(st.peerHost, st.peerPort)}
	if svc, ok := st.headers.first("x-envoy-downstream-service-cluster"); ok {
		source.Service = sanitizeUTF8(svc)
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      source,
		Destination: &authv3.AttributeContext_Peer{Address: socketAddress(st.localHost, st.localPort)},
		Request: &authv3.AttributeContext_Request{
			Time: timestamppb.New(st.start),
			Http: hr,
		},
		ContextExtensions:    map[string]string{},
		MetadataContext:      &corev3.Metadata{},
		RouteMetadataContext: &corev3.Metadata{},
	}}
}
