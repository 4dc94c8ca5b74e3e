package envoysim

import (
	"net/http"
	"net/textproto"
	"strconv"
)

// sendLocalReply ports Utility::prepareLocalReply/encodeLocalReply plus the
// HCM encodeHeaders step and the HTTP/1 codec's content-length rule (§2.2
// steps 9-13).
func (f *Filter) sendLocalReply(w http.ResponseWriter, st *stream, lr *localReply) {
	status := lr.status
	body := lr.body
	var h headerMap
	if lr.modify != nil {
		lr.modify(&h)
	}
	switch {
	case st.isGRPC:
		// Trailers-only gRPC response (§2.2 step 10).
		status = http.StatusOK
		h.set("content-type", "application/grpc")
		if !h.has("grpc-status") {
			h.set("grpc-status", strconv.Itoa(httpToGrpcStatus(lr.status)))
		}
		if body != "" && !st.isHead {
			h.set("grpc-message", percentEncode(body))
		}
		h.remove("content-length")
		body = ""
	case body != "":
		h.set("content-length", strconv.Itoa(len(body)))
		if !h.has("content-type") {
			h.set("content-type", "text/plain")
		}
	default:
		h.remove("content-length")
		h.remove("content-type")
	}
	f.encodeHeaders(&h)
	// HTTP/1 codec: a headers-only response gets "content-length: 0" unless it
	// answers HEAD or is 1xx/204/304. HTTP/2 sends none [inf].
	if st.http1 && body == "" && !h.has("content-length") && !st.isHead &&
		status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified {
		h.set("content-length", "0")
	}
	if status < 200 || status > 999 {
		// Envoy would send this code as is; net/http cannot (1xx is treated as
		// informational, others panic). Surface it instead of faking it.
		h.set("x-envoysim-unrepresentable-status", strconv.Itoa(status))
		status = http.StatusBadGateway
	}
	writeHeaders(w, h, lr.closeConn)
	w.WriteHeader(status)
	if body != "" && !st.isHead {
		_, _ = w.Write([]byte(body))
	}
}

// encodeHeaders is the HCM response step: strip hop-by-hop headers, add date
// when absent, apply server_header_transformation (§2.2 step 12).
func (f *Filter) encodeHeaders(h *headerMap) {
	for _, k := range []string{"connection", "upgrade", "transfer-encoding", "keep-alive", "proxy-connection"} {
		h.remove(k)
	}
	if !h.has("date") {
		h.set("date", f.cfg.Now().UTC().Format(http.TimeFormat))
	}
	switch f.cfg.ServerHeaderTransformation {
	case ServerOverwrite:
		h.set("server", f.cfg.ServerName)
	case ServerAppendIfAbsent:
		if !h.has("server") {
			h.set("server", f.cfg.ServerName)
		}
	}
}

// writeHeaders replaces w's header map with h. Keys are written in Go's
// canonical form (clients see the same names case-insensitively; Envoy sends
// lower case). net/http drops names that are not valid tokens and neutralises
// CR/LF in values; Envoy would put them on the wire as they are.
func writeHeaders(w http.ResponseWriter, h headerMap, closeConn bool) {
	dst := w.Header()
	for k := range dst {
		delete(dst, k)
	}
	for _, e := range h {
		k := textproto.CanonicalMIMEHeaderKey(e.key)
		dst[k] = append(dst[k], e.value)
	}
	// Stop net/http from inventing headers Envoy would not send.
	if _, ok := dst["Content-Type"]; !ok {
		dst["Content-Type"] = nil
	}
	if _, ok := dst["Date"]; !ok {
		dst["Date"] = nil
	}
	if closeConn {
		dst.Set("Connection", "close")
	}
}

// httpToGrpcStatus ports Grpc::Utility::httpToGrpcStatus.
func httpToGrpcStatus(code int) int {
	switch code {
	case 400:
		return 13 // INTERNAL
	case 401:
		return 16 // UNAUTHENTICATED
	case 403:
		return 7 // PERMISSION_DENIED
	case 404:
		return 12 // UNIMPLEMENTED
	case 429, 502, 503, 504:
		return 14 // UNAVAILABLE
	}
	return 2 // UNKNOWN
}

// percentEncode ports Http::Utility::PercentEncoding::encode(value, "%"):
// bytes below ' ', from '~' upwards (so '~' itself and all non-ASCII), and
// '%' become %XX with upper-case hex.
func percentEncode(s string) string {
	const hexUpper = "0123456789ABCDEF"
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < ' ' || c >= '~' || c == '%' {
			out = append(out, '%', hexUpper[c>>4], hexUpper[c&0xf])
			continue
		}
		out = append(out, c)
	}
	return string(out)
}
