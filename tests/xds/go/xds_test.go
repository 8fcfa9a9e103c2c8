package xdstest

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"
)

const namespace = "e2e"

// backend is a grpc-go server (health service only) on a loopback address.
type backend struct {
	addr   *net.TCPAddr
	server *grpc.Server
}

func startBackend(t testing.TB, ip string) *backend {
	t.Helper()
	return serveHealth(t, ip, health.NewServer())
}

// serveHealth serves h as the health service on a loopback address.
func serveHealth(t testing.TB, ip string, h healthpb.HealthServer) *backend {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer()
	healthpb.RegisterHealthServer(s, h)
	go func() { _ = s.Serve(l) }()
	t.Cleanup(s.Stop)
	return &backend{addr: l.Addr().(*net.TCPAddr), server: s}
}

func (b *backend) ep(weight int, zone string) endpoint {
	return endpoint{addr: b.addr, weight: weight, zone: zone}
}

// dial connects to xds:///<target> with grpc-go's xDS resolver, bootstrapped
// to the agent.
func dial(t testing.TB, a *agent, target string) *grpc.ClientConn {
	t.Helper()
	resolver, err := xds.NewXDSResolverWithConfigForTesting(a.bootstrap())
	if err != nil {
		t.Fatal(err)
	}
	conn, err := grpc.NewClient("xds:///"+target,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithResolvers(resolver))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// call makes one RPC and returns the address that answered it.
func call(ctx context.Context, conn *grpc.ClientConn) (string, error) {
	var p peer.Peer
	_, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
	if err != nil {
		return "", err
	}
	return p.Addr.String(), nil
}

// spread makes n RPCs and counts them by the address that answered.
// A failed RPC ends the count (the caller retries or fails).
func spread(t testing.TB, conn *grpc.ClientConn, n int, timeout time.Duration) (map[string]int, int) {
	t.Helper()
	counts, failed := map[string]int{}, 0
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		addr, err := call(ctx, conn)
		cancel()
		if err != nil {
			failed++
			return counts, failed
		}
		counts[addr]++
	}
	return counts, failed
}

// eventually polls (bounded) until a window of 200 RPCs is answered by
// exactly the addresses in want, and returns how long that took.
func eventually(t testing.TB, conn *grpc.ClientConn, what string, want ...*backend) time.Duration {
	t.Helper()
	start := time.Now()
	var last map[string]int
	for time.Since(start) < 20*time.Second {
		counts, failed := spread(t, conn, 200, 500*time.Millisecond)
		last = counts
		if failed == 0 && len(counts) == len(want) {
			ok := true
			for _, b := range want {
				if counts[b.addr.String()] == 0 {
					ok = false
				}
			}
			if ok {
				return time.Since(start)
			}
		}
	}
	t.Fatalf("%s: not served by exactly %d backends within 20s; last window: %v", what, len(want), last)
	return 0
}

func TestWeightsAreHonoured(t *testing.T) {
	a := startAgent(t)
	light, heavy := startBackend(t, "127.0.20.2"), startBackend(t, "127.0.20.3")
	a.write("echo.yaml", manifest(namespace, "echo", nil, light.ep(1, ""), heavy.ep(3, "")))
	conn := dial(t, a, "echo."+namespace+":grpc")
	eventually(t, conn, "both backends", light, heavy)

	const n = 20000
	counts, failed := spread(t, conn, n, 5*time.Second)
	if failed != 0 {
		t.Fatalf("%d of %d RPCs failed", failed, n)
	}
	lightShare := float64(counts[light.addr.String()]) / n
	heavyShare := float64(counts[heavy.addr.String()]) / n
	t.Logf("weights 1:3 over %d RPCs: %.4f / %.4f", n, lightShare, heavyShare)
	if lightShare < 0.23 || lightShare > 0.27 || heavyShare < 0.73 || heavyShare > 0.77 {
		t.Fatalf("shares %.4f / %.4f, want 0.25 / 0.75 within 0.02", lightShare, heavyShare)
	}
}

func TestAddAndRemoveAreFollowed(t *testing.T) {
	a := startAgent(t)
	first, second := startBackend(t, "127.0.21.2"), startBackend(t, "127.0.21.3")
	a.write("echo.yaml", manifest(namespace, "echo", nil, first.ep(0, "")))
	conn := dial(t, a, "echo."+namespace+":grpc")
	eventually(t, conn, "first only", first)

	a.write("echo.yaml", manifest(namespace, "echo", nil, first.ep(0, ""), second.ep(0, "")))
	added := eventually(t, conn, "after the add", first, second)
	a.write("echo.yaml", manifest(namespace, "echo", nil, second.ep(0, "")))
	removed := eventually(t, conn, "after the remove", second)
	// Includes the agent's 100ms manifest poll.
	t.Logf("manifest write → client follows: add %v, remove %v", added, removed)
}

