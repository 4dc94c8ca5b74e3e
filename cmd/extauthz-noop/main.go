// Command extauthz-noop is the benchmark floor: an Envoy ext_authz gRPC
// server that answers every Check with OK and does no work, with the same
// grpc-go server options as extauthz. It prints "listening <addr>" as its
// first line on stdout once the listener is bound.
package main

import (
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/extauthz/extauthz/internal/loadtest/noopsrv"
)

func main() {
	addr := flag.String("grpc-addr", "127.0.0.1:0", "gRPC listen address (host:port; port 0 picks a free port)")
	flag.Parse()

	lis, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "extauthz-noop: grpc-addr:", err)
		os.Exit(1)
	}
	g := noopsrv.New()
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
