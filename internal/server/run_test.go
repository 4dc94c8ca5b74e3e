package server

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/extauthz/extauthz/internal/config"
	"github.com/extauthz/extauthz/internal/decisionlog"
	"github.com/extauthz/extauthz/internal/engine"
	"github.com/extauthz/extauthz/internal/source"
	"github.com/extauthz/extauthz/internal/testutil"
	"github.com/extauthz/extauthz/policies"
)

type running struct {
	client authv3.AuthorizationClient
	health healthpb.HealthClient
	admin  string
	logs   *testutil.SyncBuffer
	stop   func() error
	cancel func()          // starts the shutdown; stop waits for it
	done   <-chan struct{} // closed when Run has returned
	sock   string
}

func startRun(t *testing.T, mutate func(*config.Config)) *running {
	t.Helper()
	return startRunHooks(t, mutate, hooks{})
}

func startRunHooks(t *testing.T, mutate func(*config.Config), hk hooks) *running {
	t.Helper()
	cfg := config.Defaults()
	sock := filepath.Join(t.TempDir(), "x.sock")
	cfg.GRPCAddr, cfg.AdminAddr = "unix://"+sock, testutil.FreeAddr(t)
	cfg.EvalTimeout, cfg.CheckTimeout = 5*time.Second, 10*time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	logs := &testutil.SyncBuffer{}
	log := slog.New(decisionlog.NewJSONHandler(logs, nil)) // as cli builds it
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, log, hk) }()
	deadline := time.Now().Add(10 * time.Second)
	for { // both listeners: the gRPC socket and the admin HTTP port
		if _, err := os.Stat(sock); err == nil {
			if c, err := net.Dial("tcp", cfg.AdminAddr); err == nil {
				c.Close()
				break
			}
		}
		select {
		case err := <-done:
			t.Fatalf("Run returned early: %v\n%s", err, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("server did not start")
		}
		time.Sleep(20 * time.Millisecond)
	}
	conn, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	r := &running{client: authv3.NewAuthorizationClient(conn), health: healthpb.NewHealthClient(conn), admin: "http://" + cfg.AdminAddr, logs: logs,
		cancel: cancel, sock: sock}
	var once sync.Once
	var runErr error
	returned := make(chan struct{})
	r.done = returned
	go func() { runErr = <-done; close(returned) }()
	var stopErr error
	r.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case <-returned:
				stopErr = runErr
			case <-time.After(15 * time.Second):
				stopErr = io.ErrNoProgress
			}
			conn.Close()
		})
		return stopErr
	}
	t.Cleanup(func() { _ = r.stop() })
	// The gRPC server answers (any health status) before the test goes on:
	// a socket file alone does not say the server is still up. (A TLS
	// server is probed by its tests, with their own clients.)
	for tries := 0; cfg.TLSCert == ""; tries++ {
		if _, err := r.health.Check(context.Background(), &healthpb.HealthCheckRequest{}); err == nil {
			break
		} else if tries == 200 {
			t.Fatalf("gRPC server not answering: %v\n%s", err, logs.String())
		}
		select {
		case <-returned:
			t.Fatalf("Run returned early: %v\n%s", runErr, logs.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	return r
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestRunMetricsLogsHealthAndStop(t *testing.T) {
	r := startRun(t, nil)
	ctx := context.Background()
	token, _ := os.ReadFile("../../testdata/demo.jwt")
	secrets := []string{"xa_demo_7Qm2vK9pL4sT8wZ1", string(token), "xa_not_a_real_key_123"}
	for _, h := range []map[string]string{
		{"x-api-key": secrets[0], "x-tenant-id": "42"},
		{"authorization": "Bearer " + secrets[1], "x-tenant-id": "42"},
		{"x-api-key": secrets[2], "x-tenant-id": "42"},
		{"x-tenant-id": "42"},
	} {
		if _, err := r.client.Check(ctx, checkReq(h)); err != nil {
			t.Fatal(err)
		}
	}
	if code, body := get(t, r.admin+"/healthz"); code != 200 {
		t.Errorf("healthz %d %s", code, body)
	}
	if code, body := get(t, r.admin+"/readyz"); code != 200 || !strings.Contains(body, `"version":"`) {
		t.Errorf("readyz %d %s", code, body)
	}
	hr, err := r.health.Check(ctx, &healthpb.HealthCheckRequest{Service: authService})
	if err != nil || hr.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("grpc health %v %v", hr, err)
	}
	_, metrics := get(t, r.admin+"/metrics")
	for _, want := range []string{
		`extauthz_checks_total{outcome="allow",profile="default",reason="ok"} 2`,
		`extauthz_checks_total{outcome="deny",profile="default",reason="key_invalid"} 1`,
		`extauthz_checks_total{outcome="deny",profile="default",reason="credentials_missing"} 1`,
		`extauthz_check_duration_seconds_count{outcome="allow"} 2`,
		`extauthz_policy_reloads_total{result="success"} 1`,
		`extauthz_policy_info{version="`,
		`extauthz_credential_cache_misses_total 1`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	// Decision logs: one JSON record per decision, no secret anywhere in any log.
	logs := r.logs.String()
	if strings.Count(logs, `"msg":"decision"`) != 4 || !strings.Contains(logs, `"key_id":"demo-orders"`) || !strings.Contains(logs, `"subject":"user:demo"`) {
		t.Errorf("decision logs:\n%s", logs)
	}
	for _, s := range secrets {
		if strings.Contains(logs, s) || strings.Contains(metrics, s) {
			t.Errorf("a credential reached the logs or metrics: %.12s…", s)
		}
	}
	if err := r.stop(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	if !strings.Contains(r.logs.String(), "draining in-flight checks") {
		t.Error("no drain logged")
	}
}

// Graceful drain waits for in-flight checks, within its budget.
type blockingAuthz struct {
	authv3.UnimplementedAuthorizationServer
	entered  chan struct{}
	release  chan struct{}
	finished func() // called when a released check's handler returns (nil: none)
}

func (b *blockingAuthz) Check(ctx context.Context, _ *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	b.entered <- struct{}{}
	select {
	case <-b.release:
		if b.finished != nil {
			b.finished()
		}
		return &authv3.CheckResponse{}, nil
	case <-ctx.Done(): // Stop cancels in-flight RPCs
		return nil, ctx.Err()
	}
}

// TestDrain orders events instead of timing them: the drain budget is a
// channel the test fires itself.
func TestDrain(t *testing.T) {
	for _, tc := range []struct {
		name    string
		release bool // the in-flight check finishes (else the budget expires first)
		wantErr bool
	}{{"in-flight check finishes", true, false}, {"budget exceeded", false, true}} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var events []string
			event := func(e string) { mu.Lock(); events = append(events, e); mu.Unlock() }
			// The handler's own return is the event drain must wait for (the
			// client may see the reply after drain returned: that is fine).
			b := &blockingAuthz{entered: make(chan struct{}, 1), release: make(chan struct{}), finished: func() { event("check returned") }}
			g := NewGRPCServer(b, health.NewServer())
			lis, _ := net.Listen("tcp", "127.0.0.1:0")
			go g.Serve(lis)
			conn, _ := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
			defer conn.Close()
			callDone := make(chan error, 1)
			go func() {
				_, err := authv3.NewAuthorizationClient(conn).Check(context.Background(), &authv3.CheckRequest{})
				callDone <- err
			}()
			<-b.entered
			hs := health.NewServer()
			budget := make(chan time.Time)
			drained := make(chan error, 1)
			go func() {
				err := drain(g, hs, time.Hour, budget, slog.New(slog.DiscardHandler))
				event("drain returned")
				drained <- err
			}()
			// drain has begun once the health service went NOT_SERVING.
			for i := 0; ; i++ {
				r, _ := hs.Check(context.Background(), &healthpb.HealthCheckRequest{})
				if r.GetStatus() == healthpb.HealthCheckResponse_NOT_SERVING {
					break
				}
				if i > 10000 {
					t.Fatal("drain never started")
				}
				runtime.Gosched()
			}
			select {
			case err := <-drained:
				t.Fatalf("drain returned while a check was in flight and its budget not spent: %v", err)
			default:
			}
			if tc.release {
				close(b.release)
			} else {
				close(budget) // the budget expires with the check still in flight
			}
			err := <-drained
			callErr := <-callDone
			if (err != nil) != tc.wantErr {
				t.Errorf("drain: %v", err)
			}
			if tc.release {
				if callErr != nil {
					t.Errorf("in-flight check failed during drain: %v", callErr)
				}
				mu.Lock()
				if len(events) != 2 || events[0] != "check returned" {
					t.Errorf("events %q: drain must wait for the in-flight check", events)
				}
				mu.Unlock()
			} else {
				if callErr == nil {
					t.Error("the in-flight check survived a drain past its budget")
				}
				close(b.release)
			}
		})
	}
}

// A bundle service that is down at start: not ready (and 500 denials), then ready.
func TestReadinessFollowsFirstLoad(t *testing.T) {
	var up atomic.Bool
	bundleBytes := demoBundle(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !up.Load() {
			http.Error(w, "not yet", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("ETag", `"v1"`)
		w.Write(bundleBytes)
	}))
	defer srv.Close()
	r := startRun(t, func(c *config.Config) { c.BundleURL, c.BundlePoll = srv.URL, time.Second })
	if code, body := get(t, r.admin+"/readyz"); code != 503 || !strings.Contains(body, "no policy loaded") {
		t.Errorf("before first load: %d %s", code, body)
	}
	resp, err := r.client.Check(context.Background(), checkReq(map[string]string{"x-api-key": "xa_demo_7Qm2vK9pL4sT8wZ1", "x-tenant-id": "42"}))
	if err != nil || resp.GetDeniedResponse().GetStatus().GetCode() != 500 {
		t.Fatalf("no policy must deny 500: %v %v", resp, err)
	}
	up.Store(true)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if code, _ := get(t, r.admin+"/readyz"); code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never ready:\n%s", r.logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	resp, _ = r.client.Check(context.Background(), checkReq(map[string]string{"x-api-key": "xa_demo_7Qm2vK9pL4sT8wZ1", "x-tenant-id": "42"}))
	if resp.GetOkResponse() == nil {
		t.Fatalf("after load: %v", resp)
	}
}

// TLS and mTLS listeners.
func TestTLSAndMTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := newCert(t, nil, nil, "extauthz-test-ca", true)
	srvCert, srvKey := newCert(t, ca, caKey, "127.0.0.1", false)
	cliCert, cliKey := newCert(t, ca, caKey, "envoy", false)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o600)
		return p
	}
	caFile := write("ca.pem", certPEM(ca))
	certFile, keyFile := write("srv.pem", certPEM(srvCert)), write("srv.key", keyPEM(srvKey))
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	for _, tc := range []struct {
		name       string
		clientCA   string
		clientCert bool
		wantOK     bool
	}{
		{"tls", "", false, true},
		{"mtls with client cert", caFile, true, true},
		{"mtls without client cert", caFile, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc2, err := TLSConfig(certFile, keyFile, tc.clientCA)
			if err != nil {
				t.Fatal(err)
			}
			eng, _ := source.Engine(context.Background(), "", engine.Options{})
			_ = eng
			g := NewGRPCServer(&okAuthz{}, health.NewServer(), grpc.Creds(credentials.NewTLS(tc2)))
			lis, _ := net.Listen("tcp", "127.0.0.1:0")
			go g.Serve(lis)
			defer g.Stop()
			ctls := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
			if tc.clientCert {
				ctls.Certificates = []tls.Certificate{{Certificate: [][]byte{cliCert.Raw}, PrivateKey: cliKey}}
			}
			conn, _ := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(ctls)))
			defer conn.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err = authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{})
			if (err == nil) != tc.wantOK {
				t.Errorf("err = %v, want ok=%v", err, tc.wantOK)
			}
		})
	}
	if _, err := TLSConfig(certFile, keyFile, keyFile); err == nil || !strings.Contains(err.Error(), "tls-client-ca") {
		t.Errorf("bad CA file: %v", err)
	}
}

