// Command server is the example's Greeter backend: a plain gRPC server
// (Greeter and the standard health service) that says who it is in every
// answer. It knows nothing about kubedisco: discovery is the client's side.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"os/signal"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/kubedisco/kubedisco/examples/go-grpc/greeter"
)

type server struct{ name string }

func (s server) SayHello(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	return wrapperspb.String(fmt.Sprintf("hello %s, from %s", in.GetValue(), s.name)), nil
}

func main() {
	listen := flag.String("listen", "127.0.0.2:9090", "address to serve on")
	name := flag.String("name", "", "name to answer with (default: the listen address)")
	flag.Parse()
	if *name == "" {
		*name = *listen
	}

	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("listen: %v", err)
	}
	srv := grpc.NewServer()
	greeter.Register(srv, server{name: *name})
	healthpb.RegisterHealthServer(srv, health.NewServer())

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-stop
		srv.GracefulStop()
	}()
	log.Printf("greeter %s serving on %s", *name, lis.Addr())
	if err := srv.Serve(lis); err != nil {
		log.Fatal(err)
	}
}
