package gokit_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
	"github.com/kubedisco/kubedisco/clients/go/gokit"
	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
)

// failable is an HTTP server that counts the requests it gets and answers
// 503 to every one while failing is set; each takes delay.
type failable struct {
	server
	failing atomic.Bool
	hits    atomic.Int64
	delay   time.Duration
}

func startFailable(t *testing.T, ip string) *failable {
	t.Helper()
	return startSlow(t, ip, 0)
}

// startSlow starts a failable server whose answers take delay, so that a
// kill finds calls in flight.
func startSlow(t *testing.T, ip string, delay time.Duration) *failable {
	t.Helper()
	lis, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	f := &failable{delay: delay}
	addr := lis.Addr().String()
	f.server = server{ip: ip, port: lis.Addr().(*net.TCPAddr).Port, addr: addr}
	f.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		f.hits.Add(1)
		time.Sleep(f.delay)
		if f.failing.Load() {
			http.Error(w, "failing on purpose", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, addr)
	})}
	go func() { _ = f.srv.Serve(lis) }()
	t.Cleanup(func() { f.srv.Close() })
	return f
}

// strictFactory is factory with 5xx answers as errors.
func strictFactory(instance string) (endpoint.Endpoint, io.Closer, error) {
	return httpFactory(instance, true)
}

