// Command go-resolver resolves names through one DNS server with Go's own
// resolver (net.Resolver with PreferGo and a custom dialer), the way Go
// services do, and prints what it got:
//
//	go run . 127.0.0.1:1053 orders.shop.svc.cluster.local _grpc._tcp.orders.shop.svc.cluster.local [N]
//
// prints "host <ip>" per address and "srv <target> <port> <priority> <weight>"
// per SRV record (in the order Go returns them: by priority, weight-shuffled).
// With N, it then looks the SRV name up N more times and prints
// "first <target> <count>": how often each target came first, which is how a
// client that dials the first record spreads its connections.
//
//	go-resolver -system NAME
//
// looks NAME up as a program in a pod does: Go's default resolver, reading
// /etc/resolv.conf (search list, ndots), pure Go or cgo as GODEBUG=netdns
// says, and prints "host <ip>" per address.
package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "-system" {
		lookupSystem(os.Args[2])
		return
	}
	if len(os.Args) != 4 && len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: go-resolver SERVER HOST SRVNAME [N] | go-resolver -system NAME")
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
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
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
	if len(os.Args) == 5 {
		n, err := strconv.Atoi(os.Args[4])
		if err != nil || n < 1 {
			fmt.Fprintln(os.Stderr, "N must be a positive integer")
			os.Exit(2)
		}
		first := map[string]int{}
		for i := 0; i < n; i++ {
			_, records, err := resolver.LookupSRV(ctx, "", "", strings.TrimSuffix(srvName, "."))
			if err != nil || len(records) == 0 {
				fmt.Fprintln(os.Stderr, "LookupSRV:", err)
				os.Exit(1)
			}
			first[records[0].Target]++
		}
		for target, count := range first {
			fmt.Println("first", target, count)
		}
	}
}

func lookupSystem(name string) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, name)
	if err != nil {
		fmt.Fprintln(os.Stderr, "LookupHost:", err)
		os.Exit(1)
	}
	for _, a := range addrs {
		fmt.Println("host", a)
	}
}
