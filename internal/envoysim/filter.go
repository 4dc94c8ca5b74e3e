package envoysim

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// dynamicMetadataNamespace is where Envoy stores CheckResponse.dynamic_metadata (§2.6).
const dynamicMetadataNamespace = "envoy.filters.http.ext_authz"

// Response code details Envoy records for ext_authz local replies.
const (
	detailsDenied  = "ext_authz_denied"
	detailsError   = "ext_authz_error"
	detailsInvalid = "ext_authz_invalid"
)

// responseMutations are the OK response's response_headers_to_add, grouped
// the way the pre-2026 gRPC client groups them (§2.3).
type responseMutations struct {
	add, set, addIfAbsent, overwriteIfExists headerMap
}

// ServeHTTP handles one downstream request like Envoy's HCM + ext_authz +
// router would.
func (f *Filter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st, lr := f.newStream(r)
	if lr != nil {
		f.record(Decision{Verdict: VerdictLocalReply, Status: lr.status, Details: lr.details})
		f.sendLocalReply(w, st, lr)
		return
	}
	d := Decision{TrustedClientAddress: st.trusted}

	// ext_authz decodeHeaders: no route or a disabled route skips the check;
	// the router then answers 404 for the former.
	if st.route == nil {
		d.Verdict, d.Status, d.Details = VerdictSkipped, http.StatusNotFound, "route_not_found"
		f.record(d)
		f.sendLocalReply(w, st, &localReply{status: http.StatusNotFound, details: "route_not_found"})
		return
	}
	if st.route.Disabled {
		d.Verdict = VerdictSkipped
		f.record(d)
		f.forward(w, st, nil)
		return
	}
	if f.cfg.FilterEnabled != nil && !f.cfg.FilterEnabled(r) {
		f.disabled.Add(1)
		d.Verdict = VerdictDisabled
		if f.cfg.DenyAtDisable {
			d.Status, d.Details = f.cfg.StatusOnError, detailsError
			f.record(d)
			f.sendLocalReply(w, st, &localReply{status: f.cfg.StatusOnError, details: detailsError})
			return
		}
		f.record(d)
		f.forward(w, st, nil)
		return
	}
	if lr := f.bufferBody(st); lr != nil {
		d.Verdict, d.Status, d.Details = VerdictLocalReply, lr.status, lr.details
		f.record(d)
		f.sendLocalReply(w, st, lr)
		return
	}

	req := f.checkRequest(st)
	d.CheckRequest = req
	ctx, cancel := context.WithTimeout(r.Context(), f.cfg.Timeout)
	start := time.Now()
	resp, err := f.client.Check(ctx, req)
	elapsed := time.Since(start)
	cancel()
	d.CheckResponse, d.Err = resp, err
	f.onComplete(w, st, &d, resp, err, elapsed)
}

// onComplete classifies the outcome (§2.1) and acts on it.
func (f *Filter) onComplete(w http.ResponseWriter, st *stream, d *Decision, resp *authv3.CheckResponse, err error, elapsed time.Duration) {
	if err != nil {
		f.onError(w, st, d, nil)
		return
	}
	okStatus := resp.GetStatus().GetCode() == 0
	// OkHttpResponse.dynamic_metadata (deprecated) overrides the outer field.
	dm := resp.GetDynamicMetadata()
	if okm := resp.GetOkResponse().GetDynamicMetadata(); okm != nil {
		dm = okm
	}
	if len(dm.GetFields()) > 0 {
		dm = proto.Clone(dm).(*structpb.Struct)
		if okStatus {
			dm.Fields["ext_authz_duration"] = structpb.NewNumberValue(float64(elapsed.Milliseconds()))
		}
		d.DynamicMetadata = dm
	}
	switch {
	case okStatus:
		f.onOK(w, st, d, resp.GetOkResponse())
	case resp.GetErrorResponse() != nil:
		// error_response (API >= Envoy 1.37): an Error that carries its own reply.
		f.onError(w, st, d, resp.GetErrorResponse())
	default:
		f.onDenied(w, st, d, resp.GetDeniedResponse())
	}
}

// reject is Filter::rejectResponse: 500, empty body, stat invalid.
func (f *Filter) reject(w http.ResponseWriter, st *stream, d *Decision) {
	f.invalid.Add(1)
	d.Verdict, d.Status, d.Details = VerdictInvalid, http.StatusInternalServerError, detailsInvalid
	f.record(*d)
	f.sendLocalReply(w, st, &localReply{status: http.StatusInternalServerError, details: detailsInvalid})
}

