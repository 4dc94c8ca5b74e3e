// Package envoysim is an in-process stand-in for an Envoy listener running the
// HTTP connection manager (HCM), the ext_authz HTTP filter (gRPC service) and
// the router, in front of an upstream http.Handler.
//
// It no longer stands in for Envoy in tests or the demo: those run the real
// Envoy binary (internal/envoytest, make envoy). What remains is its use as
// the offline CheckRequest builder of `extauthz check` (BuildCheckRequest
// with ShippedHCM), which internal/e2e's TestEnvoysimMatchesRealEnvoy
// compares with what real Envoy sends. The behaviour follows Envoy's
// documented ext_authz semantics (docs/envoy.md); the § numbers in comments
// refer to the sections of the reference notes it was written from. Where
// net/http cannot express what Envoy puts on the wire, the difference is
// documented at the place it happens.
//
// Order of work for one request (as in Envoy):
//
//  1. codec: headers with underscores (reject/drop)
//  2. HCM: relative-path check, fragment/escaped-slash/normalize_path/merge_slashes,
//     host normalisation (strip_trailing_host_dot, strip_any_host_port),
//     hop-by-hop removal, XFF / x-envoy-external-address / x-forwarded-proto /
//     :scheme / x-request-id, internal-header cleaning (§1.2 rule 6, §4)
//  3. route selection (vhost by :authority, then path/prefix and header
//     matchers such as ":method")
//  4. ext_authz: per-route disable, body buffering (§1.1), Check call, verdict
//     (§2.1), denied local reply (§2.2), OK mutations (§2.3), errors (§2.4)
//  5. router: forwards to Config.Upstream; the response gets ext_authz
//     response_headers_to_add and HCM's server/date treatment.
//
// Known differences from a real Envoy (all deliberate or forced by net/http):
//
//   - The front is a net/http server, so whatever it refuses never reaches
//     the harness (e.g. "%zz" in the request target, non-token header names),
//     "OPTIONS *" needs http.Server.DisableGeneralOptionsHandler, and response
//     header names that are not tokens are dropped by net/http instead of
//     being sent (only matters with ValidateMutations off).
//   - Response header names are written in Go's canonical case; Envoy sends
//     lower case. Clients compare case-insensitively.
//   - CheckRequest strings are UTF-8 sanitised ('!') everywhere, not only in
//     the headers map: Envoy would send raw bytes in path/host, which a Go
//     authz server cannot unmarshal.
//   - allow_partial_message reads the whole body before the check (Envoy
//     stops buffering at max_request_bytes); body/partial header/size follow
//     Envoy's rules for a body that arrived in one piece.
//   - error_response is handled as in Envoy >= 1.37 (an Error with its own
//     reply); the stable gRPC client would treat it as a bare 403 denial.
//   - A denied status net/http cannot send (< 200 or > 999) becomes 502 with
//     x-envoysim-unrepresentable-status: <code>.
//   - http.id is a per-Filter counter (Envoy: a random uint64).
//   - GenerateRequestID defaults to false (Go zero value); Envoy's default is
//     true. As in Envoy, an edge request's x-request-id is replaced unless
//     PreserveExternalRequestID is set.
//   - No address is internal (Envoy >= 1.33 default), so with
//     UseRemoteAddress every request is an edge request.
//   - Not modelled: TLS peer/SNI attributes, encode_raw_headers,
//     allowed/disallowed headers, metadata namespaces, header mutation rules,
//     clear_route_cache, local_reply_config, route response headers,
//     regex/query/case-insensitive route matching, regex/range header matchers,
//     per-route service overrides, upstream timeouts/retries, WebSocket
//     tunnelling.
package envoysim

import (
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"
)

// BufferSettings is ext_authz with_request_body (§1.1).
type BufferSettings struct {
	MaxRequestBytes     uint32 // must be > 0 (PGV)
	AllowPartialMessage bool
	PackAsBytes         bool
}

