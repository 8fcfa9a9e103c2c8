package gozero_test

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/zeromicro/go-zero/zrpc"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/kubedisco/kubedisco/clients/go/gozero"
	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
)

// Against the real control plane: an agent with --source kubernetes, a
// Service with a selector and Pods the EndpointSlice controller publishes
// once the test marks them Ready; zrpc servers listen on the Pods'
// loopback addresses, and a zrpc client with gozero.ClientOptions calls
// them through kubedisco://<agent>/echo.<ns>:grpc.

// clusterZrpc starts a zrpc server per weight on the Pods' loopback
// addresses, serves them as the Service echo (port grpc, Pod labels
// kubedisco.io/weight), waits until the agent shows them with their
// weights, and returns them, their Pods and a zrpc client of echo
// (gozero.ClientOptions, dialling the Pods through DialPod).
func clusterZrpc(t *testing.T, c *agenttest.Cluster, agent *agenttest.Agent, weights []uint32) ([]*server, []agenttest.Pod, healthpb.HealthClient) {
	t.Helper()
	var servers []*server
	pods := c.ServeWeighted(agent, "echo", []string{"grpc"}, weights, func(ip string) map[string]int {
		s := startServer(t, ip)
		servers = append(servers, s)
		return map[string]int{"grpc": s.port}
	})

	target := strings.Replace(gozero.Target("echo."+c.Namespace, "grpc"), ":///", "://"+agent.HTTPAddr+"/", 1)
	opts := append(gozero.ClientOptions(), zrpc.WithDialOption(grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
		return agenttest.DialPod(ctx, "tcp", addr)
	})))
	client, err := zrpc.NewClient(zrpc.RpcClientConf{Target: target, NonBlock: true}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Conn().Close() })
	return servers, pods, healthpb.NewHealthClient(client.Conn())
}

// TestZrpcClusterWeightsReadinessAndScale: two Pods labelled with
// weights 1 and 3 (--pod-weights) get 25% / 75% of 20 000 zrpc calls;
// the light one marked not Ready gets no more calls, and Ready again gets
// them back; a third Pod created gets calls, and deleted gets none, with
// no call failing.
func TestZrpcClusterWeightsReadinessAndScale(t *testing.T) {
	c := agenttest.NewCluster(t, "gozero-weights")
	agent := c.StartAgent("--pod-weights")
	servers, pods, hc := clusterZrpc(t, c, agent, []uint32{1, 3})
	callAddr := func() (string, error) { return call(hc) }
	agenttest.CheckWeights(t, "zrpc", 20000, callAddr, servers[0].addr, servers[1].addr)
	c.CheckReadiness(t, "zrpc", pods[0], servers[0].addr, callAddr)
	third := startServer(t, c.Loopback(2))
	c.CheckScale(t, "zrpc", "echo", 2, agenttest.PodSpec{Ports: map[string]int{"grpc": third.port}, Weight: "1"}, third.addr, callAddr)
}

// TestZrpcClusterKilledPod: three Ready Pods, zrpc calls from 4
// goroutines; one Pod's server is killed with 2 calls in flight
// (Kubernetes still lists it Ready). gozero.ClientOptions retries them,
// and the ones sent there until the balancer leaves it out, on another
// Pod: no call fails.
func TestZrpcClusterKilledPod(t *testing.T) {
	c := agenttest.NewCluster(t, "gozero-kill")
	agent := c.StartAgent()
	servers, _, hc := clusterZrpc(t, c, agent, []uint32{100, 100, 100})
	victim := servers[0]
	victim.svc.hold.Arm(2)
	agenttest.KillUnderLoad(t, "zrpc", 4, func() error { _, err := call(hc); return err },
		func() bool { return victim.svc.hold.Held() == 2 },
		func() { victim.kill(); victim.svc.hold.Free() })
}