func TestMissingAndDeletedServicesFailRPCs(t *testing.T) {
	a := startAgent(t)
	only := startBackend(t, "127.0.22.2")

	// Never existed: absent from the agent's answer. gRPC declares a
	// resource it never received nonexistent only when its own timer
	// (15s in grpc-go) expires; then RPCs fail UNAVAILABLE.
	missing := dial(t, a, "missing."+namespace+":grpc")
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	_, err := call(ctx, missing)
	cancel()
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("RPC to a Service that does not exist: %v, want UNAVAILABLE", err)
	}
	t.Logf("missing Service: %v", err)

	// Exists, then deleted.
	a.write("echo.yaml", manifest(namespace, "echo", nil, only.ep(0, "")))
	conn := dial(t, a, "echo."+namespace+":grpc")
	eventually(t, conn, "before the delete", only)
	a.remove("echo.yaml")
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := call(ctx, conn)
		cancel()
		if status.Code(err) == codes.Unavailable {
			t.Logf("deleted Service: %v", err)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("RPCs still answered 20s after the Service was deleted (last: %v)", err)
		}
	}
}

// An unknown port name is a Listener that does not exist, even though the
// Service does.
func TestUnknownPortDoesNotExist(t *testing.T) {
	a := startAgent(t)
	only := startBackend(t, "127.0.23.2")
	a.write("echo.yaml", manifest(namespace, "echo", nil, only.ep(0, "")))
	good := dial(t, a, "echo."+namespace+".svc.cluster.local:9000")
	eventually(t, good, "by the long name and port number", only)
	bad := dial(t, a, "echo."+namespace+":http")
	ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
	defer cancel()
	if _, err := call(ctx, bad); status.Code(err) != codes.Unavailable {
		t.Fatalf("RPC to a port the Service lacks: %v, want UNAVAILABLE", err)
	}
}

// The agent restarts: the client keeps its last endpoints meanwhile, and
// follows the new agent once it is back.
func TestAgentRestartFailsNoRPC(t *testing.T) {
	a := startAgent(t)
	first, second := startBackend(t, "127.0.24.2"), startBackend(t, "127.0.24.3")
	a.write("echo.yaml", manifest(namespace, "echo", nil, first.ep(0, "")))
	conn := dial(t, a, "echo."+namespace+":grpc")
	eventually(t, conn, "before the restart", first)

	a.stop()
	if counts, failed := spread(t, conn, 500, 5*time.Second); failed != 0 || counts[first.addr.String()] != 500 {
		t.Fatalf("agent down: %v, %d failed; want all 500 on %v", counts, failed, first.addr)
	}
	a.write("echo.yaml", manifest(namespace, "echo", nil, first.ep(0, ""), second.ep(0, "")))
	a.start()
	if counts, failed := spread(t, conn, 500, 5*time.Second); failed != 0 {
		t.Fatalf("agent back: %v, %d failed", counts, failed)
	}
	eventually(t, conn, "after the restart (the client reconnected)", first, second)
}

// This node's zone first (priority 0 from the agent's tiers), the other
// zone only when every endpoint of this one fails: gRPC's priority policy
// does the spill-over, with no zone logic of its own.
func TestZonePreferredAndSpilledOver(t *testing.T) {
	a := startAgent(t, "--zone", "zone-a", "--default-topology", "zone")
	near, far := startBackend(t, "127.0.25.2"), startBackend(t, "127.0.25.3")
	a.write("echo.yaml", manifest(namespace, "echo", nil, near.ep(0, "zone-a"), far.ep(0, "zone-b")))
	conn := dial(t, a, "echo."+namespace+":grpc")
	eventually(t, conn, "this zone only", near)
	if counts, failed := spread(t, conn, 1000, 5*time.Second); failed != 0 || counts[near.addr.String()] != 1000 {
		t.Fatalf("with this zone healthy: %v (%d failed), want all on %v", counts, failed, near.addr)
	}
	near.server.Stop()
	spilled := eventually(t, conn, "spilled over to the other zone", far)
	t.Logf("this zone's server stopped → other zone serving after %v", spilled)
}
