package kratos_test

import (
	"context"
	"net"
	"testing"

	"github.com/go-kratos/kratos/v2/middleware"
	transgrpc "github.com/go-kratos/kratos/v2/transport/grpc"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
	kd "github.com/kubedisco/kubedisco/clients/go/kratos"
)

// Against the real control plane: an agent with --source kubernetes, a
// Service with a selector and Pods the EndpointSlice controller publishes
// once the test marks them Ready; Kratos apps (gRPC and HTTP servers)
// listen on the Pods' loopback addresses, and Kratos's gRPC and HTTP
// clients call them through discovery:///echo.<ns> and this Discovery.

// clusterApps starts a Kratos app per weight on the Pods' loopback
// addresses, serves them as the Service echo (ports grpc and http, Pod
// labels kubedisco.io/weight), and waits until the agent shows them with
// their weights.
func clusterApps(t *testing.T, c *agenttest.Cluster, agent *agenttest.Agent, weights []uint32) ([]*killable, []agenttest.Pod) {
	t.Helper()
	var apps []*killable
	pods := c.ServeWeighted(agent, "echo", []string{"grpc", "http"}, weights, func(ip string) map[string]int {
		k := startKillable(t, ip)
		apps = append(apps, k)
		return map[string]int{"grpc": k.grpcPort, "http": k.httpPort}
	})
	return apps, pods
}

// dialClusterEcho is Kratos's gRPC client of echo in the test's namespace,
// with middleware mw, dialling the Pods through DialPod; the function it
// returns makes one health check and returns the address that answered.
func dialClusterEcho(t *testing.T, c *agenttest.Cluster, agent *agenttest.Agent, mw ...middleware.Middleware) func() (string, error) {
	t.Helper()
	ctx := context.Background()
	conn, err := transgrpc.DialInsecure(ctx, transgrpc.WithEndpoint("discovery:///echo."+c.Namespace),
		transgrpc.WithDiscovery(kd.New(agent.Client)), transgrpc.WithMiddleware(mw...),
		transgrpc.WithOptions(grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return agenttest.DialPod(ctx, "tcp", addr)
		})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	hc := healthpb.NewHealthClient(conn)
	return func() (string, error) { return checkAddr(ctx, hc) }
}

// dialClusterHTTP is Kratos's HTTP client of echo in the test's
// namespace, with middleware mw, over an http.Transport that dials the
// Pods through DialPod; the function it returns makes one GET /who and
// returns the address that answered.
func dialClusterHTTP(t *testing.T, c *agenttest.Cluster, agent *agenttest.Agent, mw ...middleware.Middleware) func() (string, error) {
	t.Helper()
	return whoCaller(newHTTPClient(t, agent, "echo."+c.Namespace, agenttest.PodTransport(t), mw...))
}

// TestKratosClusterWeightsReadinessAndScale: Kratos's gRPC client
// (health checks, the default wrr global selector) and its HTTP client
// (GET /who, kd.NewSelector over wrr as the global selector), each with
// an agent of its own: two Pods labelled with weights 1 and 3
// (--pod-weights) get 25% / 75% of 20 000 calls; the light one marked not
// Ready gets no more calls, and Ready again gets them back; a third Pod
// created gets calls, and deleted gets none, with no call failing.
func TestKratosClusterWeightsReadinessAndScale(t *testing.T) {
	for _, kind := range []string{"grpc", "http"} {
		t.Run(kind, func(t *testing.T) {
			c := agenttest.NewCluster(t, "kratos-weights-"+kind)
			agent := c.StartAgent("--pod-weights")
			dial, what, addr := dialClusterEcho, "Kratos gRPC", (*killable).grpcAddr
			if kind == "http" {
				useSelector(t, kd.NewSelector(nil, nil, kd.WithClient(agent.Client)))
				dial, what, addr = dialClusterHTTP, "Kratos HTTP", (*killable).httpAddr
			}
			apps, pods := clusterApps(t, c, agent, []uint32{1, 3})
			call := dial(t, c, agent)
			agenttest.CheckWeights(t, what, 20000, call, addr(apps[0]), addr(apps[1]))
			c.CheckReadiness(t, what, pods[0], addr(apps[0]), call)
			third := startKillable(t, c.Loopback(2))
			spec := agenttest.PodSpec{Ports: map[string]int{"grpc": third.grpcPort, "http": third.httpPort}, Weight: "1"}
			c.CheckScale(t, what, "echo", 2, spec, addr(third), call)
		})
	}
}

// TestKratosClusterKilledPod: three Ready Pods, Kratos gRPC calls (health
// checks) or HTTP calls (idempotent GETs) from 4 goroutines through
// kd.NewSelector and kd.Retry; one Pod's app is killed with 2 calls in
// flight (Kubernetes still lists it Ready). The calls in flight, and the
// ones sent there until it is left out, are retried on another Pod: no
// call fails.
func TestKratosClusterKilledPod(t *testing.T) {
	for _, kind := range []string{"grpc", "http"} {
		t.Run(kind, func(t *testing.T) {
			c := agenttest.NewCluster(t, "kratos-kill-"+kind)
			agent := c.StartAgent()
			useSelector(t, kd.NewSelector(nil, nil, kd.WithClient(agent.Client)))
			apps, _ := clusterApps(t, c, agent, []uint32{100, 100, 100})
			dial, what := dialClusterEcho, "Kratos gRPC"
			if kind == "http" {
				dial, what = dialClusterHTTP, "Kratos HTTP"
			}
			call := dial(t, c, agent, kd.Retry(nil, kd.WithClient(agent.Client)))
			victim := apps[0]
			victim.hold.Arm(2)
			agenttest.KillUnderLoad(t, what, 4, func() error { _, err := call(); return err },
				func() bool { return victim.hold.Held() == 2 },
				func() { victim.kill(); victim.hold.Free() })
		})
	}
}
