package kdgrpc

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
)

// End-to-end: a real kubedisco agent (manifest source, polled every 100ms)
// and real grpc-go servers on loopback addresses. Each backend is one
// endpoint, on its own loopback IP, in its own EndpointSlice (so that it
// can have its own port and weight).

const namespace = "e2e"

// propagationLimit is how long after the agent's API shows a change the
// traffic must have followed it.
const propagationLimit = time.Second

type e2eBackend struct {
	*backend
	weight string // kubedisco.io/weight; empty for the default
	zone   string
}

func manifest(name string, backends ...e2eBackend) string {
	var slices []agenttest.Slice
	for i, b := range backends {
		slices = append(slices, agenttest.Slice{
			Name:      fmt.Sprintf("%s-%d", name, i),
			Weight:    b.weight,
			Ports:     map[string]int{"grpc": b.Port()},
			Endpoints: []agenttest.SliceEndpoint{{IP: b.IP(), Zone: b.zone}},
		})
	}
	return agenttest.ServiceYAML(namespace, name, []string{"grpc"}, slices...)
}

func ips(backends ...e2eBackend) []string {
	var out []string
	for _, b := range backends {
		out = append(out, b.IP())
	}
	return out
}

// target is the kubedisco target for a Service of the agent, naming the
// agent in the authority.
func target(agent *agenttest.Agent, service string) string {
	return fmt.Sprintf("kubedisco://%s/%s.%s:grpc", agent.HTTPAddr, service, namespace)
}

func TestE2EWeightedShares(t *testing.T) {
	agent := agenttest.StartAgent(t)
	light := e2eBackend{backend: startBackend(t, "127.0.10.2"), weight: "1"}
	heavy := e2eBackend{backend: startBackend(t, "127.0.10.3"), weight: "3"}
	agent.WriteManifest("echo.yaml", manifest("echo", light, heavy))
	agent.WaitService(namespace, "echo", 10*time.Second, agenttest.HasIPs(ips(light, heavy)...))

	conn := dial(t, target(agent, "echo"))
	waitServed(t, conn, 10*time.Second, light.Addr, heavy.Addr)
	const n = 20000
	start := time.Now()
	counts, failures, err := rpcs(t, conn, n, 8)
	elapsed := time.Since(start)
	if failures != 0 {
		t.Fatalf("%d of %d RPCs failed: %v", failures, n, err)
	}
	lightShare, heavyShare := share(counts, light.Addr, n), share(counts, heavy.Addr, n)
	t.Logf("weights 1:3 over %d RPCs (%s): %.2f%% / %.2f%% (%d / %d)", n, elapsed.Round(time.Millisecond),
		100*lightShare, 100*heavyShare, counts[light.Addr], counts[heavy.Addr])
	if math.Abs(lightShare-0.25) > 0.02 || math.Abs(heavyShare-0.75) > 0.02 {
		t.Fatalf("shares %.4f / %.4f, want 0.25 / 0.75 within 2 points", lightShare, heavyShare)
	}
}

// waitFirstHit waits until addr serves an RPC and returns how long after
// since that was (0 if it was before since).
func waitFirstHit(t *testing.T, tr *traffic, addr string, since time.Time, what string) time.Duration {
	t.Helper()
	if !tr.until(10*time.Second, func(tr *traffic) bool { return tr.byAddr[addr] != nil }) {
		t.Fatalf("%s: %s got no traffic within 10s (%s)", what, addr, tr)
	}
	return max(0, tr.get(addr).first.Sub(since))
}

// waitLastHit waits until addr has served no RPC for 2000 RPCs in a row
// and returns how long after since its last RPC was (0 if before).
func waitLastHit(t *testing.T, tr *traffic, addr string, since time.Time, what string) time.Duration {
	t.Helper()
	if !tr.until(10*time.Second, func(tr *traffic) bool {
		h := tr.byAddr[addr]
		return h == nil || tr.seq-h.lastSeq >= 2000
	}) {
		t.Fatalf("%s: %s still gets traffic 10s later (%s)", what, addr, tr)
	}
	return max(0, tr.get(addr).last.Sub(since))
}

