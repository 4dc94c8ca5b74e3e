package server

import (
	"context"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"

	"github.com/extauthz/extauthz/internal/config"
)

// writeAt writes a file and gives it a modification time of its own, so a
// rewrite is noticed whatever the file system's time resolution.
func writeAt(t *testing.T, path string, b []byte, mtime time.Time) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(path, mtime, mtime); err != nil {
		t.Fatal(err)
	}
}

type pki struct {
	ca    *x509.Certificate
	caKey *rsa.PrivateKey
}

func newPKI(t *testing.T, name string) pki {
	ca, key := newCert(t, nil, nil, name, true)
	return pki{ca, key}
}

func (p pki) issue(t *testing.T, cn string) (*x509.Certificate, *rsa.PrivateKey) {
	return newCert(t, p.ca, p.caKey, cn, false)
}

// tlsServer serves okAuthz over TLS from the files, counting rejections.
func tlsServer(t *testing.T, files *TLSFiles) (addr string, rejects func() []string) {
	t.Helper()
	var mu sync.Mutex
	var got []string
	creds := ObserveHandshakes(credentials.NewTLS(files.Config()), func(reason string, _ net.Addr, _ error) {
		mu.Lock()
		got = append(got, reason)
		mu.Unlock()
	})
	g := NewGRPCServer(&okAuthz{}, health.NewServer(), grpc.Creds(creds))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return lis.Addr().String(), func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), got...)
	}
}

// dialCheck makes one Check over a new connection and returns the server
// certificate's common name.
func dialCheck(t *testing.T, addr string, roots *x509.Certificate, client *tls.Certificate) (string, error) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(roots)
	var peerCN string
	ctls := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12,
		VerifyConnection: func(cs tls.ConnectionState) error {
			peerCN = cs.PeerCertificates[0].Subject.CommonName
			return nil
		}}
	if client != nil {
		ctls.Certificates = []tls.Certificate{*client}
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(ctls)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err = authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{})
	return peerCN, err
}

// Rotated certificate, key and client CA files are served to new
// connections without a restart; a half-written pair keeps the old one.
func TestTLSFilesRotate(t *testing.T) {
	dir := t.TempDir()
	ca1, ca2 := newPKI(t, "ca-one"), newPKI(t, "ca-two")
	certFile, keyFile, caFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")
	base := time.Now().Add(-time.Hour)
	srv1, srv1Key := ca1.issue(t, "127.0.0.1")
	writeAt(t, certFile, certPEM(srv1), base)
	writeAt(t, keyFile, keyPEM(srv1Key), base)
	writeAt(t, caFile, certPEM(ca1.ca), base)
	cli1, cli1Key := ca1.issue(t, "envoy-one")
	cli2, cli2Key := ca2.issue(t, "envoy-two")
	client1 := &tls.Certificate{Certificate: [][]byte{cli1.Raw}, PrivateKey: cli1Key}
	client2 := &tls.Certificate{Certificate: [][]byte{cli2.Raw}, PrivateKey: cli2Key}

	files, err := NewTLSFiles(certFile, keyFile, caFile)
	if err != nil {
		t.Fatal(err)
	}
	files.CheckEvery, files.Log = -1, slog.New(slog.DiscardHandler) // check the files on every handshake
	addr, rejects := tlsServer(t, files)

	if cn, err := dialCheck(t, addr, ca1.ca, client1); err != nil || cn != "127.0.0.1" {
		t.Fatalf("before rotation: %q %v", cn, err)
	}
	if err := rawHandshake(t, "tcp", addr, ca1.ca, client2); err == nil {
		t.Fatal("a client of the other CA was accepted before the CA rotated")
	}

	// Rotate everything to the second CA (a Secret update).
	srv2, srv2Key := ca2.issue(t, "127.0.0.1")
	writeAt(t, certFile, certPEM(srv2), base.Add(time.Minute))
	writeAt(t, keyFile, keyPEM(srv2Key), base.Add(time.Minute))
	writeAt(t, caFile, certPEM(ca2.ca), base.Add(time.Minute))
	if _, err := dialCheck(t, addr, ca2.ca, client2); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	if err := rawHandshake(t, "tcp", addr, ca2.ca, client1); err == nil {
		t.Fatal("a client of the retired CA was accepted after the CA rotated")
	}

	// Half-written: a new certificate whose key is not there yet. The
	// previous pair keeps serving.
	srv3, _ := ca1.issue(t, "127.0.0.1")
	writeAt(t, certFile, certPEM(srv3), base.Add(2*time.Minute))
	if _, err := dialCheck(t, addr, ca2.ca, client2); err != nil {
		t.Fatalf("half-written rotation broke serving: %v", err)
	}

	waitFor(t, func() bool { return len(rejects()) >= 2 })
	if got := rejects(); len(got) != 2 || got[0] != TLSClientCertInvalid || got[1] != TLSClientCertInvalid {
		t.Errorf("rejections %q; want two %s", got, TLSClientCertInvalid)
	}
}

