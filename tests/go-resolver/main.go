// Command go-resolver resolves names through one DNS server with Go's own
// resolver (net.Resolver with PreferGo and a custom dialer), the way Go
// services do, and prints what it got:
//
//	go run . 127.0.0.1:1053 orders.shop.svc.cluster.local _grpc._tcp.orders.shop.svc.cluster.local
//
// prints "host <ip>" per address and "srv <target> <port> <priority> <weight>"
// per SRV record (in the order Go returns them: by priority, weight-shuffled).
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: go-resolver SERVER HOST SRVNAME")
		os.Exit(2)
	}
	server, host, srvName := os.Args[1], os.Args[2], os.Args[3]
	resolver := &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, server)
		},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	addrs, err := resolver.LookupHost(ctx, host)
	if err != nil {
		fmt.Fprintln(os.Stderr, "LookupHost:", err)
		os.Exit(1)
	}
	for _, a := range addrs {
		fmt.Println("host", a)
	}
	// LookupSRV("", "", name) looks the name up as given.
	_, records, err := resolver.LookupSRV(ctx, "", "", strings.TrimSuffix(srvName, "."))
	if err != nil {
		fmt.Fprintln(os.Stderr, "LookupSRV:", err)
		os.Exit(1)
	}
	for _, r := range records {
		fmt.Println("srv", r.Target, r.Port, r.Priority, r.Weight)
	}
}