// TestGoKitEjection: go-kit's Endpointer, round-robin balancer and
// lb.Retry, on the kubedisco Instancer wrapped in Ejecting, call three
// real servers. One starts failing every call: it is ejected, and then at
// least 99% of calls succeed and none reach it. A second one failing too
// is not ejected while the first is (at most 50% of three, i.e. one, at
// once): it keeps getting calls, which lb.Retry sends on.
func TestGoKitEjection(t *testing.T) {
	agent := agenttest.StartAgent(t)
	a, b, c := startFailable(t, "127.0.34.2"), startFailable(t, "127.0.34.3"), startFailable(t, "127.0.34.4")
	agent.WriteManifest("who.yaml", manifest([]*server{&a.server, &b.server, &c.server}, ""))
	agent.WaitService("e2e", "who", 10*time.Second, agenttest.HasIPs(a.ip, b.ip, c.ip))

	instancer, err := gokit.NewInstancer(agent.Client, "who.e2e", "http", log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer instancer.Stop()
	ejecting := gokit.NewEjecting(instancer, &kubedisco.Resilience{ConsecutiveFailures: 5, BaseEjectionTime: 5 * time.Minute})
	defer ejecting.Stop()
	endpointer := sd.NewEndpointer(ejecting, ejecting.Factory(strictFactory), log.NewNopLogger())
	defer endpointer.Close()
	balancer := lb.NewRoundRobin(endpointer)
	calls := func(call endpoint.Endpoint, n int) (map[string]int, int) {
		return agenttest.CountCalls(n, func() (string, error) {
			resp, err := call(context.Background(), nil)
			if err != nil {
				return "", err
			}
			return resp.(string), nil
		})
	}
	once, retried := balancerCall(balancer), lb.Retry(3, 5*time.Second, balancer)
	if !agenttest.Until(10*time.Second, func() bool {
		n, _ := calls(once, 12)
		return n[a.addr] > 0 && n[b.addr] > 0 && n[c.addr] > 0
	}) {
		t.Fatal("go-kit's balancer did not reach all three servers within 10s")
	}

	a.failing.Store(true)
	failedBefore := 0
	if !agenttest.Until(10*time.Second, func() bool {
		before := a.hits.Load()
		_, failed := calls(once, 100)
		failedBefore += failed
		return a.hits.Load() == before
	}) {
		t.Fatal("the failing server still gets calls 10s after it started failing")
	}
	t.Logf("ejection: %d calls (no retries) failed before the failing server stopped getting calls", failedBefore)

	const n = 2000
	hitsBefore := a.hits.Load()
	counts, failed := calls(once, n)
	t.Logf("after ejection, %d calls without retries: %d failed (%.2f%% succeeded), by server %v, %d reached the failing one", n, failed, 100*float64(n-failed)/n, counts, a.hits.Load()-hitsBefore)
	if float64(n-failed)/n < 0.99 || a.hits.Load() != hitsBefore {
		t.Fatalf("%d of %d failed, %d reached the ejected server; want at least 99%% succeeding and none reaching it", failed, n, a.hits.Load()-hitsBefore)
	}

	// The bounded share: a second failing server is not ejected while
	// the first is; lb.Retry sends its failed calls to the balancer's
	// next endpoint, the healthy one (one caller here: go-kit's round
	// robin is shared, so concurrent callers' retries may land on the
	// failing server again).
	b.failing.Store(true)
	bBefore, aBefore := b.hits.Load(), a.hits.Load()
	counts, failed = map[string]int{}, 0
	for range 600 {
		resp, err := retried(context.Background(), nil)
		if err != nil {
			failed++
			continue
		}
		counts[resp.(string)]++
	}
	t.Logf("second server failing too, 600 calls from one caller with lb.Retry(3): %d failed, by server %v, %d reached the failing one, %d the ejected one", failed, counts, b.hits.Load()-bBefore, a.hits.Load()-aBefore)
	if got := b.hits.Load() - bBefore; got < 100 || a.hits.Load() != aBefore || failed != 0 {
		t.Fatalf("second failing server got %d calls, the ejected one %d, %d failed; want the second kept (bounded share: one of three ejected at most), none to the ejected one, lb.Retry hiding the failures", got, a.hits.Load()-aBefore, failed)
	}
}

// balancerCall calls the balancer's next endpoint once.
func balancerCall(b lb.Balancer) endpoint.Endpoint {
	return func(ctx context.Context, req any) (any, error) {
		ep, err := b.Endpoint()
		if err != nil {
			return nil, err
		}
		return ep(ctx, req)
	}
}

// TestGoKitEjectionEnds: an ejected server that is healthy again gets
// calls again once its ejection time is over (Ejecting publishes it back).
func TestGoKitEjectionEnds(t *testing.T) {
	agent := agenttest.StartAgent(t)
	a, b := startFailable(t, "127.0.34.5"), startFailable(t, "127.0.34.6")
	agent.WriteManifest("who.yaml", manifest([]*server{&a.server, &b.server}, ""))
	agent.WaitService("e2e", "who", 10*time.Second, agenttest.HasIPs(a.ip, b.ip))
	instancer, err := gokit.NewInstancer(agent.Client, "who.e2e", "http", log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer instancer.Stop()
	ejecting := gokit.NewEjecting(instancer, &kubedisco.Resilience{ConsecutiveFailures: 3, BaseEjectionTime: 200 * time.Millisecond})
	defer ejecting.Stop()
	endpointer := sd.NewEndpointer(ejecting, ejecting.Factory(strictFactory), log.NewNopLogger())
	defer endpointer.Close()
	once := balancerCall(lb.NewRoundRobin(endpointer))
	call := func(n int) map[string]int {
		counts, _ := agenttest.CountCalls(n, func() (string, error) {
			resp, err := once(context.Background(), nil)
			if err != nil {
				return "", err
			}
			return resp.(string), nil
		})
		return counts
	}
	if !agenttest.Until(10*time.Second, func() bool { n := call(8); return n[a.addr] > 0 && n[b.addr] > 0 }) {
		t.Fatal("go-kit's balancer did not reach both servers within 10s")
	}
	a.failing.Store(true)
	if !agenttest.Until(10*time.Second, func() bool { before := a.hits.Load(); call(20); return a.hits.Load() == before }) {
		t.Fatal("the failing server still gets calls 10s after it started failing")
	}
	a.failing.Store(false)
	start := time.Now()
	if !agenttest.Until(10*time.Second, func() bool { return call(20)[a.addr] > 0 }) {
		t.Fatal("the server, healthy again, got no successful call within 10s")
	}
	t.Logf("the healthy-again server answered calls again %s after it recovered (ejection 200ms, growing per ejection)", time.Since(start).Round(time.Millisecond))
}
