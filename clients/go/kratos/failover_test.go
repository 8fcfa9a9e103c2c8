package kratos_test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kratos/kratos/v2/middleware"
	"github.com/go-kratos/kratos/v2/selector"
	"github.com/go-kratos/kratos/v2/selector/wrr"
	transgrpc "github.com/go-kratos/kratos/v2/transport/grpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
	kd "github.com/kubedisco/kubedisco/clients/go/kratos"
)

// failable is a Kratos gRPC server that counts the calls it gets and
// answers UNAVAILABLE to every one while failing is set.
type failable struct {
	instance
	failing atomic.Bool
	hits    atomic.Int64
}

func startFailable(t *testing.T, ip string) *failable {
	t.Helper()
	f := &failable{}
	lis, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	gs := transgrpc.NewServer(transgrpc.Listener(lis), transgrpc.UnaryInterceptor(
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			f.hits.Add(1)
			if f.failing.Load() {
				return nil, status.Error(codes.Unavailable, "failing on purpose")
			}
			return h(ctx, req)
		}))
	ctx := context.Background()
	go func() { _ = gs.Start(ctx) }()
	t.Cleanup(func() { _ = gs.Stop(ctx) })
	// The HTTP port is not served: the manifest needs one.
	f.instance = instance{ip: ip, grpcPort: lis.Addr().(*net.TCPAddr).Port, httpPort: agenttest.FreePort(t, ip)}
	return f
}

// TestKratosFailover: Kratos's gRPC client through discovery:///echo.e2e,
// with the kubedisco selector around Kratos's wrr, against three real
// servers. One starts failing every call: it is ejected, and then at least
// 99% of calls succeed and none reach it. A second one failing too is not
// ejected while the first is (at most 50% of three, i.e. one, at once):
// it keeps getting calls.
func TestKratosFailover(t *testing.T) {
	agent := agenttest.StartAgent(t)
	useSelector(t, kd.NewSelector(wrr.NewBuilder(), &kubedisco.Resilience{
		ConsecutiveFailures: 5, BaseEjectionTime: 5 * time.Minute,
	}, kd.WithClient(agent.Client)))
	a, b, c := startFailable(t, "127.0.33.2"), startFailable(t, "127.0.33.3"), startFailable(t, "127.0.33.4")
	agent.WriteManifest("echo.yaml", manifest([]*instance{&a.instance, &b.instance, &c.instance}, []string{"1", "1", "1"}))
	agent.WaitService("e2e", "echo", 10*time.Second, agenttest.HasIPs(a.ip, b.ip, c.ip))

	call := dialEcho(t, agent)
	if !agenttest.Until(10*time.Second, func() bool {
		n, _ := call(40)
		return n[a.grpcAddr()] > 0 && n[b.grpcAddr()] > 0 && n[c.grpcAddr()] > 0
	}) {
		t.Fatal("the Kratos client did not reach all three servers within 10s")
	}

	a.failing.Store(true)
	start, failedBefore := time.Now(), 0
	if !agenttest.Until(10*time.Second, func() bool {
		before := a.hits.Load()
		_, failed := call(100)
		failedBefore += failed
		return a.hits.Load() == before
	}) {
		t.Fatal("the failing server still gets calls 10s after it started failing")
	}
	t.Logf("ejection: %d calls failed before the failing server stopped getting calls, within %s", failedBefore, time.Since(start).Round(time.Millisecond))

	const n = 2000
	hitsBefore := a.hits.Load()
	counts, failed := call(n)
	t.Logf("after ejection, %d calls: %d failed (%.2f%% succeeded), by server %v, %d reached the failing one", n, failed, 100*float64(n-failed)/n, counts, a.hits.Load()-hitsBefore)
	if float64(n-failed)/n < 0.99 || a.hits.Load() != hitsBefore {
		t.Fatalf("%d of %d failed, %d reached the ejected server; want at least 99%% succeeding and none reaching it", failed, n, a.hits.Load()-hitsBefore)
	}

	// The bounded share: with one of three ejected, a second failing
	// server is not ejected; it keeps getting its share (and failing it).
	b.failing.Store(true)
	bBefore, aBefore := b.hits.Load(), a.hits.Load()
	counts, failed = call(600)
	t.Logf("second server failing too, 600 calls: %d failed, by server %v, %d reached it, %d the ejected one", failed, counts, b.hits.Load()-bBefore, a.hits.Load()-aBefore)
	if got := b.hits.Load() - bBefore; got < 100 || a.hits.Load() != aBefore || counts[c.grpcAddr()] < 200 {
		t.Fatalf("second failing server got %d of 600 calls, the ejected one %d, the healthy one %d; want the second kept (bounded share: one of three ejected at most), none to the ejected one", got, a.hits.Load()-aBefore, counts[c.grpcAddr()])
	}
}

