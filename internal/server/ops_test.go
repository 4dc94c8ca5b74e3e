package server

import (
	"context"
	"encoding/json"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/ratelimit"
	"github.com/extauthz/extauthz/policies"
)

// policyDirWith writes the embedded rulebook and demo data, with edit
// applied to the data's extauthz object, into a new directory.
func policyDirWith(t *testing.T, edit func(root map[string]any)) string {
	t.Helper()
	dir := t.TempDir()
	rego, _ := fs.ReadFile(policies.FS, "extauthz.rego")
	raw, _ := fs.ReadFile(policies.FS, "data.json")
	var data map[string]any
	if err := json.Unmarshal(raw, &data); err != nil {
		t.Fatal(err)
	}
	edit(data["extauthz"].(map[string]any))
	out, _ := json.Marshal(data)
	os.WriteFile(filepath.Join(dir, "extauthz.rego"), rego, 0o600)
	os.WriteFile(filepath.Join(dir, "data.json"), out, 0o600)
	return dir
}

func closedAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// With the Redis backend down, every check is denied 503 as configured, but
// the log gets one line per fault message (not one per request), every line
// is JSON (go-redis's own lines included), and the dropped lines are counted.
func TestRedisDownDoesNotFloodLogs(t *testing.T) {
	dir := policyDirWith(t, func(root map[string]any) {
		lim := root["limits"].(map[string]any)
		lim["backend"] = map[string]any{"type": "redis", "addr": closedAddr(t), "on_error": "deny", "timeout_ms": 200}
	})
	r := startRun(t, func(c *config.Config) { c.PolicyDir, c.FaultLogInterval, c.DecisionLog = dir, time.Hour, "none" })
	const n = 40
	for i := 0; i < n; i++ {
		resp, err := r.client.Check(context.Background(), checkReq(map[string]string{"x-api-key": "xa_demo_free_R4t6Yu", "x-tenant-id": "42"}))
		if err != nil || resp.GetDeniedResponse().GetStatus().GetCode() != 503 {
			t.Fatalf("check %d: %v %v", i, resp, err)
		}
	}
	_, metrics := get(t, r.admin+"/metrics")
	logs := r.logs.String()
	perMsg := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not a JSON log line: %q", line)
		}
		if rec["level"] == "WARN" || rec["level"] == "ERROR" {
			perMsg[rec["msg"].(string)]++
		}
	}
	if perMsg["rate-limit backend unavailable; denying as configured"] != 1 {
		t.Errorf("per-message fault lines %v; want the backend fault once\n%s", perMsg, logs)
	}
	for msg, c := range perMsg {
		if c > 1 {
			t.Errorf("%q logged %d times within one interval", msg, c)
		}
	}
	if perMsg[ratelimit.ClientLogMsg] != 1 {
		t.Errorf("go-redis's dial failures: %d JSON lines; want 1\n%s", perMsg[ratelimit.ClientLogMsg], logs)
	}
	if !strings.Contains(metrics, "extauthz_log_lines_suppressed_total") || strings.Contains(metrics, "extauthz_log_lines_suppressed_total 0\n") {
		t.Errorf("suppressed lines not counted")
	}
	// At stop the pending counts are written as summaries.
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(r.logs.String(), `"msg_suppressed":"rate-limit backend unavailable; denying as configured","suppressed":39`) {
		t.Errorf("no summary at stop:\n%s", r.logs.String())
	}
}

// --check-timeout bounds the whole check: with no time left, the check is
// denied internal_error (fail closed), still as a CheckResponse.
func TestCheckTimeoutBoundsTheWholeCheck(t *testing.T) {
	r := startRun(t, func(c *config.Config) { c.CheckTimeout, c.EvalTimeout = 2*time.Nanosecond, time.Nanosecond })
	resp, err := r.client.Check(context.Background(), checkReq(map[string]string{"x-api-key": "xa_demo_7Qm2vK9pL4sT8wZ1", "x-tenant-id": "42"}))
	if err != nil {
		t.Fatalf("a timed-out check must still be a CheckResponse: %v", err)
	}
	var body struct {
		Error struct{ Code string } `json:"error"`
	}
	d := resp.GetDeniedResponse()
	if json.Unmarshal([]byte(d.GetBody()), &body); d.GetStatus().GetCode() != 500 || body.Error.Code != "internal_error" {
		t.Fatalf("want a 500 internal_error deny, got %v", resp)
	}
}

