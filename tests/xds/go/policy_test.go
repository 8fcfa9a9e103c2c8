package xdstest

// The Service's kubedisco.io/lb-policy, hash-header and outlier-*
// annotations, served by the agent as the Cluster's lb_policy, the
// route's hash policy and the Cluster's outlier_detection, applied by
// grpc-go's own balancers.

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// keyed maps each key to the address that answered an RPC carrying it in
// header x-user; ok is false if any RPC failed.
func keyed(conn *grpc.ClientConn, keys []string) (map[string]string, bool) {
	out := make(map[string]string, len(keys))
	for _, key := range keys {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		addr, err := call(metadata.AppendToOutgoingContext(ctx, "x-user", key), conn)
		cancel()
		if err != nil {
			return out, false
		}
		out[key] = addr
	}
	return out, true
}

// ring_hash on header x-user: a key stays on one endpoint call after call;
// when an endpoint is removed from the Service, every key it had moves
// and most others stay. Not all of them: gRPC (like Envoy) sizes the ring
// by the number of endpoints, so the survivors get more ring entries and
// some take keys from each other; the share is logged and bounded well
// below what re-hashing modulo the endpoint count would move (~2/3).
func TestRingHashKeepsKeysOnOneEndpoint(t *testing.T) {
	a := startAgent(t)
	var backends []*backend
	var eps []endpoint
	for i := range 4 {
		b := startBackend(t, fmt.Sprintf("127.0.26.%d", 2+i))
		backends = append(backends, b)
		eps = append(eps, b.ep(0, ""))
	}
	ring := map[string]string{"kubedisco.io/lb-policy": "ring_hash", "kubedisco.io/hash-header": "x-user"}
	a.write("echo.yaml", manifest(namespace, "echo", ring, eps...))
	conn := dial(t, a, "echo."+namespace+":grpc")

	keys := make([]string, 400)
	for i := range keys {
		keys[i] = fmt.Sprintf("user-%d", i)
	}
	// Until every backend owns some keys (ring_hash connects lazily, and
	// the client may still have the first round-robin-free config).
	var before map[string]string
	deadline := time.Now().Add(20 * time.Second)
	for {
		m, ok := keyed(conn, keys)
		owners := map[string]bool{}
		for _, addr := range m {
			owners[addr] = true
		}
		if ok && len(owners) == len(backends) {
			before = m
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("keys not spread over all %d backends within 20s: %d owners, ok=%v", len(backends), len(owners), ok)
		}
	}
	for round := range 3 {
		again, ok := keyed(conn, keys)
		if !ok {
			t.Fatalf("round %d: an RPC failed", round)
		}
		for _, key := range keys {
			if again[key] != before[key] {
				t.Fatalf("round %d: key %s moved from %s to %s with nothing changed", round, key, before[key], again[key])
			}
		}
	}

	removed := backends[0].addr.String()
	a.write("echo.yaml", manifest(namespace, "echo", ring, eps[1:]...))
	var after map[string]string
	deadline = time.Now().Add(20 * time.Second)
	for {
		m, ok := keyed(conn, keys)
		gone := ok
		for _, addr := range m {
			if addr == removed {
				gone = false
			}
		}
		if gone {
			after = m
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("keys still on the removed endpoint %s 20s after its removal", removed)
		}
	}
	var ownKeys, others, othersMoved int
	for _, key := range keys {
		if before[key] == removed {
			ownKeys++
			continue
		}
		others++
		if after[key] != before[key] {
			othersMoved++
		}
	}
	share := float64(othersMoved) / float64(others)
	t.Logf("removed endpoint's %d keys moved; %d of the other %d keys moved (%.1f%%)", ownKeys, othersMoved, others, 100*share)
	if ownKeys == 0 || share > 1.0/3 {
		t.Fatalf("%d of %d keys of the remaining endpoints moved (%.1f%%), want at most a third", othersMoved, others, 100*share)
	}
	// The new placement is as sticky as the old one.
	again, ok := keyed(conn, keys)
	if !ok {
		t.Fatal("an RPC failed after the removal")
	}
	for _, key := range keys {
		if again[key] != after[key] {
			t.Fatalf("after the removal, key %s moved from %s to %s", key, after[key], again[key])
		}
	}
}

// failingHealth answers every Check with UNAVAILABLE: a server that is up
// (its connection READY) but fails its calls.
type failingHealth struct {
	healthpb.UnimplementedHealthServer
}

func (failingHealth) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	return nil, status.Error(codes.Unavailable, "failing on purpose")
}

func startFailingBackend(t testing.TB, ip string) *backend {
	t.Helper()
	return serveHealth(t, ip, failingHealth{})
}

// failures makes n RPCs and returns how many failed (every RPC is made).
func failures(conn *grpc.ClientConn, n int) int {
	failed := 0
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if _, err := call(ctx, conn); err != nil {
			failed++
		}
		cancel()
	}
	return failed
}

// Failure-percentage ejection (gRFC A50) from the outlier-* annotations:
// one server of five fails every call; after an interval it is ejected
// and ≥ 99% of RPCs succeed. Five servers because A50's
// failure_percentage_minimum_hosts default (which kubedisco leaves to
// the client, as its Go client does) is 5.
func TestOutlierDetectionEjectsAFailingServer(t *testing.T) {
	a := startAgent(t)
	var eps []endpoint
	for i := range 4 {
		eps = append(eps, startBackend(t, fmt.Sprintf("127.0.27.%d", 2+i)).ep(0, ""))
	}
	bad := startFailingBackend(t, "127.0.27.9")
	eps = append(eps, bad.ep(0, ""))
	a.write("echo.yaml", manifest(namespace, "echo", map[string]string{
		"kubedisco.io/outlier-failure-percentage":   "50",
		"kubedisco.io/outlier-interval":             "1s",
		"kubedisco.io/outlier-base-ejection-time":   "60s",
		"kubedisco.io/outlier-max-ejection-percent": "20",
	}, eps...))
	conn := dial(t, a, "echo."+namespace+":grpc")

	// Before ejection about a fifth of the calls fail; poll (bounded)
	// for a window of 500 with no failure: the failing server ejected.
	start := time.Now()
	sawFailures := false
	for {
		failed := failures(conn, 500)
		if failed > 0 {
			sawFailures = true
		}
		if failed == 0 && sawFailures {
			break
		}
		if time.Since(start) > 30*time.Second {
			t.Fatalf("still %d of 500 RPCs failing 30s on (sawFailures=%v)", failed, sawFailures)
		}
	}
	t.Logf("failing server ejected after %v", time.Since(start))

	const n = 3000
	failed := failures(conn, n)
	t.Logf("after the ejection: %d of %d RPCs failed", failed, n)
	if float64(n-failed) < 0.99*n {
		t.Fatalf("%d of %d RPCs failed after the ejection, want ≤ 1%%", failed, n)
	}
}
