package kdgrpc

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
)

// flaky is a health service that can be told to fail every call with
// UNAVAILABLE (as an instance whose dependency died does), and counts the
// calls that reach it, failed or not.
type flaky struct {
	healthpb.UnimplementedHealthServer
	fail  atomic.Bool
	delay time.Duration
	hits  atomic.Int64
}

func (f *flaky) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	f.hits.Add(1)
	if f.delay > 0 {
		// A call that takes a while, so that a crash finds calls in flight.
		select {
		case <-time.After(f.delay):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if f.fail.Load() {
		return nil, status.Error(codes.Unavailable, "failing on purpose")
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

type flakyBackend struct {
	e2eBackend
	svc *flaky
}

func startFlaky(t testing.TB, ip string, delay time.Duration) *flakyBackend {
	t.Helper()
	lis, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("backend on %s: %v", ip, err)
	}
	srv := grpc.NewServer()
	f := &flaky{delay: delay}
	healthpb.RegisterHealthServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return &flakyBackend{e2eBackend: e2eBackend{backend: &backend{Addr: lis.Addr().String(), srv: srv}}, svc: f}
}

// flakyService starts a flaky backend on each of ips and serves them all
// as the Service echo of a new agent.
func flakyService(t *testing.T, delay time.Duration, ips ...string) (*agenttest.Agent, []*flakyBackend) {
	t.Helper()
	agent := agenttest.StartAgent(t)
	var fs []*flakyBackend
	for _, ip := range ips {
		fs = append(fs, startFlaky(t, ip, delay))
	}
	backends := e2eOf(fs...)
	agent.WriteManifest("echo.yaml", manifest("echo", backends...))
	agent.WaitService(namespace, "echo", 10*time.Second, agenttest.HasIPs(ips...))
	return agent, fs
}

func e2eOf(fs ...*flakyBackend) []e2eBackend {
	out := make([]e2eBackend, len(fs))
	for i, f := range fs {
		out[i] = f.e2eBackend
	}
	return out
}

func hitsOf(fs ...*flakyBackend) []int64 {
	out := make([]int64, len(fs))
	for i, f := range fs {
		out[i] = f.svc.hits.Load()
	}
	return out
}

// outlierOnly is ejection with short times (so that the test sees an
// ejection end) and no retries, so that every failed call reaches the
// test: what ejection alone does is what is measured.
func outlierOnly(base string) string {
	return `{"loadBalancingConfig":[{"kubedisco_weighted":{"outlierDetection":{"baseEjectionTime":"` + base + `","interval":"1s"}}}]}`
}

func TestE2EOutlierEjection(t *testing.T) {
	agent, fs := flakyService(t, 0, "127.0.15.2", "127.0.15.3", "127.0.15.4", "127.0.15.5")

	conn := dial(t, target(agent, "echo"), grpc.WithDefaultServiceConfig(outlierOnly("3s")))
	waitServed(t, conn, 10*time.Second, fs[0].Addr, fs[1].Addr, fs[2].Addr, fs[3].Addr)
	hc := healthpb.NewHealthClient(conn)

	// One instance starts failing every call.
	bad := fs[0]
	bad.svc.fail.Store(true)
	failedAt := time.Now()
	// Ejected: 100 calls in a row that do not reach it (bounded poll).
	ejected := false
	var ejectedAt time.Time
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		before := bad.svc.hits.Load()
		_, _, _ = rpcs(t, conn, 100, 1)
		if bad.svc.hits.Load() == before {
			ejected, ejectedAt = true, time.Now()
			break
		}
	}
	if !ejected {
		t.Fatalf("the failing instance still gets calls 10s after it started failing (hits %v)", hitsOf(fs...))
	}
	// After the ejection: at least 99% of calls succeed. 3s of ejection
	// leave room for a few thousand calls; the count is what is asserted.
	const n = 2000
	counts, failures, err := rpcs(t, conn, n, 4)
	t.Logf("failing instance ejected within %s; then %d of %d calls failed (%v), per backend %v",
		ejectedAt.Sub(failedAt).Round(time.Millisecond), failures, n, err, counts)
	if failures > n/100 {
		t.Fatalf("%d of %d calls failed after the ejection; want at most 1%%", failures, n)
	}

	// Healthy again: it comes back once its ejection time is over.
	bad.svc.fail.Store(false)
	healedAt := time.Now()
	waitServed(t, conn, 20*time.Second, bad.Addr)
	t.Logf("back in rotation %s after it healed (%s after its ejection; base ejection time 3s)",
		time.Since(healedAt).Round(time.Millisecond), time.Since(ejectedAt).Round(time.Millisecond))
	if _, err := call(context.Background(), hc); err != nil {
		t.Fatalf("call after the instance came back: %v", err)
	}
}

func TestE2EOutlierEjectionIsBounded(t *testing.T) {
	agent, fs := flakyService(t, 0, "127.0.16.2", "127.0.16.3", "127.0.16.4", "127.0.16.5")

	// Long ejections, so that none ends during the test; the default
	// bound, half of the endpoints.
	conn := dial(t, target(agent, "echo"), grpc.WithDefaultServiceConfig(outlierOnly("300s")))
	waitServed(t, conn, 10*time.Second, fs[0].Addr, fs[1].Addr, fs[2].Addr, fs[3].Addr)

	// Three of four fail every call: only two may be ejected.
	for _, f := range fs[:3] {
		f.svc.fail.Store(true)
	}
	_, _, _ = rpcs(t, conn, 500, 2) // enough failures in a row for every one of them
	before := hitsOf(fs...)
	_, failures, _ := rpcs(t, conn, 1000, 2)
	after := hitsOf(fs...)
	reached := 0
	for i := range fs {
		if after[i] > before[i] {
			reached++
		}
	}
	t.Logf("3 of 4 failing: calls per backend over 1000 calls %v, %d failed", []int64{after[0] - before[0], after[1] - before[1], after[2] - before[2], after[3] - before[3]}, failures)
	if reached != 2 {
		t.Fatalf("%d backends got calls; want 2 (at most half of 4 ejected, and the bound used up by two of the three failing ones)", reached)
	}
	if after[3] == before[3] {
		t.Fatalf("the healthy backend got no calls")
	}
}

func TestE2EKilledInstanceNoFailedCalls(t *testing.T) {
	agent, fs := flakyService(t, 20*time.Millisecond, "127.0.17.2", "127.0.17.3", "127.0.17.4")

	conn := dial(t, target(agent, "echo"), InsecureDialOptions()...)
	waitServed(t, conn, 10*time.Second, fs[0].Addr, fs[1].Addr, fs[2].Addr)
	tr := startTraffic(t, conn, 8)
	tr.until(10*time.Second, func(tr *traffic) bool { return tr.seq >= 200 })

	// Wait until calls are in flight on the victim, then kill it: its
	// connections are closed under them.
	victim := fs[0]
	for deadline := time.Now().Add(5 * time.Second); victim.svc.hits.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	killedAt := tr.snapshotSeq()
	victim.srv.Stop()
	if !tr.until(20*time.Second, func(tr *traffic) bool { return tr.seq >= killedAt+1000 }) {
		t.Fatalf("calls stalled after the kill (%s)", tr)
	}
	tr.halt()
	t.Logf("instance killed at call %d: %s", killedAt, tr)
	if len(tr.failures) != 0 {
		t.Fatalf("%d calls failed across the kill, first: %s", len(tr.failures), tr.failures[0])
	}
}

// TestE2ERetriesGoElsewhere: with weights 1:3 and the heavy endpoint
// failing every call, a single retry reaches the light one only if the
// picker skips the endpoint the call already tried: smooth round-robin on
// its own picks the heavy endpoint twice in a row for a third of its picks.
// Ejection is off, so that only the retry can save a call.
func TestE2ERetriesGoElsewhere(t *testing.T) {
	agent := agenttest.StartAgent(t)
	light, heavy := startFlaky(t, "127.0.18.2", 0), startFlaky(t, "127.0.18.3", 0)
	light.weight, heavy.weight = "1", "3"
	backends := e2eOf(light, heavy)
	agent.WriteManifest("echo.yaml", manifest("echo", backends...))
	agent.WaitService(namespace, "echo", 10*time.Second, agenttest.HasIPs(ips(backends...)...))
	const retryOnce = `{"loadBalancingConfig":[{"kubedisco_weighted":{}}],
	  "methodConfig":[{"name":[{}],"retryPolicy":{"maxAttempts":2,"initialBackoff":"0.001s","maxBackoff":"0.001s","backoffMultiplier":1,"retryableStatusCodes":["UNAVAILABLE"]}}]}`

	with := dial(t, target(agent, "echo"), grpc.WithDefaultServiceConfig(retryOnce),
		grpc.WithChainUnaryInterceptor(UnaryClientInterceptor()))
	without := dial(t, target(agent, "echo"), grpc.WithDefaultServiceConfig(retryOnce))
	waitServed(t, with, 10*time.Second, light.Addr, heavy.Addr)
	waitServed(t, without, 10*time.Second, light.Addr, heavy.Addr)
	heavy.svc.fail.Store(true)

	const n = 2000
	_, failedWith, errWith := rpcs(t, with, n, 4)
	_, failedWithout, _ := rpcs(t, without, n, 4)
	t.Logf("heavy endpoint failing, one retry: %d of %d calls failed with the interceptor, %d without", failedWith, n, failedWithout)
	if failedWith != 0 {
		t.Fatalf("%d of %d calls failed although every retry could go to the healthy endpoint: %v", failedWith, n, errWith)
	}
	// The control: without the record of tried endpoints, retries do go
	// back to the failing one (so the assertion above means something).
	if failedWithout == 0 {
		t.Fatalf("without the interceptor no call failed either: the test does not exercise retry placement")
	}
}