// deadlineAuthz records the deadline each Check sees.
type deadlineAuthz struct {
	authv3.UnimplementedAuthorizationServer
	mu   sync.Mutex
	seen []time.Duration // deadline minus the time the handler was entered; -1 without one
}

func (a *deadlineAuthz) Check(ctx context.Context, _ *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	left := time.Duration(-1)
	if dl, ok := ctx.Deadline(); ok {
		left = time.Until(dl)
	}
	a.mu.Lock()
	a.seen = append(a.seen, left)
	a.mu.Unlock()
	return &authv3.CheckResponse{}, nil
}

// The deadline is set in the gRPC handler layer, whatever the caller sends:
// none, or a longer one than the check timeout.
func TestWithDeadline(t *testing.T) {
	a := &deadlineAuthz{}
	const d = 150 * time.Millisecond
	g := NewGRPCServer(WithDeadline(a, d), health.NewServer())
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	go g.Serve(lis)
	defer g.Stop()
	conn, _ := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer conn.Close()
	c := authv3.NewAuthorizationClient(conn)
	if _, err := c.Check(context.Background(), &authv3.CheckRequest{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Hour)
	defer cancel()
	if _, err := c.Check(ctx, &authv3.CheckRequest{}); err != nil {
		t.Fatal(err)
	}
	for i, left := range a.seen {
		if left < 0 || left > d {
			t.Errorf("check %d: deadline %v ahead; want one within %v", i, left, d)
		}
	}
	if WithDeadline(a, 0) != authv3.AuthorizationServer(a) {
		t.Error("a zero timeout must leave the server as it is")
	}
	// The check server's pre-encoded path keeps its type.
	if _, ok := WithDeadline(wireOnly{}, d).(wireChecker); !ok {
		t.Error("WithDeadline hid CheckWire")
	}
}

type wireOnly struct{ okAuthz }

func (wireOnly) CheckWire(context.Context, *authv3.CheckRequest) any { return &authv3.CheckResponse{} }

// SIGTERM with --prestop-delay: first not ready (gRPC health NOT_SERVING,
// /readyz 503) while still answering checks on old and new connections; only
// after the delay does the drain close the listener. The delay is a channel
// the test fires: the order of events is asserted, not their timing.
func TestPrestopDelayOrder(t *testing.T) {
	var mu sync.Mutex
	var events []string
	notReady := make(chan struct{})
	prestopOver := make(chan time.Time)
	hk := hooks{
		event: func(step string) {
			mu.Lock()
			events = append(events, step)
			mu.Unlock()
			if step == stepNotReady {
				close(notReady)
			}
		},
		after: func(step string, d time.Duration) <-chan time.Time {
			if step == stepPrestop {
				if d != time.Minute {
					t.Errorf("prestop delay %v", d)
				}
				return prestopOver
			}
			return time.After(d)
		},
	}
	r := startRunHooks(t, func(c *config.Config) { c.PrestopDelay = time.Minute }, hk)
	req := checkReq(map[string]string{"x-api-key": "xa_demo_7Qm2vK9pL4sT8wZ1", "x-tenant-id": "42"})
	r.cancel() // SIGTERM
	<-notReady
	ctx := context.Background()
	if hr, err := r.health.Check(ctx, &healthpb.HealthCheckRequest{Service: authService}); err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("gRPC health during the prestop delay: %v %v", hr, err)
	}
	if code, body := get(t, r.admin+"/readyz"); code != 503 || !strings.Contains(body, "shutting down") {
		t.Errorf("readyz during the prestop delay: %d %s", code, body)
	}
	if resp, err := r.client.Check(ctx, req); err != nil || resp.GetOkResponse() == nil {
		t.Errorf("existing connection during the prestop delay: %v %v", resp, err)
	}
	conn, err := grpc.NewClient("unix://"+r.sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, req); err != nil || resp.GetOkResponse() == nil {
		t.Errorf("new connection during the prestop delay: %v %v", resp, err)
	}
	select {
	case <-r.done:
		t.Fatal("Run returned before the prestop delay was over")
	default:
	}
	close(prestopOver)
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(events, ",") != "not_ready,prestop,drain,stopped" {
		t.Errorf("shutdown steps %q", events)
	}
	if _, err := net.Dial("unix", r.sock); err == nil {
		t.Error("the listener is still open after the drain")
	}
}

