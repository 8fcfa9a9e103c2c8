package xdstest

// Benchmarks, skipped unless KUBEDISCO_XDS_BENCH=1 (numbers, not pass or
// fail; results and command in bench/RESULTS.md):
//   - TestBenchPickerLatency: manifest write → grpc-go's picker sends
//     calls to the new endpoint, p50/p99 over N changes;
//   - TestBenchMemoryPerClients: the agent's VmRSS before and after 1 000
//     ADS streams (each its own connection) watch 10 Services each.

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discovery "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func benchOnly(t *testing.T) {
	if os.Getenv("KUBEDISCO_XDS_BENCH") != "1" {
		t.Skip("a benchmark: set KUBEDISCO_XDS_BENCH=1")
	}
}

func TestBenchPickerLatency(t *testing.T) {
	benchOnly(t)
	changes := 50
	if n, err := strconv.Atoi(os.Getenv("KUBEDISCO_XDS_BENCH_CHANGES")); err == nil {
		changes = n
	}
	a := startAgent(t)
	x, y := startBackend(t, "127.0.31.2"), startBackend(t, "127.0.31.3")
	a.write("echo.yaml", manifest(namespace, "echo", nil, x.ep(0, "")))
	conn := dial(t, a, "echo."+namespace+":grpc")
	eventually(t, conn, "first", x)
	var took []time.Duration
	cur, next := x, y
	for range changes {
		start := time.Now()
		a.write("echo.yaml", manifest(namespace, "echo", nil, next.ep(0, "")))
		for {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			addr, err := call(ctx, conn)
			cancel()
			if err == nil && addr == next.addr.String() {
				break
			}
			if time.Since(start) > 20*time.Second {
				t.Fatalf("no call to the new endpoint 20s after the write")
			}
		}
		took = append(took, time.Since(start))
		cur, next = next, cur
	}
	slices.Sort(took)
	q := func(p float64) time.Duration { return took[int(p*float64(len(took)-1))] }
	t.Logf("manifest write → new picker over %d changes (agent polls manifests every 100ms): p50 %v, p99 %v, max %v",
		changes, q(0.5).Round(time.Millisecond), q(0.99).Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
}

// rss is the agent's VmRSS in KiB.
func (a *agent) rss() int {
	a.t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", a.cmd.Process.Pid))
	if err != nil {
		a.t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kib, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
			return kib
		}
	}
	a.t.Fatal("no VmRSS")
	return 0
}

const (
	listenerType  = "type.googleapis.com/envoy.config.listener.v3.Listener"
	clusterType   = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	endpointsType = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)

// watch opens one ADS stream on a connection of its own, asks for the
// Listener, Cluster and assignment of every name, ACKs each response and
// reports on ready once all three types have been answered; it keeps the
// stream open until ctx ends.
func watch(ctx context.Context, addr, node string, names []string, ready chan<- error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		ready <- err
		return
	}
	defer conn.Close()
	stream, err := discovery.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		ready <- err
		return
	}
	nodeID := &corev3.Node{Id: node}
	for _, typ := range []string{listenerType, clusterType, endpointsType} {
		if err := stream.Send(&discovery.DiscoveryRequest{Node: nodeID, TypeUrl: typ, ResourceNames: names}); err != nil {
			ready <- err
			return
		}
	}
	answered := map[string]bool{}
	reported := false
	for {
		resp, err := stream.Recv()
		if err != nil {
			if !reported {
				ready <- err
			}
			return
		}
		if err := stream.Send(&discovery.DiscoveryRequest{TypeUrl: resp.TypeUrl, ResourceNames: names,
			VersionInfo: resp.VersionInfo, ResponseNonce: resp.Nonce}); err != nil {
			if !reported {
				ready <- err
			}
			return
		}
		answered[resp.TypeUrl] = true
		if !reported && len(answered) == 3 {
			reported = true
			ready <- nil
		}
	}
}

func TestBenchMemoryPerClients(t *testing.T) {
	benchOnly(t)
	clients := 1000
	if n, err := strconv.Atoi(os.Getenv("KUBEDISCO_XDS_BENCH_CLIENTS")); err == nil {
		clients = n
	}
	const services = 10
	a := startAgent(t)
	var names []string
	for i := range services {
		var eps []endpoint
		for j := range 3 {
			eps = append(eps, startBackend(t, fmt.Sprintf("127.0.32.%d", 2+i*3+j)).ep(1+j, ""))
		}
		name := fmt.Sprintf("svc%d", i)
		a.write(name+".yaml", manifest(namespace, name, nil, eps...))
		names = append(names, name+"."+namespace+":grpc")
	}
	// Every Service in the index before the baseline: one client sees all.
	probeCtx, cancelProbe := context.WithTimeout(context.Background(), 30*time.Second)
	for _, name := range names {
		conn := dial(t, a, name)
		if _, err := call(probeCtx, conn); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		conn.Close()
	}
	cancelProbe()
	before := a.rss()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready := make(chan error, clients)
	start := time.Now()
	for i := range clients {
		go watch(ctx, a.xdsAddr, fmt.Sprintf("bench-%d", i), names, ready)
	}
	for range clients {
		select {
		case err := <-ready:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(60 * time.Second):
			t.Fatal("clients not all answered within 60s")
		}
	}
	connected := time.Since(start)
	after := a.rss()
	t.Logf("%d ADS clients × %d Services (Listener+Cluster+assignment each, ACKed), all answered in %v: agent VmRSS %d KiB → %d KiB, +%d KiB (%.1f KiB per client)",
		clients, services, connected.Round(time.Millisecond), before, after, after-before, float64(after-before)/float64(clients))
}
