package envoysim

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// LocalReplyError is returned by BuildCheckRequest when Envoy would answer
// the request itself before calling the authorization server.
type LocalReplyError struct {
	Status  int
	Details string
}

func (e *LocalReplyError) Error() string {
	return fmt.Sprintf("envoysim: local reply %d (%s)", e.Status, e.Details)
}

// ErrCheckSkipped is returned by BuildCheckRequest when the filter would not
// call the authorization server (no route, ExtAuthzPerRoute disabled, or
// FilterEnabled false).
var ErrCheckSkipped = errors.New("envoysim: ext_authz check skipped for this request")

// BuildCheckRequest returns exactly the CheckRequest the emulated Envoy would
// send for r under cfg (HCM mutations, routing and body buffering included).
// cfg.AuthzConn/Target/Upstream are not needed. When the body is buffered it
// is read from r.Body, and r.Body is replaced by a reader over the same bytes.
// Each call uses a fresh stream-id counter, so http.id is "1".
func BuildCheckRequest(r *http.Request, cfg Config) (*authv3.CheckRequest, error) {
	f, err := newFilter(cfg)
	if err != nil {
		return nil, err
	}
	return f.BuildCheckRequest(r)
}

// BuildCheckRequest is the method form of the package function; it shares the
// Filter's stream-id counter.
func (f *Filter) BuildCheckRequest(r *http.Request) (*authv3.CheckRequest, error) {
	st, lr := f.newStream(r)
	if lr != nil {
		return nil, &LocalReplyError{Status: lr.status, Details: lr.details}
	}
	if st.route == nil || st.route.Disabled {
		return nil, ErrCheckSkipped
	}
	if f.cfg.FilterEnabled != nil && !f.cfg.FilterEnabled(r) {
		return nil, ErrCheckSkipped
	}
	if lr := f.bufferBody(st); lr != nil {
		return nil, &LocalReplyError{Status: lr.status, Details: lr.details}
	}
	if st.bodyBuffered {
		r.Body = io.NopCloser(bytes.NewReader(st.body))
	}
	return f.checkRequest(st), nil
}

// bufferBody implements with_request_body (§1.1, ext_authz.cc decodeHeaders/
// decodeData). Buffering happens only when the request has a body (not
// end_stream at headers) and is not an upgrade. Without allow_partial_message
// a body above max_request_bytes is answered with 413 before any Check call;
// with it, the whole body is read here and the first max_request_bytes are
// sent (Envoy would stop buffering at the threshold; size reflects what was
// received).
func (f *Filter) bufferBody(st *stream) *localReply {
	bs := f.cfg.WithRequestBody
	if st.route != nil && st.route.WithRequestBody != nil {
		bs = st.route.WithRequestBody
	}
	r := st.r
	endStream := r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0
	if bs == nil || endStream || isUpgrade(st.headers) {
		return nil
	}
	st.bodySettings = bs
	var (
		data []byte
		err  error
	)
	if bs.AllowPartialMessage {
		data, err = io.ReadAll(r.Body)
	} else {
		data, err = io.ReadAll(io.LimitReader(r.Body, int64(bs.MaxRequestBytes)+1))
		if err == nil && len(data) > int(bs.MaxRequestBytes) {
			// Decoder buffer above its limit: requestDataTooLarge().
			return &localReply{status: http.StatusRequestEntityTooLarge, body: "Payload Too Large",
				details: "request_payload_too_large"}
		}
	}
	if err != nil {
		// Envoy would see a downstream reset; there is nobody to answer.
		return &localReply{status: http.StatusBadRequest, details: "downstream_remote_disconnect", closeConn: true}
	}
	st.body = data
	st.bodyBuffered = true
	return nil
}

// contextExtensions merges vhost <- route (the more specific wins).
func contextExtensions(st *stream) map[string]string {
	out := map[string]string{}
	if st.vhost != nil {
		maps.Copy(out, st.vhost.ContextExtensions)
	}
	if st.route != nil {
		maps.Copy(out, st.route.ContextExtensions)
	}
	return out
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

// checkRequest ports CheckRequestUtils::createHttpCheck for the gRPC service
// without encode_raw_headers / header matchers / TLS (§1.1, §1.2).
func (f *Filter) checkRequest(st *stream) *authv3.CheckRequest {
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
		Id:       strconv.FormatUint(st.id, 10),
		Method:   get(":method"),
		Headers:  hdrs,
		Path:     get(":path"),
		Host:     get(":authority"),
		Scheme:   get(":scheme"),
		Protocol: st.protocol,
	}
	if st.bodyBuffered {
		n := min(len(st.body), int(st.bodySettings.MaxRequestBytes))
		if st.bodySettings.PackAsBytes {
			hr.RawBody = bytes.Clone(st.body[:n])
		} else {
			hr.Body = sanitizeUTF8(string(st.body[:n]))
		}
		partial := "false"
		if n != len(st.body) {
			partial = "true"
		}
		hdrs[hdrPartialBody] = partial
		hr.Size = int64(len(st.body))
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
		ContextExtensions:    contextExtensions(st),
		MetadataContext:      &corev3.Metadata{},
		RouteMetadataContext: &corev3.Metadata{},
	}}
}