// TestKratosEjectionEnds: an ejected server that is healthy again gets
// Kratos calls again once its ejection time is over.
func TestKratosEjectionEnds(t *testing.T) {
	agent := agenttest.StartAgent(t)
	useSelector(t, kd.NewSelector(nil, &kubedisco.Resilience{
		ConsecutiveFailures: 3, BaseEjectionTime: 200 * time.Millisecond,
	}, kd.WithClient(agent.Client)))
	a, b := startFailable(t, "127.0.33.5"), startFailable(t, "127.0.33.6")
	agent.WriteManifest("echo.yaml", manifest([]*instance{&a.instance, &b.instance}, []string{"1", "1"}))
	agent.WaitService("e2e", "echo", 10*time.Second, agenttest.HasIPs(a.ip, b.ip))
	calls := dialEcho(t, agent)
	call := func(n int) map[string]int { counts, _ := calls(n); return counts }
	if !agenttest.Until(10*time.Second, func() bool { n := call(8); return n[a.grpcAddr()] > 0 && n[b.grpcAddr()] > 0 }) {
		t.Fatal("the Kratos client did not reach both servers within 10s")
	}
	a.failing.Store(true)
	if !agenttest.Until(10*time.Second, func() bool { before := a.hits.Load(); call(20); return a.hits.Load() == before }) {
		t.Fatal("the failing server still gets calls 10s after it started failing")
	}
	a.failing.Store(false)
	start := time.Now()
	if !agenttest.Until(10*time.Second, func() bool { return call(20)[a.grpcAddr()] > 0 }) {
		t.Fatal("the server, healthy again, got no successful call within 10s")
	}
	t.Logf("the healthy-again server answered Kratos calls again %s after it recovered (ejection 200ms, growing per ejection)", time.Since(start).Round(time.Millisecond))
}

// useSelector makes b Kratos's global selector for the test: the clients
// made after it take it.
func useSelector(t *testing.T, b selector.Builder) {
	selector.SetGlobalSelector(b)
	t.Cleanup(func() { selector.SetGlobalSelector(wrr.NewBuilder()) })
}

// startWithSelector starts an agent and makes kd.NewSelector, with the
// defaults and the annotations the agent serves, the global selector.
func startWithSelector(t *testing.T) *agenttest.Agent {
	agent := agenttest.StartAgent(t)
	useSelector(t, kd.NewSelector(nil, nil, kd.WithClient(agent.Client)))
	return agent
}

// dialService dials name.e2e with Kratos's gRPC client through the agent,
// with middleware mw.
func dialService(t *testing.T, agent *agenttest.Agent, name string, mw ...middleware.Middleware) healthpb.HealthClient {
	t.Helper()
	conn, err := transgrpc.DialInsecure(context.Background(), transgrpc.WithEndpoint("discovery:///"+name+".e2e"),
		transgrpc.WithDiscovery(kd.New(agent.Client)), transgrpc.WithMiddleware(mw...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn)
}

// dialEcho dials echo.e2e with Kratos's gRPC client through the agent; the
// function it returns makes n health checks from 4 goroutines and counts
// them by the server that answered.
func dialEcho(t *testing.T, agent *agenttest.Agent) func(n int) (map[string]int, int) {
	t.Helper()
	ctx := context.Background()
	hc := dialService(t, agent, "echo")
	return func(n int) (map[string]int, int) {
		return agenttest.CountCalls(n, func() (string, error) { return checkAddr(ctx, hc) })
	}
}
