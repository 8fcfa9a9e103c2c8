package gokit_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	httptransport "github.com/go-kit/kit/transport/http"
	"github.com/go-kit/log"

	"github.com/kubedisco/kubedisco/clients/go/gokit"
	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
)

// Against the real control plane: an agent with --source kubernetes, a
// Service with a selector and Pods the EndpointSlice controller publishes
// once the test marks them Ready; HTTP servers listen on the Pods'
// loopback addresses, and go-kit's HTTP client endpoints, made by
// sd.NewEndpointer from this Instancer (through Ejecting) and balanced by
// lb.NewRoundRobin with Ejecting's Retry(3), call them. go-kit's
// balancers take no weights: none are tested here.

// clusterGoKit starts n HTTP servers (answers taking delay) on the Pods'
// loopback addresses, serves them as the Service who (port http), waits
// until the agent shows them, and returns them, their Pods and a call
// through go-kit as an app writes it, dialling the Pods through DialPod.
func clusterGoKit(t *testing.T, c *agenttest.Cluster, agent *agenttest.Agent, delay time.Duration, n int) ([]*failable, []agenttest.Pod, endpoint.Endpoint) {
	t.Helper()
	var fs []*failable
	// Weight 0: no weight labels.
	pods := c.ServeWeighted(agent, "who", []string{"http"}, make([]uint32, n), func(ip string) map[string]int {
		f := startSlow(t, ip, delay)
		fs = append(fs, f)
		return map[string]int{"http": f.port}
	})

	instancer, err := gokit.NewInstancer(agent.Client, "who."+c.Namespace, "http", log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(instancer.Stop)
	ejecting := gokit.NewEjecting(instancer, nil)
	t.Cleanup(ejecting.Stop)
	client := httptransport.SetClient(&http.Client{Transport: agenttest.PodTransport(t)})
	factory := func(instance string) (endpoint.Endpoint, io.Closer, error) {
		return httpFactory(instance, true, client)
	}
	endpointer := sd.NewEndpointer(ejecting, ejecting.Factory(factory), log.NewNopLogger())
	t.Cleanup(endpointer.Close)
	call := ejecting.Retry(3, 5*time.Second, lb.NewRoundRobin(endpointer))
	// The Endpointer gets the instances asynchronously: until then a call
	// fails at once with "no endpoints available".
	if ok, _, _ := agenttest.UntilWindow(10*time.Second, 2*n, callAddr(call), func(m map[string]int) bool { return len(m) == n }); !ok {
		t.Fatalf("go-kit did not reach all %d Pods within 10s", n)
	}
	return fs, pods, call
}

// callAddr makes calls of call that return the address that answered.
func callAddr(call endpoint.Endpoint) func() (string, error) {
	return func() (string, error) {
		resp, err := call(context.Background(), nil)
		if err != nil {
			return "", err
		}
		return resp.(string), nil
	}
}

// TestGoKitClusterReadinessAndScale: go-kit's round robin splits 2000
// calls evenly over two Ready Pods; one marked not Ready gets no more
// calls, and Ready again gets them back; a third Pod created gets calls,
// and deleted gets none, with no call failing.
func TestGoKitClusterReadinessAndScale(t *testing.T) {
	c := agenttest.NewCluster(t, "gokit-ready")
	agent := c.StartAgent()
	fs, pods, call := clusterGoKit(t, c, agent, 0, 2)
	who := callAddr(call)
	counts, failed := agenttest.CountCalls(2000, who)
	t.Logf("go-kit round robin over 2000 calls: %d / %d, %d failed", counts[fs[0].addr], counts[fs[1].addr], failed)
	if failed != 0 || counts[fs[0].addr] != 1000 || counts[fs[1].addr] != 1000 {
		t.Fatalf("counts %v, %d failed; want 1000 each", counts, failed)
	}
	c.CheckReadiness(t, "go-kit", pods[0], fs[0].addr, who)
	third := startSlow(t, c.Loopback(2), 0)
	c.CheckScale(t, "go-kit", "who", 2, agenttest.PodSpec{Ports: map[string]int{"http": third.port}}, third.addr, who)
}

// TestGoKitClusterKilledPod: three Ready Pods, calls from 8 goroutines;
// one Pod's server is killed with calls in flight (Kubernetes still lists
// it Ready). Ejecting's Retry(3) retries them, and the ones sent there
// until it is ejected, on another Pod: no call fails.
func TestGoKitClusterKilledPod(t *testing.T) {
	c := agenttest.NewCluster(t, "gokit-kill")
	agent := c.StartAgent()
	fs, _, call := clusterGoKit(t, c, agent, 20*time.Millisecond, 3)
	victim := fs[0]
	agenttest.KillUnderLoad(t, "go-kit", 8, func() error { _, err := call(context.Background(), nil); return err },
		func() bool { return victim.hits.Load() >= 8 }, func() { victim.srv.Close() })
}
