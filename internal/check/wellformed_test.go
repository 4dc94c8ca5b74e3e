package check

import (
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// A request no conforming client or Envoy sends is denied request_invalid
// (400 in the API's envelope), however good its credential: an HTTP method
// that is not a token, :method or :path disagreeing with the request's
// method and path, header names that are not lower-case tokens or request
// pseudo-headers, values with NUL, CR or LF; in the headers map and in
// Envoy's header_map (encode_raw_headers) alike. The same request made
// well is allowed.
func TestMalformedRequestsAreDenied(t *testing.T) {
	s := newServer(t, demoEngine(t))
	good := map[string]string{"x-api-key": demoKey, "x-tenant-id": "42"}
	with := func(k, v string) map[string]string {
		h := map[string]string{k: v}
		for gk, gv := range good {
			h[gk] = gv
		}
		return h
	}
	ok := req("GET", "/v1/orders", good)
	if got, _, _ := decide(t, s, ok); got != "ok" {
		t.Fatalf("the well-formed request: %s", got)
	}
	if got, _, _ := decide(t, s, headerMap(ok)); got != "ok" {
		t.Fatalf("the well-formed request as header_map: %s", got)
	}
	cases := map[string]*authv3.CheckRequest{
		"empty method":             req("", "/v1/orders", good),
		"method with a NUL":        req("GET\x00", "/v1/orders", good),
		"method with a space":      req("G ET", "/v1/orders", good),
		":method differs":          req("GET", "/v1/orders", with(":method", "DELETE")),
		":path differs":            req("GET", "/healthz", with(":path", "/v1/orders")),
		"value with CR/LF":         req("GET", "/v1/orders", with("x-note", "a\r\nx-injected: 1")),
		"value with a NUL":         req("GET", "/v1/orders", with("idempotency-key", "\x00")),
		"name with a space":        req("GET", "/v1/orders", with("x note", "1")),
		"empty name":               req("GET", "/v1/orders", with("", "1")),
		"unknown pseudo-header":    req("GET", "/v1/orders", with(":foo", "1")),
		"upper-case name":          req("GET", "/v1/orders", with("X-Tenant-Id", "43")),
		"name with a colon inside": req("GET", "/v1/orders", with("x-a:b", "1")),
		// authorized as a read, possibly executed as a delete
		"method override":        req("GET", "/v1/orders", with("x-http-method-override", "DELETE")),
		"x-http-method":          req("GET", "/v1/orders", with("x-http-method", "delete")),
		"x-method-override":      req("GET", "/v1/orders", with("x-method-override", "PUT")),
		"_method in the query":   req("GET", "/v1/orders?x=1&_method=DELETE", good),
		"_method escaped":        req("GET", "/v1/orders?%5Fmethod=DELETE", good),
		"_method partly escaped": req("GET", "/v1/orders?_%6Dethod=DELETE", good),
		"_method after ;":        req("GET", "/v1/orders?x=1;_method=DELETE", good),
		"_method value escaped":  req("GET", "/v1/orders?_method=%44ELETE", good),
		// PHP makes each of these names $_GET['_method'] (Laravel, Symfony)
		"PHP: .method":                 req("POST", "/v1/orders?.method=DELETE", good),
		"PHP: %2Emethod":               req("POST", "/v1/orders?%2Emethod=DELETE", good),
		"PHP: +_method":                req("POST", "/v1/orders?+_method=DELETE", good),
		"PHP: %20_method":              req("POST", "/v1/orders?%20_method=DELETE", good),
		"PHP: +.method":                req("POST", "/v1/orders?+.method=DELETE", good),
		"_method[]":                    req("POST", "/v1/orders?_method[]=DELETE", good),
		"_METHOD":                      req("POST", "/v1/orders?_METHOD=DELETE", good),
		"PHP: [method":                 req("POST", "/v1/orders?[method=DELETE", good),
		"PHP: name cut at NUL":         req("POST", "/v1/orders?_method%00x=DELETE", good),
		"PHP: bad escape kept":         req("POST", "/v1/orders?_method%00%zz=DELETE", good),
		"PHP: %zz before":              req("POST", "/v1/orders?%zz=1&_method=DELETE", good),
		"_method[a]":                   req("POST", "/v1/orders?_method[a]=DELETE", good),
		"x-original-url with userinfo": req("GET", "/v1/orders", with("x-original-url", "https://u@api.example.com/v1/orders")),
		"x-original-url with fragment": req("GET", "/v1/orders", with("x-original-url", "/v1/orders#/v1/admin")),
		"x-original-url":               req("GET", "/healthz", with("x-original-url", "/v1/admin/users")),
		"x-rewrite-url":                req("GET", "/healthz", with("x-rewrite-url", "/v1/admin/users")),
		"x-original-url as URL":        req("GET", "/healthz", with("x-original-url", "https://api.example.com/v1/admin")),
	}
	for name, r := range cases {
		for _, form := range []struct {
			name string
			r    *authv3.CheckRequest
		}{{"headers", r}, {"header_map", headerMap(r)}} {
			if form.name == "header_map" && name == "upper-case name" {
				continue // header_map names are lower-cased as Envoy does (rawHeaders)
			}
			got, status, _ := decide(t, s, form.r)
			if got != "request_invalid" || status != 400 {
				t.Errorf("%s (%s): %s %d, want request_invalid 400", name, form.name, got, status)
			}
		}
	}
	// Pseudo-headers and ordinary tokens are fine; so is a value with a tab.
	if got, _, _ := decide(t, s, req("GET", "/v1/orders", with(":protocol", "websocket"))); got != "ok" {
		t.Errorf(":protocol: %s", got)
	}
	if got, _, _ := decide(t, s, req("GET", "/v1/orders", with("x-a.b_c~1!", "a\tb"))); got != "ok" {
		t.Errorf("token name, tab in value: %s", got)
	}
	if got, _, _ := decide(t, s, req("GET", "/v1/orders", with("x-http-method-override", "get"))); got != "ok" {
		t.Errorf("a method override naming the method itself: %s", got)
	}
	if got, _, _ := decide(t, s, req("GET", "/v1/orders?_method=get&page=2;x_method=DELETE&method=DELETE&_methods=PUT&_method_=PUT&_method[=PUT&%zzmethod=PUT", good)); got != "ok" {
		t.Errorf("_method naming the method itself, and other parameters: %s", got)
	}
	for _, v := range []string{"/v1/orders", "https://api.example.com/v1/orders"} {
		if got, _, _ := decide(t, s, req("GET", "/v1/orders", with("x-original-url", v))); got != "ok" {
			t.Errorf("x-original-url %s naming the path itself: %s", v, got)
		}
	}
}

// headerMap is r with its headers sent as Envoy's header_map
// (encode_raw_headers: true), values as raw bytes.
func headerMap(r *authv3.CheckRequest) *authv3.CheckRequest {
	h := r.GetAttributes().GetRequest().GetHttp()
	hm := &corev3.HeaderMap{}
	for k, v := range h.GetHeaders() {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: k, RawValue: []byte(v)})
	}
	out := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Source: r.GetAttributes().GetSource(), Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
		Id: h.GetId(), Method: h.GetMethod(), Path: h.GetPath(), Host: h.GetHost(), Scheme: h.GetScheme(), Protocol: h.GetProtocol(), HeaderMap: hm,
	}}}}
	return out
}