type okAuthz struct {
	authv3.UnimplementedAuthorizationServer
}

func (okAuthz) Check(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return &authv3.CheckResponse{}, nil
}

func newCert(t *testing.T, parent *x509.Certificate, parentKey *rsa.PrivateKey, cn string, isCA bool) (*x509.Certificate, *rsa.PrivateKey) {
	t.Helper()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IsCA:        isCA, BasicConstraintsValid: true,
	}
	if ip := net.ParseIP(cn); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func keyPEM(k *rsa.PrivateKey) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})
}

// JWKS fetch outcomes are counted per issuer; readiness waits for first attempts.
func TestJWKSFetchMetrics(t *testing.T) {
	jwks, _ := os.ReadFile("../../testdata/demo_jwks.json")
	good := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write(jwks) }))
	defer good.Close()
	dir := t.TempDir()
	rego, _ := fs.ReadFile(policies.FS, "extauthz.rego")
	os.WriteFile(filepath.Join(dir, "extauthz.rego"), rego, 0o600)
	os.WriteFile(filepath.Join(dir, "data.json"), []byte(`{"extauthz": {"routes": [{"id": "a", "path": "/a", "auth": ["jwt"]}], "jwt": {"issuers": [
	  {"issuer": "https://good.example", "audiences": ["a"], "jwks_url": "`+good.URL+`"},
	  {"issuer": "https://down.example", "audiences": ["a"], "jwks_url": "http://127.0.0.1:1/jwks"}]}}}`), 0o600)
	r := startRun(t, func(c *config.Config) { c.PolicyDir = dir })
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, m := get(t, r.admin+"/metrics")
		if strings.Contains(m, `extauthz_jwks_fetches_total{issuer="https://good.example",result="success"}`) &&
			strings.Contains(m, `extauthz_jwks_fetches_total{issuer="https://down.example",result="failure"}`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("jwks metrics missing:\n%s", m)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if code, body := get(t, r.admin+"/readyz"); code != 200 {
		t.Errorf("readyz after first fetch attempts: %d %s", code, body)
	}
}