// Without a prestop delay, health still goes NOT_SERVING before the drain.
func TestNoPrestopDelay(t *testing.T) {
	var mu sync.Mutex
	var events []string
	r := startRunHooks(t, nil, hooks{event: func(s string) { mu.Lock(); events = append(events, s); mu.Unlock() }})
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(events, ",") != "not_ready,drain,stopped" {
		t.Errorf("shutdown steps %q", events)
	}
}

func TestExposureWarnings(t *testing.T) {
	for _, tc := range []struct {
		grpc, admin, cert string
		pprof             bool
		want              []string
	}{
		{"127.0.0.1:9001", "127.0.0.1:9002", "", true, nil},
		{"unix:///run/x.sock", "localhost:9002", "", true, nil},
		{"[::1]:9001", "", "", false, nil},
		{"0.0.0.0:9001", "127.0.0.1:9002", "", false, []string{"grpc-addr 0.0.0.0:9001"}},
		{":9001", "127.0.0.1:9002", "c.pem", false, nil}, // TLS on every interface is fine
		{"127.0.0.1:9001", "0.0.0.0:9002", "", false, []string{"admin-addr 0.0.0.0:9002"}},
		{"127.0.0.1:9001", ":9002", "", true, []string{"admin-addr :9002", "pprof is on"}},
		{"10.1.2.3:9001", "[::]:9002", "", true, []string{"grpc-addr 10.1.2.3:9001", "admin-addr [::]:9002", "pprof is on"}},
	} {
		cfg := config.Defaults()
		cfg.GRPCAddr, cfg.AdminAddr, cfg.TLSCert, cfg.Pprof = tc.grpc, tc.admin, tc.cert, tc.pprof
		got := ExposureWarnings(cfg)
		if len(got) != len(tc.want) {
			t.Errorf("%+v: %q", tc, got)
			continue
		}
		for i, w := range tc.want {
			if !strings.HasPrefix(got[i], w) {
				t.Errorf("%+v: warning %d = %q; want %q…", tc, i, got[i], w)
			}
		}
	}
	// Run logs them at startup.
	r := startRun(t, func(c *config.Config) { c.Pprof, c.AdminAddr = true, "localhost:"+strings.Split(c.AdminAddr, ":")[1] })
	if strings.Contains(r.logs.String(), "exposed listener") {
		t.Errorf("loopback listeners warned about:\n%s", r.logs.String())
	}
}

// The time budgets nest: Envoy's ext_authz timeout in the shipped
// envoy.yaml > --check-timeout > --eval-timeout, and the default Redis
// timeout fits in what a full evaluation leaves of the check deadline.
func TestTimeoutBudgetsNest(t *testing.T) {
	raw, err := os.ReadFile("../../envoy/envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	y := string(raw)
	i := strings.Index(y, "envoy.filters.http.ext_authz")
	j := strings.Index(y[i:], "timeout:")
	if i < 0 || j < 0 {
		t.Fatal("no ext_authz timeout in envoy.yaml")
	}
	field := strings.Fields(y[i+j+len("timeout:"):])[0]
	envoy, err := time.ParseDuration(field)
	if err != nil {
		t.Fatalf("envoy.yaml ext_authz timeout %q: %v", field, err)
	}
	d := config.Defaults()
	if !(envoy > d.CheckTimeout && d.CheckTimeout > d.EvalTimeout) {
		t.Errorf("envoy %v, --check-timeout %v, --eval-timeout %v: want them in decreasing order", envoy, d.CheckTimeout, d.EvalTimeout)
	}
	if envoy-d.CheckTimeout < 25*time.Millisecond {
		t.Errorf("--check-timeout %v leaves Envoy's %v little room for transport", d.CheckTimeout, envoy)
	}
	if ratelimit.DefaultTimeout < 50*time.Millisecond || ratelimit.DefaultTimeout > d.CheckTimeout-d.EvalTimeout {
		t.Errorf("redis timeout %v: want at least 50ms and within --check-timeout minus --eval-timeout (%v)", ratelimit.DefaultTimeout, d.CheckTimeout-d.EvalTimeout)
	}
}