func TestE2EAddAndRemovePropagate(t *testing.T) {
	agent := agenttest.StartAgent(t)
	a := e2eBackend{backend: startBackend(t, "127.0.11.2")}
	b := e2eBackend{backend: startBackend(t, "127.0.11.3")}
	c := e2eBackend{backend: startBackend(t, "127.0.11.4")}
	agent.WriteManifest("echo.yaml", manifest("echo", a, b))
	agent.WaitService(namespace, "echo", 10*time.Second, agenttest.HasIPs(ips(a, b)...))

	conn := dial(t, target(agent, "echo"))
	waitServed(t, conn, 10*time.Second, a.Addr, b.Addr)
	tr := startTraffic(t, conn, 4)

	written := time.Now()
	agent.WriteManifest("echo.yaml", manifest("echo", a, b, c))
	_, seen := agent.WaitService(namespace, "echo", 10*time.Second, agenttest.HasIPs(ips(a, b, c)...))
	added := waitFirstHit(t, tr, c.Addr, seen, "add")
	addedSinceWrite := waitFirstHit(t, tr, c.Addr, written, "add")
	agentAdd := seen.Sub(written)

	written = time.Now()
	agent.WriteManifest("echo.yaml", manifest("echo", b, c))
	_, seen = agent.WaitService(namespace, "echo", 10*time.Second, agenttest.HasIPs(ips(b, c)...))
	removed := waitLastHit(t, tr, a.Addr, seen, "remove")
	removedSinceWrite := waitLastHit(t, tr, a.Addr, written, "remove")
	agentRemove := seen.Sub(written)

	tr.halt()
	t.Logf("add: agent API showed it %s after the file changed, first RPC to the new endpoint %s after the file changed (%s after the API)",
		agentAdd.Round(time.Millisecond), addedSinceWrite.Round(time.Millisecond), added.Round(time.Millisecond))
	t.Logf("remove: agent API showed it %s after the file changed, last RPC to the old endpoint %s after the file changed (%s after the API); %s",
		agentRemove.Round(time.Millisecond), removedSinceWrite.Round(time.Millisecond), removed.Round(time.Millisecond), tr)
	if added > propagationLimit || removed > propagationLimit {
		t.Errorf("propagation: add %s, remove %s; want both within %s", added, removed, propagationLimit)
	}
	if len(tr.failures) != 0 {
		t.Errorf("%d RPCs failed, first: %s", len(tr.failures), tr.failures[0])
	}
}

func TestE2EAgentRestartLosesNoRPCs(t *testing.T) {
	agent := agenttest.StartAgent(t)
	a := e2eBackend{backend: startBackend(t, "127.0.12.2")}
	b := e2eBackend{backend: startBackend(t, "127.0.12.3")}
	c := e2eBackend{backend: startBackend(t, "127.0.12.4")}
	agent.WriteManifest("echo.yaml", manifest("echo", a, b))
	agent.WaitService(namespace, "echo", 10*time.Second, agenttest.HasIPs(ips(a, b)...))

	// The global resolver, as an application uses it: KUBEDISCO_ADDR.
	t.Setenv(kubedisco.EnvAddr, "http://"+agent.HTTPAddr)
	client, err := kubedisco.NewClient(kubedisco.AddrFromEnv())
	if err != nil {
		t.Fatal(err)
	}
	conn := dial(t, "kubedisco:///echo."+namespace+":grpc", grpc.WithResolvers(NewBuilder(WithClient(client))))
	waitServed(t, conn, 10*time.Second, a.Addr, b.Addr)
	tr := startTraffic(t, conn, 4)
	tr.until(10*time.Second, func(tr *traffic) bool { return tr.seq >= 200 })

	before := tr.get(a.Addr).count + tr.get(b.Addr).count
	down := time.Now()
	agent.Stop()
	// Keep the agent away for a while (1000 RPCs): the resolver's
	// reconnects are refused meanwhile.
	if !tr.until(10*time.Second, func(tr *traffic) bool {
		return tr.byAddr[a.Addr].count+tr.byAddr[b.Addr].count >= before+1000
	}) {
		t.Fatalf("RPCs stalled while the agent was down (%s)", tr)
	}
	agent.Start()
	up := time.Now()
	during := tr.get(a.Addr).count + tr.get(b.Addr).count - before

	// The resolver is following the new agent: a change made now arrives.
	agent.WriteManifest("echo.yaml", manifest("echo", a, b, c))
	_, seen := agent.WaitService(namespace, "echo", 10*time.Second, agenttest.HasIPs(ips(a, b, c)...))
	added := waitFirstHit(t, tr, c.Addr, seen, "add after restart")
	tr.halt()

	t.Logf("agent away for %s; %d RPCs served meanwhile; a change after the restart was served %s after the agent showed it (%s)",
		up.Sub(down).Round(time.Millisecond), during, added.Round(time.Millisecond), tr)
	if len(tr.failures) != 0 {
		t.Fatalf("%d RPCs failed across the agent restart, first: %s", len(tr.failures), tr.failures[0])
	}
	if during == 0 {
		t.Errorf("no RPC completed while the agent restarted: the loop did not span the restart")
	}
	// The resolver may still be in its reconnect backoff (at most 3s).
	if added > 5*time.Second {
		t.Errorf("the change after the restart took %s to arrive", added)
	}
}