// localHeaders splits denied/error headers: append unset/false become
// headers_to_set; append:true entries are dropped (§2.2 step 7).
func localHeaders(opts []*corev3.HeaderValueOption) headerMap {
	var out headerMap
	for _, o := range opts {
		if o.GetAppend().GetValue() {
			continue
		}
		out = append(out, header{o.GetHeader().GetKey(), o.GetHeader().GetValue()})
	}
	return out
}

func validHeaders(h headerMap) bool {
	for _, e := range h {
		if !headerNameIsValid(e.key) || !headerValueIsValid(e.value) {
			return false
		}
	}
	return true
}

// setLocalHeaders is the denied branch's modify_headers: remove every key,
// then addCopy every entry, so repeated keys survive (§2.2 step 7).
func setLocalHeaders(sets headerMap) func(*headerMap) {
	return func(h *headerMap) {
		for _, e := range sets {
			h.remove(lower(e.key))
		}
		for _, e := range sets {
			h.add(lower(e.key), e.value)
		}
	}
}

func (f *Filter) truncateBody(body string) string {
	if n := f.cfg.MaxDeniedResponseBodyBytes; n > 0 && len(body) > n {
		return body[:n]
	}
	return body
}

// onDenied builds the denied local reply (§2.2).
func (f *Filter) onDenied(w http.ResponseWriter, st *stream, d *Decision, dr *authv3.DeniedHttpResponse) {
	f.denied.Add(1)
	status := http.StatusForbidden
	if c := dr.GetStatus().GetCode(); c > 0 {
		status = int(c)
	}
	sets := localHeaders(dr.GetHeaders())
	if f.cfg.ValidateMutations && !validHeaders(sets) {
		f.reject(w, st, d)
		return
	}
	d.Verdict, d.Status, d.Details = VerdictDenied, status, detailsDenied
	f.record(*d)
	f.sendLocalReply(w, st, &localReply{
		status:  status,
		body:    f.truncateBody(dr.GetBody()),
		modify:  setLocalHeaders(sets),
		details: detailsDenied,
	})
}

// onError handles RPC failures and error_response (§2.4). Plain failures get
// status_on_error with an empty body and no custom headers; error_response
// (>= 1.37) brings its own status/headers/body [inf: handled like denied].
func (f *Filter) onError(w http.ResponseWriter, st *stream, d *Decision, er *authv3.DeniedHttpResponse) {
	f.errs.Add(1)
	d.Verdict = VerdictError
	if f.cfg.FailureModeAllow {
		f.fma.Add(1)
		d.FailureModeAllowed = true
		if f.cfg.FailureModeAllowHeaderAdd {
			// addReferenceKey: appended, a client-sent value is not replaced.
			st.headers.add(hdrFailureAllowed, "true")
		}
		f.record(*d)
		f.forward(w, st, nil)
		return
	}
	lr := &localReply{status: f.cfg.StatusOnError, details: detailsError}
	if er != nil {
		if c := er.GetStatus().GetCode(); c > 0 {
			lr.status = int(c)
		}
		sets := localHeaders(er.GetHeaders())
		if f.cfg.ValidateMutations && !validHeaders(sets) {
			f.reject(w, st, d)
			return
		}
		lr.body = f.truncateBody(er.GetBody())
		lr.modify = setLocalHeaders(sets)
	}
	d.Status, d.Details = lr.status, lr.details
	f.record(*d)
	f.sendLocalReply(w, st, lr)
}

// requestKey maps a mutation key onto the request header map: Envoy's request
// map stores a legacy "host" key as :authority.
func requestKey(k string) string {
	k = lower(k)
	if k == "host" {
		return ":authority"
	}
	return k
}

