// Command xdsprobe is grpc-go's own xDS client for the Rust integration
// tests (tests/it/xds.rs), which run a real agent on the real test control
// plane. It serves grpc-go health servers on the loopback addresses given,
// dials xds:///<target> (bootstrap from $GRPC_XDS_BOOTSTRAP_CONFIG, as an
// app would have it) and answers commands read from stdin, one per line:
//
//	spread N          N RPCs; prints "counts <addr>=<n> ... failed=<k>"
//	until A,B,... S   windows of 200 RPCs until one is served by exactly the
//	                  addresses A,B,... (at most S seconds); prints
//	                  "reached <ms>" or "timeout <last window>"
//
// Every RPC has a 5s deadline; a failed one is counted, not retried.
//
// The API server refuses loopback addresses in EndpointSlices, so the Pods
// are Ready at other addresses and -map rewrites them when dialling (e.g.
// "10.133.=127.33." dials 10.133.7.1 as 127.33.7.1); a dial to an address
// that is not loopback after that is refused, so traffic stays on loopback.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"log"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	_ "google.golang.org/grpc/xds" // the xds:/// resolver and its balancers
)

func main() {
	serve := flag.String("serve", "", "comma-separated loopback ip:port to serve the health service on")
	target := flag.String("target", "", "xDS target, <svc>.<ns>:<port>")
	mapping := flag.String("map", "", "<from-prefix>=<to-prefix>: endpoint addresses rewritten before dialling")
	flag.Parse()
	if *target == "" {
		log.Fatal("-target is required")
	}
	for _, addr := range strings.Split(*serve, ",") {
		if addr == "" {
			continue
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			log.Fatal(err)
		}
		s := grpc.NewServer()
		healthpb.RegisterHealthServer(s, health.NewServer())
		go func() { _ = s.Serve(l) }()
	}
	from, to, _ := strings.Cut(*mapping, "=")
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		if from != "" && strings.HasPrefix(addr, from) {
			addr = to + strings.TrimPrefix(addr, from)
		}
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("refusing to dial %s: not a loopback address", addr)
		}
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}
	conn, err := grpc.NewClient("xds:///"+*target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(dial))
	if err != nil {
		log.Fatal(err)
	}
	defer conn.Close()
	client := healthpb.NewHealthClient(conn)
	fmt.Println("ready")

	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		fields := strings.Fields(in.Text())
		switch {
		case len(fields) == 2 && fields[0] == "spread":
			n, err := strconv.Atoi(fields[1])
			if err != nil {
				log.Fatal(err)
			}
			counts, failed := spread(client, n)
			fmt.Printf("counts %s failed=%d\n", format(counts), failed)
		case len(fields) == 3 && fields[0] == "until":
			seconds, err := strconv.Atoi(fields[2])
			if err != nil {
				log.Fatal(err)
			}
			fmt.Println(until(client, strings.Split(fields[1], ","), time.Duration(seconds)*time.Second))
		default:
			log.Fatalf("unknown command %q", in.Text())
		}
	}
}

// spread makes n RPCs and counts them by the address that answered.
func spread(client healthpb.HealthClient, n int) (map[string]int, int) {
	counts, failed := map[string]int{}, 0
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		var p peer.Peer
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
		cancel()
		if err != nil {
			failed++
			continue
		}
		counts[p.Addr.String()]++
	}
	return counts, failed
}

func until(client healthpb.HealthClient, want []string, limit time.Duration) string {
	start := time.Now()
	last := ""
	for time.Since(start) < limit {
		counts, failed := spread(client, 200)
		last = fmt.Sprintf("%s failed=%d", format(counts), failed)
		if failed == 0 && len(counts) == len(want) && all(counts, want) {
			return fmt.Sprintf("reached %d", time.Since(start).Milliseconds())
		}
	}
	return "timeout " + last
}

func all(counts map[string]int, want []string) bool {
	for _, addr := range want {
		if counts[addr] == 0 {
			return false
		}
	}
	return true
}

func format(counts map[string]int) string {
	var parts []string
	for addr, n := range counts {
		parts = append(parts, fmt.Sprintf("%s=%d", addr, n))
	}
	sort.Strings(parts)
	return strings.Join(parts, " ")
}