func TestE2ETopologyTiers(t *testing.T) {
	agent := agenttest.StartAgent(t, "--zone", "zone-a", "--default-topology", "zone")
	local := e2eBackend{backend: startBackend(t, "127.0.13.2"), zone: "zone-a"}
	remote := e2eBackend{backend: startBackend(t, "127.0.13.3"), zone: "zone-b"}
	agent.WriteManifest("echo.yaml", manifest("echo", local, remote))
	svc, _ := agent.WaitService(namespace, "echo", 10*time.Second, agenttest.HasIPs(ips(local, remote)...))

	priority := map[string]uint32{}
	for _, e := range svc.Endpoints {
		priority[e.Zone] = e.Priority
	}
	if priority["zone-a"] >= priority["zone-b"] {
		t.Fatalf("the agent (--zone zone-a) reports priority %d for the zone-a endpoint and %d for the zone-b one; "+
			"want zone-a preferred (lower). Topology tiers are the agent's job: this test needs them.",
			priority["zone-a"], priority["zone-b"])
	}

	conn := dial(t, target(agent, "echo"))
	// 1. Same-zone endpoints present: RPCs stay in the zone.
	waitServed(t, conn, 10*time.Second, local.Addr)
	counts, failures, err := rpcs(t, conn, 2000, 4)
	if failures != 0 || counts[local.Addr] != 2000 {
		t.Fatalf("zone-a present: counts %v, %d failures (%v); want all 2000 in zone-a", counts, failures, err)
	}

	// 2. The zone-a backend dies (the agent still lists it): the balancer
	// spills over to zone-b by itself.
	local.srv.Stop()
	if !rpcsAllTo(t, conn, remote.Addr, 10*time.Second) {
		t.Fatalf("zone-a down: traffic did not spill over to zone-b")
	}

	// 3. A new zone-a endpoint appears: traffic returns to the zone.
	back := e2eBackend{backend: startBackend(t, "127.0.13.4"), zone: "zone-a"}
	tr := startTraffic(t, conn, 4)
	agent.WriteManifest("echo.yaml", manifest("echo", remote, back))
	_, seen := agent.WaitService(namespace, "echo", 10*time.Second, agenttest.HasIPs(ips(remote, back)...))
	returned := waitFirstHit(t, tr, back.Addr, seen, "zone-a endpoint added")
	left := waitLastHit(t, tr, remote.Addr, seen, "zone-a endpoint added")

	// 4. The zone-a endpoint goes away in the agent: traffic spills over.
	agent.WriteManifest("echo.yaml", manifest("echo", remote))
	_, seen = agent.WaitService(namespace, "echo", 10*time.Second, agenttest.HasIPs(ips(remote)...))
	spilled := waitFirstHit(t, tr, remote.Addr, seen, "zone-a endpoint removed")
	tr.halt()
	t.Logf("back in zone %s, zone-b drained %s, spilled again %s after the agent showed each change (%s)",
		returned.Round(time.Millisecond), left.Round(time.Millisecond), spilled.Round(time.Millisecond), tr)
	if returned > propagationLimit || left > propagationLimit || spilled > propagationLimit {
		t.Errorf("tier changes took %s / %s / %s; want within %s", returned, left, spilled, propagationLimit)
	}
}

func TestE2ENotFoundIsNotNoEndpoints(t *testing.T) {
	agent := agenttest.StartAgent(t)
	agent.WriteManifest("empty.yaml", agenttest.ServiceYAML(namespace, "empty", []string{"grpc"}))
	agent.WaitService(namespace, "empty", 10*time.Second, func(s *kubedisco.Service) bool { return s.Exists })

	missing := healthpb.NewHealthClient(dial(t, target(agent, "missing")))
	_, err := call(context.Background(), missing)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("RPC to a Service that does not exist: %v", err)
	}
	emptyConn := dial(t, target(agent, "empty"))
	empty := healthpb.NewHealthClient(emptyConn)
	_, err = call(context.Background(), empty)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "no usable endpoints") {
		t.Errorf("RPC to a Service without endpoints: %v", err)
	}

	// A wait-for-ready RPC waits until an endpoint shows up.
	done := make(chan error, 1)
	go func() {
		_, err := call(context.Background(), empty, grpc.WaitForReady(true))
		done <- err
	}()
	b := e2eBackend{backend: startBackend(t, "127.0.14.2")}
	agent.WriteManifest("empty.yaml", manifest("empty", b))
	if err := <-done; err != nil {
		t.Errorf("wait-for-ready RPC after an endpoint appeared: %v", err)
	}
}