// onOK applies the OK mutations in filter order (§2.3) and forwards.
func (f *Filter) onOK(w http.ResponseWriter, st *stream, d *Decision, ok *authv3.OkHttpResponse) {
	validate := f.cfg.ValidateMutations
	var sets, appends headerMap
	for _, o := range ok.GetHeaders() {
		e := header{o.GetHeader().GetKey(), o.GetHeader().GetValue()}
		if o.GetAppend().GetValue() {
			appends = append(appends, e)
		} else {
			sets = append(sets, e)
		}
	}
	var rm responseMutations
	sawInvalidAction := false
	for _, o := range ok.GetResponseHeadersToAdd() {
		e := header{lower(o.GetHeader().GetKey()), o.GetHeader().GetValue()}
		if o.GetAppend() != nil {
			if o.GetAppend().GetValue() {
				rm.add = append(rm.add, e)
			} else {
				rm.set = append(rm.set, e)
			}
			continue
		}
		switch o.GetAppendAction() {
		case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
			rm.add = append(rm.add, e)
		case corev3.HeaderValueOption_ADD_IF_ABSENT:
			rm.addIfAbsent = append(rm.addIfAbsent, e)
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
			rm.set = append(rm.set, e)
		case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
			rm.overwriteIfExists = append(rm.overwriteIfExists, e)
		default:
			sawInvalidAction = true
		}
	}
	if sawInvalidAction && validate {
		f.reject(w, st, d)
		return
	}

	h := &st.headers
	for _, e := range sets {
		if validate && (!headerNameIsValid(e.key) || !headerValueIsValid(e.value)) {
			f.reject(w, st, d)
			return
		}
		h.set(requestKey(e.key), e.value)
	}
	for _, e := range appends {
		if validate && (!headerNameIsValid(e.key) || !headerValueIsValid(e.value)) {
			f.reject(w, st, d)
			return
		}
		// append:true only joins onto an existing header (known Envoy TODO).
		if k := requestKey(e.key); h.has(k) {
			h.appendValue(k, e.value)
		}
	}
	for _, k := range ok.GetHeadersToRemove() {
		if validate && !headerNameIsValid(k) {
			continue
		}
		// HeaderUtility::isRemovableHeader: no ":"-headers, no host.
		if strings.HasPrefix(k, ":") || strings.EqualFold(k, "host") {
			continue
		}
		h.remove(lower(k))
	}
	if validate {
		for _, g := range []headerMap{rm.add, rm.set, rm.addIfAbsent, rm.overwriteIfExists} {
			if !validHeaders(g) {
				f.reject(w, st, d)
				return
			}
		}
	}

	if len(ok.GetQueryParametersToSet()) > 0 || len(ok.GetQueryParametersToRemove()) > 0 {
		path, _ := h.first(":path")
		qp := parseQueryParams(path)
		for _, p := range ok.GetQueryParametersToSet() {
			if validate && (!queryParameterIsURLEncoded(p.GetKey()) || !queryParameterIsURLEncoded(p.GetValue())) {
				f.reject(w, st, d)
				return
			}
			qp.overwrite(p.GetKey(), p.GetValue())
		}
		for _, k := range ok.GetQueryParametersToRemove() {
			qp.remove(k)
		}
		h.set(":path", qp.replaceQueryString(path))
	}

	if len(*h) > f.cfg.MaxRequestHeadersCount || h.byteSize() > f.cfg.MaxRequestHeadersKB*1024 {
		f.reject(w, st, d)
		return
	}
	f.ok.Add(1)
	d.Verdict = VerdictOK
	f.record(*d)
	f.forward(w, st, &rm)
}

// queryParams is Http::Utility::QueryParamsMulti: a key-sorted multimap whose
// values keep their order; nothing is decoded [inf: btree_map ordering].
type queryParams map[string][]string

func parseQueryParams(path string) queryParams {
	qp := queryParams{}
	i := strings.IndexByte(path, '?')
	if i < 0 {
		return qp
	}
	data := path[i+1:]
	for start := 0; start < len(data); {
		end := strings.IndexByte(data[start:], '&')
		if end < 0 {
			end = len(data)
		} else {
			end += start
		}
		param := data[start:end]
		if k, v, ok := strings.Cut(param, "="); ok {
			qp[k] = append(qp[k], v)
		} else {
			qp[param] = append(qp[param], "")
		}
		start = end + 1
	}
	return qp
}

func (qp queryParams) overwrite(k, v string) { qp[k] = []string{v} }
func (qp queryParams) remove(k string)       { delete(qp, k) }

func (qp queryParams) replaceQueryString(path string) string {
	p, _ := splitQuery(path)
	if len(qp) == 0 {
		return p
	}
	keys := slices.Sorted(func(yield func(string) bool) {
		for k := range qp {
			if !yield(k) {
				return
			}
		}
	})
	var b strings.Builder
	b.WriteString(p)
	delim := byte('?')
	for _, k := range keys {
		for _, v := range qp[k] {
			b.WriteByte(delim)
			b.WriteString(k)
			b.WriteByte('=')
			b.WriteString(v)
			delim = '&'
		}
	}
	return b.String()
}

