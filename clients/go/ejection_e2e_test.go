package kubedisco_test

import (
	"testing"
	"time"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
)

// TestTransportFailurePercentageEjects: an endpoint that fails 9 of every
// 10 requests, never 10 in a row, with the consecutive rule off so that
// only the failure-percentage rule can catch it, is ejected at the end of
// an interval; after that at least 99% of GETs succeed and none reach it.
func TestTransportFailurePercentageEjects(t *testing.T) {
	var bs []*flakyWeb
	for _, ip := range []string{"127.0.25.2", "127.0.25.3", "127.0.25.4", "127.0.25.5"} {
		bs = append(bs, startFlakyWeb(t, ip, 0))
	}
	// No retries, so that every failure reaches the test.
	client := webService(t, &kubedisco.Resilience{
		ConsecutiveFailures: -1, Interval: time.Second, MaxAttempts: 1, BaseEjectionTime: 5 * time.Minute,
	}, bs...)
	bad := bs[0]
	bad.mostly.Store(true)
	start, failedBefore, sentBefore := time.Now(), 0, 0
	for ejected := false; !ejected; {
		if time.Since(start) > 20*time.Second {
			t.Fatalf("the endpoint failing 90%% still gets requests 20s later (interval 1s; hits %v)", hits(bs...))
		}
		before := bad.hits.Load()
		failed, _ := failedGets(client, 100, 1)
		failedBefore += failed
		sentBefore += 100
		ejected = bad.hits.Load() == before
	}
	t.Logf("ejected: %d of %d GETs failed before the endpoint failing 90%% got none (%d requests reached it)",
		failedBefore, sentBefore, bad.hits.Load())

	const n = 2000
	badBefore := bad.hits.Load()
	failed, first := failedGets(client, n, 4)
	t.Logf("after the ejection %d of %d GETs failed (%s), %.2f%% succeeded; hits %v",
		failed, n, first, 100*float64(n-failed)/n, hits(bs...))
	if failed > n/100 || bad.hits.Load() != badBefore {
		t.Fatalf("%d of %d GETs failed and %d reached the ejected endpoint; want at most 1%% and none",
			failed, n, bad.hits.Load()-badBefore)
	}
}

// TestTransportSpillsOverAnEjectedZone: the agent's zone (zone-a) has two
// endpoints, both answering 503 to everything; zone-b has two healthy ones.
// The agent's pick keeps to zone-a (its preferred tier), so the Transport
// must, once both are ejected, send the requests to zone-b itself: then at
// least 99% of GETs succeed and none reach zone-a.
func TestTransportSpillsOverAnEjectedZone(t *testing.T) {
	agent := agenttest.StartAgent(t, "--zone", "zone-a", "--default-topology", "zone")
	var bs []*flakyWeb
	for i, ip := range []string{"127.0.26.2", "127.0.26.3", "127.0.26.4", "127.0.26.5"} {
		b := startFlakyWeb(t, ip, 0)
		b.zone = []string{"zone-a", "zone-a", "zone-b", "zone-b"}[i]
		bs = append(bs, b)
	}
	// No retries, so that every failure reaches the test; at most half of
	// four ejected: both of zone-a may be.
	client := webServiceOn(t, agent, &kubedisco.Resilience{MaxAttempts: 1, BaseEjectionTime: 5 * time.Minute}, nil, bs...)
	svc, _ := agent.WaitService("e2e", "web", 10*time.Second, func(s *kubedisco.Service) bool { return len(s.Endpoints) == 4 })
	for _, e := range svc.Endpoints {
		if want := map[bool]uint32{true: 0, false: 1}[e.Zone == "zone-a"]; e.Priority != want {
			t.Fatalf("the agent (--zone zone-a) serves %s in %s with priority %d; the test needs zone-a preferred", e.IP, e.Zone, e.Priority)
		}
	}
	zoneA := func() int64 { return bs[0].hits.Load() + bs[1].hits.Load() }
	if failed, _ := failedGets(client, 50, 1); failed != 0 || zoneA() != 50 {
		t.Fatalf("healthy: %d of 50 GETs failed, %d went to zone-a; want all to zone-a", failed, zoneA())
	}
	bs[0].fail.Store(true)
	bs[1].fail.Store(true)
	start, failedBefore := time.Now(), 0
	for ejected := false; !ejected; {
		if time.Since(start) > 10*time.Second {
			t.Fatalf("zone-a, failing every request, still gets requests 10s later (hits %v)", hits(bs...))
		}
		before := zoneA()
		failed, _ := failedGets(client, 50, 1)
		failedBefore += failed
		ejected = zoneA() == before
	}
	t.Logf("zone-a ejected after %d failed GETs", failedBefore)

	const n = 2000
	aBefore := zoneA()
	failed, first := failedGets(client, n, 4)
	t.Logf("zone-a ejected: %d of %d GETs failed (%s), %.2f%% succeeded; hits %v",
		failed, n, first, 100*float64(n-failed)/n, hits(bs...))
	if failed > n/100 || zoneA() != aBefore {
		t.Fatalf("%d of %d GETs failed, %d reached zone-a; want at most 1%% failed and zone-b serving them all",
			failed, n, zoneA()-aBefore)
	}
}