// With CheckEvery, the files are looked at no more than that often
// (injected clock: nothing sleeps).
func TestTLSFilesCheckEvery(t *testing.T) {
	dir := t.TempDir()
	ca := newPKI(t, "ca")
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	base := time.Now().Add(-time.Hour)
	c1, k1 := ca.issue(t, "one")
	writeAt(t, certFile, certPEM(c1), base)
	writeAt(t, keyFile, keyPEM(k1), base)
	files, err := NewTLSFiles(certFile, keyFile, "")
	if err != nil {
		t.Fatal(err)
	}
	now := base
	files.Now, files.CheckEvery, files.Log = func() time.Time { return now }, time.Minute, slog.New(slog.DiscardHandler)
	cn := func() string {
		tc, _ := files.forClient(nil)
		leaf, _ := x509.ParseCertificate(tc.Certificates[0].Certificate[0])
		return leaf.Subject.CommonName
	}
	if got := cn(); got != "one" {
		t.Fatal(got)
	}
	c2, k2 := ca.issue(t, "two")
	writeAt(t, certFile, certPEM(c2), base.Add(time.Second))
	writeAt(t, keyFile, keyPEM(k2), base.Add(time.Second))
	now = now.Add(30 * time.Second)
	if got := cn(); got != "one" {
		t.Fatalf("files rechecked within CheckEvery: %s", got)
	}
	now = now.Add(30 * time.Second)
	if got := cn(); got != "two" {
		t.Fatalf("rotation not picked up after CheckEvery: %s", got)
	}
}

// A running server with mTLS logs and counts rejected clients.
func TestMTLSRejectionsLoggedAndCounted(t *testing.T) {
	dir := t.TempDir()
	ca, other := newPKI(t, "ca"), newPKI(t, "other")
	srv, srvKey := ca.issue(t, "127.0.0.1")
	certFile, keyFile, caFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"), filepath.Join(dir, "ca.crt")
	os.WriteFile(certFile, certPEM(srv), 0o600)
	os.WriteFile(keyFile, keyPEM(srvKey), 0o600)
	os.WriteFile(caFile, certPEM(ca.ca), 0o600)
	r := startRun(t, func(c *config.Config) {
		c.TLSCert, c.TLSKey, c.TLSClientCA, c.FaultLogInterval = certFile, keyFile, caFile, time.Hour
	})
	stranger, strangerKey := other.issue(t, "mallory")
	for i := 0; i < 3; i++ {
		if err := rawHandshake(t, "unix", r.sock, ca.ca, nil); err == nil {
			t.Fatal("no client certificate, accepted")
		}
		if err := rawHandshake(t, "unix", r.sock, ca.ca, &tls.Certificate{Certificate: [][]byte{stranger.Raw}, PrivateKey: strangerKey}); err == nil {
			t.Fatal("a stranger's client certificate, accepted")
		}
	}
	var metrics string
	waitFor(t, func() bool {
		_, metrics = get(t, r.admin+"/metrics")
		return strings.Contains(metrics, `extauthz_tls_handshake_failures_total{reason="client_cert_missing"} 3`) &&
			strings.Contains(metrics, `extauthz_tls_handshake_failures_total{reason="client_cert_invalid"} 3`)
	})
	for _, want := range []string{
		`extauthz_tls_handshake_failures_total{reason="client_cert_missing"} 3`,
		`extauthz_tls_handshake_failures_total{reason="client_cert_invalid"} 3`,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	logs := r.logs.String()
	if strings.Count(logs, "tls handshake rejected: client_cert_missing") != 1 || strings.Count(logs, "tls handshake rejected: client_cert_invalid") != 1 {
		t.Errorf("want one line per reason within the interval:\n%s", logs)
	}
}

// rawHandshake makes one TLS connection (one handshake, unlike a gRPC
// client, which may retry) and reads the server's first bytes: its HTTP/2
// settings when it accepted us, its alert when it did not. The client
// certificate is sent whatever CAs the server names.
func rawHandshake(t *testing.T, network, addr string, root *x509.Certificate, client *tls.Certificate) error {
	t.Helper()
	raw, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	pool := x509.NewCertPool()
	pool.AddCert(root)
	c := tls.Client(raw, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", NextProtos: []string{"h2"}, MinVersion: tls.VersionTLS12,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if client == nil {
				return &tls.Certificate{}, nil
			}
			return client, nil
		}})
	_ = c.SetDeadline(time.Now().Add(10 * time.Second)) // a guard against hanging, not a measurement
	if err := c.Handshake(); err != nil {
		return err
	}
	_, err = c.Read(make([]byte, 1))
	return err
}

// waitFor polls cond a bounded number of times (the server counts a
// rejection right after the client has seen it).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if cond() {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("condition not reached")
}