// ServerHeaderTransformation is HCM server_header_transformation.
type ServerHeaderTransformation int

const (
	// ServerOverwrite sets server: <ServerName> on every response (Envoy default).
	ServerOverwrite ServerHeaderTransformation = iota
	// ServerAppendIfAbsent sets it only when the response has none.
	ServerAppendIfAbsent
	// ServerPassThrough never sets it.
	ServerPassThrough
)

// VirtualHost is a route_config virtual host. ContextExtensions is the
// vhost-level ExtAuthzPerRoute.check_settings.context_extensions.
type VirtualHost struct {
	Name              string
	Domains           []string // exact, "*.suffix", "prefix.*" or "*"; matched case-insensitively without port
	Routes            []Route  // first match wins
	ContextExtensions map[string]string
}

// Route is one route of a virtual host. Path (exact, query ignored) wins over
// Prefix when set; an empty Prefix matches everything. Headers are
// route.v3.RouteMatch.headers: every matcher must match as well (e.g. a
// ":method" matcher). Disabled is ExtAuthzPerRoute{disabled: true};
// ContextExtensions and WithRequestBody are ExtAuthzPerRoute.check_settings.
type Route struct {
	Prefix            string
	Path              string
	Headers           []HeaderMatcher
	Disabled          bool
	ContextExtensions map[string]string
	WithRequestBody   *BufferSettings
}

// HeaderMatchKind selects how a HeaderMatcher compares the header value.
type HeaderMatchKind int

const (
	// HeaderExact is string_match.exact (also the deprecated exact_match).
	HeaderExact HeaderMatchKind = iota
	// HeaderPrefix is string_match.prefix.
	HeaderPrefix
	// HeaderSuffix is string_match.suffix.
	HeaderSuffix
	// HeaderContains is string_match.contains.
	HeaderContains
	// HeaderPresent is present_match: Value is ignored; Present says whether
	// the header must be present (true) or absent (false).
	HeaderPresent
)

// HeaderMatcher is route.v3.HeaderMatcher for the match kinds the harness
// models. It is evaluated on the request header map after HCM processing,
// pseudo-headers (":method", ":authority", ":path", ":scheme") included;
// repeated headers are joined with "," first (getAllOfHeaderAsString).
type HeaderMatcher struct {
	Name                string // lower-case
	Kind                HeaderMatchKind
	Value               string
	Present             bool // HeaderPresent only
	IgnoreCase          bool // string_match.ignore_case
	Invert              bool // invert_match
	TreatMissingAsEmpty bool // treat_missing_header_as_empty
}