// Liveness is up before the first policy version loads, and readiness only
// after it: a large key set takes seconds to load, and a liveness probe
// must not kill the pod meanwhile.
func TestLiveBeforeThePolicyLoads(t *testing.T) {
	release := make(chan struct{})
	bundles := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release // the first load hangs until the test has looked
		http.Error(w, "not yet", http.StatusServiceUnavailable)
	}))
	defer bundles.Close()
	defer close(release)
	cfg := config.Defaults()
	cfg.AdminAddr, cfg.GRPCAddr = testutil.FreeAddr(t), testutil.FreeAddr(t)
	cfg.BundleURL = bundles.URL + "/bundle.tar.gz"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, slog.New(slog.NewJSONHandler(io.Discard, nil))) }()
	defer func() { cancel(); <-done }()
	var live *http.Response
	for i := 0; ; i++ {
		resp, err := http.Get("http://" + cfg.AdminAddr + "/healthz")
		if err == nil {
			live = resp
			break
		}
		if i > 500 {
			t.Fatalf("/healthz never answered while the policy loads: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	live.Body.Close()
	resp, err := http.Get("http://" + cfg.AdminAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if live.StatusCode != 200 || resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "no policy loaded yet") {
		t.Fatalf("while loading: healthz %d, readyz %d %s", live.StatusCode, resp.StatusCode, body)
	}
}

// A candidate policy runs beside the serving one: sampled live checks are
// compared and counted by (serving, candidate) verdict.
func TestCandidatePolicyCompared(t *testing.T) {
	dir := t.TempDir()
	rego, _ := fs.ReadFile(policies.FS, "extauthz.rego")
	data, _ := fs.ReadFile(policies.FS, "data.json")
	// The candidate refuses demo-readonly everywhere.
	stricter := strings.Replace(string(rego), "} else := allow if {\n\troute.public", "} else := deny(\"key_revoked\") if {\n\tidentity.key_id == \"demo-readonly\"\n} else := allow if {\n\troute.public", 1)
	os.WriteFile(filepath.Join(dir, "extauthz.rego"), []byte(stricter), 0o600)
	os.WriteFile(filepath.Join(dir, "data.json"), data, 0o600)
	r := startRun(t, func(c *config.Config) { c.CandidateDir, c.CandidateSampleRate = dir, 1 })
	defer r.stop()
	for _, key := range []string{"xa_demo_7Qm2vK9pL4sT8wZ1", "xa_demo_readonly_K3n8Vb"} {
		resp, err := r.client.Check(context.Background(), checkReq(map[string]string{"x-api-key": key, "x-tenant-id": "42"}))
		if err != nil || resp.GetOkResponse() == nil {
			t.Fatalf("serving policy: %v %v", resp, err)
		}
	}
	for i := 0; ; i++ {
		_, m := get(t, r.admin+"/metrics")
		if strings.Contains(m, `extauthz_candidate_decisions_total{candidate="ok",serving="ok"} 1`) &&
			strings.Contains(m, `extauthz_candidate_decisions_total{candidate="key_revoked",serving="ok"} 1`) {
			break
		}
		if i > 200 {
			t.Fatalf("candidate comparisons not counted:\n%s", m)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !strings.Contains(r.logs.String(), `"msg":"candidate differs"`) {
		t.Errorf("no difference logged: %s", r.logs.String())
	}
}

// --reply-metadata: the default replies carry decision_id and reason in
// Envoy's dynamic metadata; full adds the route, version and identity.
func TestReplyMetadataSetting(t *testing.T) {
	for _, tc := range []struct {
		setting string
		want    []string
	}{
		{"minimal", []string{"decision_id", "reason"}},
		{"full", []string{"decision_id", "key_id", "policy_version", "profile", "reason", "route", "subject", "tenant"}},
	} {
		t.Run(tc.setting, func(t *testing.T) {
			r := startRun(t, func(c *config.Config) { c.ReplyMetadata = tc.setting })
			for range 2 { // the second from the decision memo
				resp, err := r.client.Check(context.Background(), checkReq(map[string]string{"x-api-key": "xa_demo_7Qm2vK9pL4sT8wZ1", "x-tenant-id": "42"}))
				if err != nil {
					t.Fatal(err)
				}
				if got := slices.Sorted(maps.Keys(resp.GetDynamicMetadata().GetFields())); !slices.Equal(got, tc.want) {
					t.Errorf("metadata fields %v, want %v", got, tc.want)
				}
			}
		})
	}
}

// With --admin-addr 127.0.0.1:0 the "serving" line gives the port bound,
// which answers /healthz.
func TestServingLogNamesTheBoundAdminPort(t *testing.T) {
	cfg := config.Defaults()
	cfg.GRPCAddr, cfg.AdminAddr = "unix://"+filepath.Join(t.TempDir(), "x.sock"), "127.0.0.1:0"
	logs := &testutil.SyncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg, slog.New(slog.NewJSONHandler(logs, nil))) }()
	defer func() { cancel(); <-done }()
	var admin string
	for i := 0; admin == ""; i++ {
		for line := range strings.Lines(logs.String()) {
			var rec struct{ Msg, Admin string }
			if json.Unmarshal([]byte(line), &rec) == nil && rec.Msg == "serving" {
				admin = rec.Admin
			}
		}
		if i > 1000 {
			t.Fatalf("no serving line:\n%s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, err := http.Get("http://" + admin + "/healthz")
	if err != nil || strings.HasSuffix(admin, ":0") {
		t.Fatalf("serving line names admin %q: %v", admin, err)
	}
	resp.Body.Close()
}