// queryParameterIsURLEncoded follows PercentEncoding::queryParameterIsUrlEncoded:
// only ALPHA, DIGIT, '*', '-', '.', '_' and '%'-escapes may appear.
func queryParameterIsURLEncoded(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9',
			c == '*', c == '-', c == '.', c == '_':
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			i += 2
		default:
			return false
		}
	}
	return true
}

// forward sends the request to the upstream (router) and relays the response
// through ext_authz encodeHeaders and HCM (§2.3 response_headers_to_add).
func (f *Filter) forward(w http.ResponseWriter, st *stream, rm *responseMutations) {
	h := st.headers.clone()
	if !f.cfg.SuppressEnvoyHeaders {
		// Router: default route timeout 15s.
		h.set("x-envoy-expected-rq-timeout-ms", "15000")
	}
	r := st.r
	out := r.Clone(r.Context())
	out.Method, _ = h.first(":method")
	out.Host, _ = h.first(":authority")
	path, _ := h.first(":path")
	out.RequestURI = path
	if u, err := url.ParseRequestURI(path); err == nil {
		out.URL = u
	} else {
		out.URL = &url.URL{Path: path}
	}
	out.Header = h.toHTTP()
	out.RemoteAddr = f.cfg.LocalAddress + ":0"
	if st.bodyBuffered {
		out.Body = io.NopCloser(bytes.NewReader(st.body))
		out.ContentLength = int64(len(st.body))
		out.GetBody = nil
	}
	uw := &upstreamWriter{f: f, st: st, w: w, rm: rm, hdr: http.Header{}, start: time.Now()}
	f.cfg.Upstream.ServeHTTP(uw, out)
	uw.finish()
}

// upstreamWriter is the ResponseWriter given to the upstream. On the first
// WriteHeader it applies router, ext_authz and HCM response processing.
type upstreamWriter struct {
	f       *Filter
	st      *stream
	w       http.ResponseWriter
	rm      *responseMutations
	hdr     http.Header
	start   time.Time
	wrote   bool
	trailer []string
}

func (u *upstreamWriter) Header() http.Header { return u.hdr }

func (u *upstreamWriter) WriteHeader(code int) {
	if u.wrote {
		return
	}
	if code >= 100 && code < 200 {
		// 1xx (e.g. 103 Early Hints) passes through with its headers.
		writeHeaders(u.w, fromHTTP(u.hdr), false)
		u.w.WriteHeader(code)
		return
	}
	u.wrote = true
	var hm headerMap
	for _, e := range fromHTTP(u.hdr) {
		if strings.HasPrefix(e.key, lower(http.TrailerPrefix)) {
			continue
		}
		hm = append(hm, e)
	}
	for _, t := range u.hdr.Values("Trailer") {
		for name := range strings.SplitSeq(t, ",") {
			if name = strings.TrimSpace(name); name != "" {
				u.trailer = append(u.trailer, name)
			}
		}
	}
	if !u.f.cfg.SuppressEnvoyHeaders {
		hm.set("x-envoy-upstream-service-time", strconv.FormatInt(time.Since(u.start).Milliseconds(), 10))
	}
	if rm := u.rm; rm != nil {
		// ext_authz encodeHeaders: add, set, add-if-absent, overwrite-if-exists.
		for _, e := range rm.add {
			hm.add(e.key, e.value)
		}
		for _, e := range rm.set {
			hm.set(e.key, e.value)
		}
		for _, e := range rm.addIfAbsent {
			if !hm.has(e.key) {
				hm.add(e.key, e.value)
			}
		}
		for _, e := range rm.overwriteIfExists {
			if hm.has(e.key) {
				hm.set(e.key, e.value)
			}
		}
	}
	u.f.encodeHeaders(&hm)
	writeHeaders(u.w, hm, false)
	u.w.WriteHeader(code)
}

func (u *upstreamWriter) Write(p []byte) (int, error) {
	if !u.wrote {
		u.WriteHeader(http.StatusOK)
	}
	return u.w.Write(p)
}

// Flush lets streaming upstreams flush through the harness.
func (u *upstreamWriter) Flush() {
	if !u.wrote {
		u.WriteHeader(http.StatusOK)
	}
	if fl, ok := u.w.(http.Flusher); ok {
		fl.Flush()
	}
}

func (u *upstreamWriter) finish() {
	if !u.wrote {
		u.WriteHeader(http.StatusOK)
	}
	dst := u.w.Header()
	for k, vs := range u.hdr {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			dst[k] = vs
		}
	}
	for _, t := range u.trailer {
		if vs := u.hdr.Values(t); len(vs) > 0 {
			dst[http.CanonicalHeaderKey(t)] = vs
		}
	}
}