// Config describes the emulated listener. Zero values mean Envoy's defaults
// unless stated otherwise.
type Config struct {
	// AuthzConn is used for Check calls. If nil, Target is dialled with
	// insecure credentials (the Filter then owns the connection; see Close).
	AuthzConn grpc.ClientConnInterface
	Target    string

	// Upstream receives allowed requests in-process (router + cluster).
	Upstream http.Handler

	// ext_authz filter settings (§3).
	Timeout                    time.Duration // grpc_service.timeout; default 200ms
	FailureModeAllow           bool
	FailureModeAllowHeaderAdd  bool
	StatusOnError              int // default 403; outside 100..511 also 403 (toErrorCode)
	ValidateMutations          bool
	MaxDeniedResponseBodyBytes int
	WithRequestBody            *BufferSettings
	// FilterEnabled models filter_enabled / filter_enabled_metadata: when it
	// returns false the check is skipped and stat disabled counts it; with
	// DenyAtDisable the request gets status_on_error instead. nil = enabled.
	FilterEnabled func(*http.Request) bool
	DenyAtDisable bool

	// HCM settings (§4, §1.2 rule 6).
	UseRemoteAddress          bool // Envoy default false; our shipped config uses true
	XFFNumTrustedHops         int
	GenerateRequestID         bool // Envoy's default is true; set it to get x-request-id handling
	PreserveExternalRequestID bool
	// LocalAddress is Envoy's local_info address, appended to XFF instead of a
	// loopback peer (§4.3). Default "10.0.0.1".
	LocalAddress string
	// DestinationAddress overrides CheckRequest destination.address
	// ("host:port"). Default: the accepted socket's local address
	// (http.LocalAddrContextKey), else "127.0.0.1:10000".
	DestinationAddress string
	NormalizePath      bool
	// StripAnyHostPort and StripTrailingHostDot rewrite :authority before
	// route selection and the Check call (HCM strip_any_host_port,
	// strip_trailing_host_dot; ConnectionManagerUtility::maybeNormalizeHost).
	// Virtual-host matching ignores the port either way.
	StripAnyHostPort             bool
	StripTrailingHostDot         bool
	MergeSlashes                 bool
	PathWithEscapedSlashesAction EscapedSlashesAction
	HeadersWithUnderscoresAction UnderscoresAction
	ServerHeaderTransformation   ServerHeaderTransformation
	ServerName                   string // default "envoy"
	// SuppressEnvoyHeaders is router suppress_envoy_headers: no
	// x-envoy-expected-rq-timeout-ms upstream, no x-envoy-upstream-service-time.
	SuppressEnvoyHeaders   bool
	MaxRequestHeadersCount int // default 100
	MaxRequestHeadersKB    int // default 60

	// VirtualHosts is the route table. Empty means one catch-all route.
	VirtualHosts []VirtualHost

	// OnDecision is called once per request after the filter decided (also
	// for requests answered before the check). It runs on the request goroutine.
	OnDecision func(Decision)

	Now func() time.Time
}

// Verdict is what happened to one request.
type Verdict string

// Verdicts. OK, Denied, Error and Invalid follow the ext_authz stats of the
// same names; the others are harness-only.
const (
	VerdictOK         Verdict = "ok"
	VerdictDenied     Verdict = "denied"
	VerdictError      Verdict = "error" // see Decision.FailureModeAllowed
	VerdictInvalid    Verdict = "invalid"
	VerdictDisabled   Verdict = "disabled"    // FilterEnabled returned false
	VerdictSkipped    Verdict = "skipped"     // no route, or ExtAuthzPerRoute disabled: no Check call
	VerdictLocalReply Verdict = "local_reply" // HCM/codec/buffer answered before any Check (400, 404, 307, 413)
)

// Decision reports one request's outcome, for assertions in tests.
type Decision struct {
	Verdict            Verdict
	FailureModeAllowed bool // Error, but the request was forwarded (failure_mode_allow)
	CheckRequest       *authv3.CheckRequest
	CheckResponse      *authv3.CheckResponse // nil on RPC error or no call
	Err                error                 // RPC error, if any
	// DynamicMetadata is what Envoy stores under namespace
	// "envoy.filters.http.ext_authz" (§2.6), with ext_authz_duration added on OK.
	// nil when the response carried none.
	DynamicMetadata *structpb.Struct
	// Status is the HTTP status of the local reply Envoy sent (0 when the
	// request went upstream). For gRPC clients it is the pre-conversion code.
	Status int
	// Details is Envoy's response code details for local replies, e.g.
	// "ext_authz_denied", "ext_authz_error", "ext_authz_invalid".
	Details string
	// TrustedClientAddress is HCM's computed downstream remote address (§4.1).
	TrustedClientAddress string
}

// Stats are the ext_authz filter counters (§3.1).
type Stats struct {
	OK, Denied, Error, Disabled, FailureModeAllowed, Invalid uint64
}

// Filter is the emulated Envoy. It is safe for concurrent use.
type Filter struct {
	cfg     Config
	client  authv3.AuthorizationClient
	owned   *grpc.ClientConn
	streams atomic.Uint64

	ok, denied, errs, disabled, fma, invalid atomic.Uint64

	mu   sync.Mutex
	last Decision
}

