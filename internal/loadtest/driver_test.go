package loadtest

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/structpb"
)

// scriptedServer answers by path: /slow-fail denies internal_error after
// slow, /fast-fail denies internal_error at once, /allow allows.
type scriptedServer struct {
	authv3.UnimplementedAuthorizationServer
	slow time.Duration
}

func (s scriptedServer) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	deny := func(reason string) *authv3.CheckResponse {
		md, _ := structpb.NewStruct(map[string]any{"reason": reason})
		return &authv3.CheckResponse{
			Status: &rpcstatus.Status{Code: int32(codes.PermissionDenied)},
			HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
				Status: &typev3.HttpStatus{Code: typev3.StatusCode_InternalServerError},
			}},
			DynamicMetadata: md,
		}
	}
	switch req.GetAttributes().GetRequest().GetHttp().GetPath() {
	case "/slow-fail":
		select {
		case <-time.After(s.slow):
		case <-ctx.Done():
		}
		return deny(ReasonInternalError), nil
	case "/fast-fail":
		return deny(ReasonInternalError), nil
	}
	return &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(codes.OK)},
		HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}}}, nil
}

// TestDriveSeparatesDeadlineDenies: an internal_error deny that took at
// least the server's deadline is counted apart (Deadline), not as a wrong
// decision; a quick internal_error deny and an allow where a deny was
// expected stay Unexpected; answers slower than LateAfter are Late.
func TestDriveSeparatesDeadlineDenies(t *testing.T) {
	const deadline = 2 * time.Second // far above any scheduling delay of the quick answers
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	authv3.RegisterAuthorizationServer(g, scriptedServer{slow: deadline})
	go func() { _ = g.Serve(l) }()
	defer g.Stop()
	p, err := Dial(l.Addr().String(), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()

	m := newMix("scripted", []Case{
		{Name: "slow_fail", Method: "GET", Path: "/slow-fail", Want: 200},
		{Name: "fast_fail", Method: "GET", Path: "/fast-fail", Want: 200},
		{Name: "allowed_deny", Method: "GET", Path: "/allow", Want: 403},
		{Name: "allow", Method: "GET", Path: "/allow", Want: 200},
	}, []int{1, 1, 1, 1})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	o := Drive{Mix: m, Concurrency: 4, Requests: 8, MaxDuration: 20 * time.Second, CheckDecisions: true,
		FailClosedAfter: deadline, LateAfter: deadline / 2}.Run(ctx, p)
	if o.Errors != 0 || o.Sent != 8 {
		t.Fatalf("outcome %+v", o)
	}
	if o.Deadline != 2 || o.Unexpected != 4 || o.Late != 2 {
		t.Fatalf("deadline %d (want 2), unexpected %d (want 4), late %d (want 2): %+v", o.Deadline, o.Unexpected, o.Late, o)
	}
	for _, s := range o.DeadlineSamples {
		if !strings.HasPrefix(s, "slow_fail: got 500 (reason \"internal_error\")") {
			t.Errorf("deadline sample %q", s)
		}
	}
	var fast, allowed int
	for _, s := range o.UnexpectedSamples {
		switch {
		case strings.HasPrefix(s, "fast_fail: got 500 (reason \"internal_error\")"):
			fast++
		case strings.HasPrefix(s, "allowed_deny: got 200"):
			allowed++
		default:
			t.Errorf("unexpected sample %q", s)
		}
	}
	if fast == 0 || allowed == 0 {
		t.Errorf("samples %q: want both the quick internal_error and the wrong allow", o.UnexpectedSamples)
	}

	// Without a deadline (the plugin, the no-op server) every deny that is
	// not the case's is unexpected.
	o = Drive{Mix: m, Concurrency: 4, Requests: 4, MaxDuration: 20 * time.Second, CheckDecisions: true}.Run(ctx, p)
	if o.Deadline != 0 || o.Unexpected != 3 || o.Late != 0 {
		t.Fatalf("no deadline: %+v", o)
	}
}

// TestExtauthzDeadline: the driver reads extauthz's deadline from the flags
// it starts it with, the earlier of the two timeouts.
func TestExtauthzDeadline(t *testing.T) {
	t.Setenv("EXTAUTHZ_EVAL_TIMEOUT", "")
	t.Setenv("EXTAUTHZ_CHECK_TIMEOUT", "")
	for _, c := range []struct {
		args []string
		want time.Duration
	}{
		{nil, 100 * time.Millisecond},
		{[]string{"--decision-log=none", "--eval-timeout=150ms"}, 150 * time.Millisecond},
		{[]string{"--check-timeout", "80ms", "--eval-timeout", "40ms"}, 40 * time.Millisecond},
	} {
		if got := extauthzDeadline(c.args); got != c.want {
			t.Errorf("%q: %s, want %s", c.args, got, c.want)
		}
	}
}
