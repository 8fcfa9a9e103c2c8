// Command client calls the example's Greeter through kubedisco: the
// kubedisco:/// resolver follows the Service's endpoints live from the local
// agent, and the kubedisco_weighted balancer spreads the calls by weight
// and topology tier. It prints what the agent serves for the Service, then
// who answered each call.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
	"github.com/kubedisco/kubedisco/clients/go/kdgrpc" // registers kubedisco:/// and kubedisco_weighted
	"github.com/kubedisco/kubedisco/examples/go-grpc/greeter"
)

func main() {
	target := flag.String("target", "kubedisco:///greeter.demo:grpc", "gRPC target")
	calls := flag.Int("n", 12, "number of calls (0: only show the endpoints)")
	interval := flag.Duration("interval", 0, "pause between calls (try 500ms, and edit the manifests meanwhile)")
	flag.Parse()
	ctx := context.Background()

	// Discovery without gRPC: the plain helper (KUBEDISCO_ADDR's agent).
	u, err := url.Parse(*target)
	if err != nil {
		log.Fatal(err)
	}
	t, err := kdgrpc.ParseTarget(*u)
	if err != nil {
		log.Fatal(err)
	}
	endpoints, err := kubedisco.Lookup(ctx, t.Service.String())
	switch {
	case errors.Is(err, kubedisco.ErrServiceNotFound):
		log.Fatalf("lookup %s: the agent does not serve this Service: %v", t.Service, err)
	case err != nil:
		log.Fatalf("lookup %s: %v (is the agent running? KUBEDISCO_ADDR=%s)", t.Service, err, kubedisco.AddrFromEnv())
	}
	fmt.Printf("%s: %d endpoints\n", t.Service, len(endpoints))
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  ADDRESS\tZONE\tWEIGHT\tPRIORITY")
	for _, e := range endpoints {
		addr, ok := e.Address(t.Port)
		if !ok {
			addr = e.IP.String() + " (no port " + t.Port + ")"
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\n", addr, e.Zone, e.Weight, e.Priority)
	}
	tw.Flush()
	if *calls == 0 {
		return
	}

	// gRPC: the resolver and the weighted balancer.
	conn, err := grpc.NewClient(*target,
		grpc.WithDefaultServiceConfig(kdgrpc.ServiceConfig),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	client := greeter.NewClient(conn)
	answers := map[string]int{}
	for i := range *calls {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		reply, err := client.SayHello(ctx, fmt.Sprintf("call %d", i+1), grpc.WaitForReady(true))
		cancel()
		if err != nil {
			log.Fatalf("call %d: %v", i+1, err)
		}
		fmt.Println(reply)
		_, from, _ := strings.Cut(reply, ", from ")
		answers[from]++
		if *interval > 0 {
			time.Sleep(*interval)
		}
	}
	var names []string
	for n := range answers {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Printf("\n%d calls:", *calls)
	for _, n := range names {
		fmt.Printf(" %s=%d", n, answers[n])
	}
	fmt.Println()
}