// New validates cfg, applies defaults and returns a ready Filter.
func New(cfg Config) (*Filter, error) {
	f, err := newFilter(cfg)
	if err != nil {
		return nil, err
	}
	if f.cfg.Upstream == nil {
		return nil, errors.New("envoysim: Config.Upstream is required")
	}
	switch {
	case cfg.AuthzConn != nil:
		f.client = authv3.NewAuthorizationClient(cfg.AuthzConn)
	case cfg.Target != "":
		conn, err := grpc.NewClient(cfg.Target, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, fmt.Errorf("envoysim: dial %s: %w", cfg.Target, err)
		}
		f.owned = conn
		f.client = authv3.NewAuthorizationClient(conn)
	default:
		return nil, errors.New("envoysim: Config.AuthzConn or Config.Target is required")
	}
	return f, nil
}

// newFilter applies defaults and validates everything except the authz
// client and upstream, so BuildCheckRequest can use it alone.
func newFilter(cfg Config) (*Filter, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 200 * time.Millisecond
	}
	if cfg.StatusOnError < 100 || cfg.StatusOnError > 511 {
		cfg.StatusOnError = http.StatusForbidden
	}
	if cfg.LocalAddress == "" {
		cfg.LocalAddress = "10.0.0.1"
	}
	if cfg.ServerName == "" {
		cfg.ServerName = "envoy"
	}
	if cfg.MaxRequestHeadersCount <= 0 {
		cfg.MaxRequestHeadersCount = 100
	}
	if cfg.MaxRequestHeadersKB <= 0 {
		cfg.MaxRequestHeadersKB = 60
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.XFFNumTrustedHops < 0 {
		return nil, errors.New("envoysim: XFFNumTrustedHops must be >= 0")
	}
	if b := cfg.WithRequestBody; b != nil && b.MaxRequestBytes == 0 {
		return nil, errors.New("envoysim: WithRequestBody.MaxRequestBytes must be > 0")
	}
	for _, vh := range cfg.VirtualHosts {
		if len(vh.Domains) == 0 {
			return nil, fmt.Errorf("envoysim: virtual host %q has no domains", vh.Name)
		}
		for _, rt := range vh.Routes {
			if b := rt.WithRequestBody; b != nil && b.MaxRequestBytes == 0 {
				return nil, fmt.Errorf("envoysim: route %q/%q: WithRequestBody.MaxRequestBytes must be > 0", vh.Name, rt.Prefix+rt.Path)
			}
		}
	}
	return &Filter{cfg: cfg}, nil
}

// Close closes the gRPC connection the Filter dialled itself (Target).
func (f *Filter) Close() error {
	if f.owned != nil {
		return f.owned.Close()
	}
	return nil
}

// Stats returns a snapshot of the counters.
func (f *Filter) Stats() Stats {
	return Stats{
		OK:                 f.ok.Load(),
		Denied:             f.denied.Load(),
		Error:              f.errs.Load(),
		Disabled:           f.disabled.Load(),
		FailureModeAllowed: f.fma.Load(),
		Invalid:            f.invalid.Load(),
	}
}

// LastDecision returns the most recent Decision (zero value before any).
func (f *Filter) LastDecision() Decision {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.last
}

func (f *Filter) record(d Decision) {
	f.mu.Lock()
	f.last = d
	f.mu.Unlock()
	if f.cfg.OnDecision != nil {
		f.cfg.OnDecision(d)
	}
}

// ShippedHCM is the HCM behaviour of envoy/envoy.yaml that decides what a
// CheckRequest carries (no routes: context_extensions come from the caller).
// `extauthz check` builds its CheckRequests with it; internal/e2e compares
// the result with what real Envoy sends (TestEnvoysimMatchesRealEnvoy).
func ShippedHCM() Config {
	return Config{UseRemoteAddress: true, GenerateRequestID: true, NormalizePath: true, MergeSlashes: true,
		PathWithEscapedSlashesAction: RejectRequest, HeadersWithUnderscoresAction: RejectUnderscores,
		StripAnyHostPort: true, StripTrailingHostDot: true}
}
