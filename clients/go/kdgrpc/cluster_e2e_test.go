package kdgrpc

import (
	"context"
	"fmt"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
)

// Against the real control plane: an agent with --source kubernetes,
// a Service with a selector and Pods the EndpointSlice controller
// publishes once the test marks them Ready; grpc-go servers listen on the
// Pods' loopback addresses, and plain grpc-go with kdgrpc's options calls
// them through the agent.

// clusterEcho starts a flaky grpc-go server per weight on the Pods'
// loopback addresses, serves them as the Service echo (port grpc, Pod
// labels kubedisco.io/weight) and waits until the agent shows them with
// their weights.
func clusterEcho(t *testing.T, c *agenttest.Cluster, agent *agenttest.Agent, delay time.Duration, weights []uint32) ([]*flakyBackend, []agenttest.Pod) {
	t.Helper()
	var fs []*flakyBackend
	pods := c.ServeWeighted(agent, "echo", []string{"grpc"}, weights, func(ip string) map[string]int {
		f := startFlaky(t, ip, delay)
		fs = append(fs, f)
		return map[string]int{"grpc": f.Port()}
	})
	return fs, pods
}

// dialCluster is a kdgrpc channel to echo in the test's namespace with
// kdgrpc.InsecureDialOptions, dialling the Pods through DialPod.
func dialCluster(t *testing.T, c *agenttest.Cluster, agent *agenttest.Agent) healthpb.HealthClient {
	t.Helper()
	target := fmt.Sprintf("kubedisco://%s/echo.%s:grpc", agent.HTTPAddr, c.Namespace)
	conn, err := grpc.NewClient(target, append(InsecureDialOptions(), grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		return agenttest.DialPod(ctx, "tcp", addr)
	}))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return healthpb.NewHealthClient(conn)
}

// TestClusterWeightsReadinessAndScale: two Pods labelled with weights 1
// and 3 (--pod-weights) get 25% / 75% of 20 000 calls; the light one
// marked not Ready gets no more calls, and Ready again gets them back; a
// third Pod created gets calls, and deleted gets none, with no call
// failing.
func TestClusterWeightsReadinessAndScale(t *testing.T) {
	c := agenttest.NewCluster(t, "kdgrpc-weights")
	agent := c.StartAgent("--pod-weights")
	fs, pods := clusterEcho(t, c, agent, 0, []uint32{1, 3})
	hc := dialCluster(t, c, agent)
	callAddr := func() (string, error) { return call(context.Background(), hc) }
	agenttest.CheckWeights(t, "kdgrpc", 20000, callAddr, fs[0].Addr, fs[1].Addr)
	c.CheckReadiness(t, "kdgrpc", pods[0], fs[0].Addr, callAddr)
	third := startFlaky(t, c.Loopback(2), 0)
	c.CheckScale(t, "kdgrpc", "echo", 2, agenttest.PodSpec{Ports: map[string]int{"grpc": third.Port()}, Weight: "1"}, third.Addr, callAddr)
}

// TestClusterKilledPod: three Ready Pods, calls from 8 goroutines; one
// Pod's server is killed with calls in flight (Kubernetes still lists it
// Ready). kdgrpc's retries and ejection keep every call from failing.
func TestClusterKilledPod(t *testing.T) {
	c := agenttest.NewCluster(t, "kdgrpc-kill")
	agent := c.StartAgent()
	fs, _ := clusterEcho(t, c, agent, 20*time.Millisecond, []uint32{100, 100, 100})
	hc := dialCluster(t, c, agent)
	victim := fs[0]
	agenttest.KillUnderLoad(t, "kdgrpc", 8,
		func() error { _, err := call(context.Background(), hc); return err },
		func() bool { return victim.svc.hits.Load() >= 4 }, victim.srv.Stop)
}
