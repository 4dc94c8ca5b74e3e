// Command extauthz-noop is the benchmark floor: an Envoy ext_authz gRPC
// server that answers every Check with OK and does no work, with the same
// grpc-go server options as extauthz. It prints "listening <addr>" as its
// first line on stdout once the listener is bound. With --reply identity it
// answers every Check with a fixed allow shaped like extauthz's (identity
// headers, credential removals, metadata), still doing no work.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/extauthz/extauthz/internal/loadtest/noopsrv"
)

func main() {
	addr := flag.String("grpc-addr", "127.0.0.1:0", "gRPC listen address (host:port; port 0 picks a free port)")
	reply := flag.String("reply", "empty", "the OK every Check gets: empty, or identity (shaped like extauthz's allow for the demo key)")
	flag.Parse()
	var r *authv3.CheckResponse
	switch *reply {
	case "empty":
	case "identity":
		r = noopsrv.IdentityReply()
	default:
		fmt.Fprintf(os.Stderr, "extauthz-noop: reply: %q is not one of empty, identity\n", *reply)
		os.Exit(2)
	}

	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "extauthz-noop: grpc-addr:", err)
		os.Exit(1)
	}
	g := noopsrv.New(r)
	fmt.Printf("listening %s\n", lis.Addr())

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sig
		g.Stop()
	}()
	if err := g.Serve(lis); err != nil {
		fmt.Fprintln(os.Stderr, "extauthz-noop:", err)
		os.Exit(1)
	}
}
