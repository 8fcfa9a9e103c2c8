package gozero_test

import (
	"testing"
	"time"

	"github.com/kubedisco/kubedisco/clients/go/gozero"
	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
)

// TestZrpcFollowsScaleDownAndReadiness: a zrpc client through
// kubedisco:///echo.e2e:grpc stops calling a server soon after the agent
// drops it (scaled down, or not ready), and calls it again once it is
// ready again; the servers keep running, so no call fails meanwhile. Each
// propagation is measured from the moment the agent's API shows the
// change.
func TestZrpcFollowsScaleDownAndReadiness(t *testing.T) {
	agent := agenttest.StartAgent(t)
	a, b, c := startServer(t, "127.0.52.2"), startServer(t, "127.0.52.3"), startServer(t, "127.0.52.4")
	weights := []string{"1", "1", "1"}
	agent.WriteManifest("echo.yaml", manifest([]*server{a, b, c}, weights))
	agent.WaitService("e2e", "echo", 10*time.Second, agenttest.HasIPs(a.ip, b.ip, c.ip))
	hc := dialZrpc(t, agent, gozero.ClientOptions())
	if !agenttest.Until(10*time.Second, func() bool { n, _ := calls(hc, 40); return n[a.addr] > 0 && n[b.addr] > 0 && n[c.addr] > 0 }) {
		t.Fatal("the zrpc client did not reach all three servers within 10s")
	}
	failed := 0
	var missedAt time.Time
	// gone reports whether 40 calls missed s (from missedAt, when they
	// ended) and 400 more did too.
	gone := func(s *server) bool {
		n, f := calls(hc, 40)
		failed += f
		if n[s.addr] > 0 {
			return false
		}
		missedAt = time.Now()
		n, f = calls(hc, 400)
		failed += f
		return n[s.addr] == 0
	}

	agent.WriteManifest("echo.yaml", manifest([]*server{a, b}, weights[:2]))
	_, shown := agent.WaitService("e2e", "echo", 10*time.Second, agenttest.HasIPs(a.ip, b.ip))
	if !agenttest.Until(10*time.Second, func() bool { return gone(c) }) {
		t.Fatal("the removed server still gets zrpc calls 10s after the agent dropped it")
	}
	t.Logf("scale-down: the removed server stopped getting zrpc calls within %s of the agent's API dropping it", missedAt.Sub(shown).Round(time.Millisecond))

	agent.WriteManifest("echo.yaml", manifestUnready([]*server{a, b}, weights[:2], b))
	_, shown = agent.WaitService("e2e", "echo", 10*time.Second, agenttest.HasIPs(a.ip))
	if !agenttest.Until(10*time.Second, func() bool { return gone(b) }) {
		t.Fatal("the unready server still gets zrpc calls 10s after the agent dropped it")
	}
	t.Logf("readiness: the unready server stopped getting zrpc calls within %s of the agent's API dropping it", missedAt.Sub(shown).Round(time.Millisecond))

	agent.WriteManifest("echo.yaml", manifest([]*server{a, b}, weights[:2]))
	_, shown = agent.WaitService("e2e", "echo", 10*time.Second, agenttest.HasIPs(a.ip, b.ip))
	if !agenttest.Until(10*time.Second, func() bool { n, f := calls(hc, 8); failed += f; return n[b.addr] > 0 }) {
		t.Fatal("the server, ready again, got no zrpc call within 10s of the agent listing it")
	}
	t.Logf("readiness: the server, ready again, got a zrpc call within %s of the agent's API listing it", time.Since(shown).Round(time.Millisecond))
	if failed != 0 {
		t.Fatalf("%d zrpc calls failed while servers that kept running were dropped and added; want none", failed)
	}
}
