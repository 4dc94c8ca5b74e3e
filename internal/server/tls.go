package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"
)

// DefaultTLSCheckEvery is how often, at most, the certificate, key and client
// CA files are checked for changes (on a handshake).
const DefaultTLSCheckEvery = time.Second

// TLSFiles serves TLS from certificate, key and client CA files and follows
// their rotation without a restart: on a handshake, at most every CheckEvery,
// it compares the files' sizes and modification times (a Kubernetes Secret's
// symlink swap changes them) and rereads them when they changed. A set that
// does not load (a half-written pair) is logged and the previous one keeps
// serving until the files change again.
type TLSFiles struct {
	CertFile, KeyFile, ClientCAFile string
	CheckEvery                      time.Duration    // default DefaultTLSCheckEvery; < 0 checks on every handshake
	Now                             func() time.Time // default time.Now
	Log                             *slog.Logger     // reload outcomes; default slog.Default()

	mu        sync.Mutex
	cur       *tls.Config // served to each client (grpc clones it)
	fp        string      // fingerprint of the files cur (or the last failed attempt) came from
	lastCheck time.Time
}

// NewTLSFiles loads the files once; an error names the setting.
func NewTLSFiles(certFile, keyFile, clientCA string) (*TLSFiles, error) {
	f := &TLSFiles{CertFile: certFile, KeyFile: keyFile, ClientCAFile: clientCA}
	fp := f.fingerprint()
	tc, err := f.load()
	if err != nil {
		return nil, err
	}
	f.cur, f.fp = tc, fp
	return f, nil
}

// Config is the server config: every handshake gets the current files' config.
func (f *TLSFiles) Config() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetConfigForClient: f.forClient}
}

func (f *TLSFiles) forClient(*tls.ClientHelloInfo) (*tls.Config, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	every := f.CheckEvery
	if every == 0 {
		every = DefaultTLSCheckEvery
	}
	if every > 0 && !f.lastCheck.IsZero() && now.Sub(f.lastCheck) < every {
		return f.cur, nil
	}
	f.lastCheck = now
	if fp := f.fingerprint(); fp != f.fp {
		f.fp = fp
		tc, err := f.load()
		if err != nil {
			f.log().Error("tls: rotated files do not load; the previous certificate keeps serving", "error", err.Error())
		} else {
			f.cur = tc
			f.log().Info("tls: certificate files reloaded", "cert", f.CertFile, "client_ca", f.ClientCAFile)
		}
	}
	return f.cur, nil
}

func (f *TLSFiles) now() time.Time {
	if f.Now != nil {
		return f.Now()
	}
	return time.Now()
}

func (f *TLSFiles) log() *slog.Logger {
	if f.Log != nil {
		return f.Log
	}
	return slog.Default()
}

func (f *TLSFiles) fingerprint() string {
	var b strings.Builder
	for _, p := range []string{f.CertFile, f.KeyFile, f.ClientCAFile} {
		if p == "" {
			continue
		}
		if st, err := os.Stat(p); err == nil {
			fmt.Fprintf(&b, "%s\x00%d\x00%d\x00", p, st.Size(), st.ModTime().UnixNano())
		} else {
			fmt.Fprintf(&b, "%s\x00missing\x00", p)
		}
	}
	return b.String()
}

func (f *TLSFiles) load() (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("tls-cert/tls-key: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if f.ClientCAFile != "" {
		pem, err := os.ReadFile(f.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls-client-ca: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls-client-ca: %s holds no PEM certificate", f.ClientCAFile)
		}
		tc.ClientCAs, tc.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// TLSConfig builds the gRPC server TLS config; with a client CA it requires
// and verifies client certificates (mTLS). The files are reread when they
// change (TLSFiles).
func TLSConfig(certFile, keyFile, clientCA string) (*tls.Config, error) {
	f, err := NewTLSFiles(certFile, keyFile, clientCA)
	if err != nil {
		return nil, err
	}
	return f.Config(), nil
}

// Reasons a TLS handshake is rejected (the label of
// extauthz_tls_handshake_failures_total).
const (
	TLSClientCertMissing = "client_cert_missing" // mTLS: no client certificate
	TLSClientCertInvalid = "client_cert_invalid" // mTLS: not signed by the client CA, expired, wrong usage
	TLSHandshakeFailed   = "handshake_failed"    // anything else (plaintext client, no common version or cipher)
)

// TLSRejectReason classifies a server handshake error.
func TLSRejectReason(err error) string {
	var cv *tls.CertificateVerificationError
	switch {
	case errors.As(err, &cv):
		return TLSClientCertInvalid
	case strings.Contains(err.Error(), "didn't provide a certificate"):
		return TLSClientCertMissing
	}
	return TLSHandshakeFailed
}

// observedCreds reports every failed server handshake to onReject; gRPC
// itself only logs them through grpclog, so they would be neither in the
// JSON log nor counted.
type observedCreds struct {
	credentials.TransportCredentials
	onReject func(reason string, remote net.Addr, err error)
}

// ObserveHandshakes wraps server transport credentials so that every
// rejected handshake is reported to onReject with its reason.
func ObserveHandshakes(c credentials.TransportCredentials, onReject func(reason string, remote net.Addr, err error)) credentials.TransportCredentials {
	return observedCreds{TransportCredentials: c, onReject: onReject}
}

func (c observedCreds) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		c.onReject(TLSRejectReason(err), raw.RemoteAddr(), err)
	}
	return conn, info, err
}

func (c observedCreds) Clone() credentials.TransportCredentials {
	return observedCreds{TransportCredentials: c.TransportCredentials.Clone(), onReject: c.onReject}
}
