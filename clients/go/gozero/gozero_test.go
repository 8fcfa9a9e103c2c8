package gozero_test

import (
	"context"
	"fmt"
	"math"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zeromicro/go-zero/core/logx"
	"github.com/zeromicro/go-zero/core/service"
	"github.com/zeromicro/go-zero/zrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/kubedisco/kubedisco/clients/go/gozero"
	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
)

// echo is the zrpc servers' service: the health service, failing on
// request.
type echo struct {
	healthpb.UnimplementedHealthServer
	fail atomic.Bool
	hold *agenttest.Hold
}

func (e *echo) Check(context.Context, *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	e.hold.Enter()
	if e.fail.Load() {
		return nil, status.Error(codes.Unavailable, "failing on purpose")
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

type server struct {
	ip   string
	port int
	addr string
	svc  *echo
	grpc chan *grpc.Server // the zrpc server's, once it is made
}

// kill closes the server's listener and connections without waiting for
// the calls in flight, as when its process dies.
func (s *server) kill() {
	g := <-s.grpc
	g.Stop()
}

// startServer runs a go-zero zrpc server on ip.
func startServer(t *testing.T, ip string) *server {
	t.Helper()
	port := agenttest.FreePort(t, ip)
	s := &server{ip: ip, port: port, addr: net.JoinHostPort(ip, fmt.Sprint(port)), svc: &echo{hold: agenttest.NewHold()}, grpc: make(chan *grpc.Server, 1)}
	t.Cleanup(s.svc.hold.Free)
	conf := zrpc.RpcServerConf{
		ServiceConf: service.ServiceConf{Name: "echo", Log: logx.LogConf{Mode: "console", Level: "error"}},
		ListenOn:    s.addr,
	}
	srv, err := zrpc.NewServer(conf, func(g *grpc.Server) {
		healthpb.RegisterHealthServer(g, s.svc)
		s.grpc <- g
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(srv.Stop)
	return s
}

func manifest(servers []*server, weights []string) string {
	return manifestUnready(servers, weights)
}

// manifestUnready is manifest with the servers in notReady marked not
// ready.
func manifestUnready(servers []*server, weights []string, notReady ...*server) string {
	var eps []agenttest.Slice
	for i, s := range servers {
		eps = append(eps, agenttest.Slice{
			Name: fmt.Sprintf("echo-%d", i), Weight: weights[i],
			Ports:     map[string]int{"grpc": s.port},
			Endpoints: []agenttest.SliceEndpoint{{IP: s.ip, NotReady: slices.Contains(notReady, s)}},
		})
	}
	return agenttest.ServiceYAML("e2e", "echo", []string{"grpc"}, eps...)
}

// dialZrpc makes a zrpc client of echo.e2e's grpc port with opts. The
// target names the test's agent (kubedisco://<agent>/...): the default
// one, KUBEDISCO_ADDR, is read once per process.
func dialZrpc(t *testing.T, agent *agenttest.Agent, opts []zrpc.ClientOption) healthpb.HealthClient {
	t.Helper()
	target := strings.Replace(gozero.Target("echo.e2e", "grpc"), ":///", "://"+agent.HTTPAddr+"/", 1)
	client, err := zrpc.NewClient(zrpc.RpcClientConf{Target: target, NonBlock: true}, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = client.Conn().Close() })
	return healthpb.NewHealthClient(client.Conn())
}

// calls makes n calls and counts them by server.
func calls(hc healthpb.HealthClient, n int) (map[string]int, int) {
	return agenttest.CountCalls(n, func() (string, error) { return call(hc) })
}

// call makes one call and returns the server that answered.
func call(hc healthpb.HealthClient) (string, error) {
	var p peer.Peer
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
		return "", err
	}
	return p.Addr.String(), nil
}

// TestZrpcThroughTheAgent: a zrpc client calls zrpc servers through
// kubedisco:///echo.e2e:grpc: weights 1:3 are honoured, a new instance
// gets calls soon after the agent lists it, and an instance that fails
// every call is ejected.
func TestZrpcThroughTheAgent(t *testing.T) {
	agent := agenttest.StartAgent(t)
	light, heavy := startServer(t, "127.0.30.2"), startServer(t, "127.0.30.3")
	agent.WriteManifest("echo.yaml", manifest([]*server{light, heavy}, []string{"1", "3"}))
	agent.WaitService("e2e", "echo", 10*time.Second, agenttest.HasIPs(light.ip, heavy.ip))

	hc := dialZrpc(t, agent, gozero.ClientOptions())
	if !agenttest.Until(10*time.Second, func() bool { c, _ := calls(hc, 40); return c[light.addr] > 0 && c[heavy.addr] > 0 }) {
		t.Fatal("the zrpc client did not reach both servers within 10s")
	}

	const n = 20000
	counts, failed := calls(hc, n)
	lightShare := float64(counts[light.addr]) / n
	t.Logf("weights 1:3 over %d zrpc calls: %d / %d (%.2f%% light), %d failed", n, counts[light.addr], counts[heavy.addr], 100*lightShare, failed)
	if failed != 0 || math.Abs(lightShare-0.25) > 0.02 {
		t.Fatalf("light share %.4f, %d failed; want 0.25 within 2 points, none failed", lightShare, failed)
	}

	// Scale up: a third instance appears in the agent.
	third := startServer(t, "127.0.30.4")
	agent.WriteManifest("echo.yaml", manifest([]*server{light, heavy, third}, []string{"1", "3", "1"}))
	_, seen := agent.WaitService("e2e", "echo", 10*time.Second, agenttest.HasIPs(light.ip, heavy.ip, third.ip))
	if !agenttest.Until(10*time.Second, func() bool { c, _ := calls(hc, 8); return c[third.addr] > 0 }) {
		t.Fatal("the new instance got no zrpc call within 10s of the agent listing it")
	}
	t.Logf("scale-up: first zrpc call on the new instance within %s of the agent's API showing it", time.Since(seen).Round(time.Millisecond))

	// The heavy instance fails every call: ejected, and retries save the
	// calls it fails before that.
	heavy.svc.fail.Store(true)
	_, failedDuring := calls(hc, 400)
	counts, failed = calls(hc, 2000)
	t.Logf("heavy instance failing: %d of 400 calls failed while it was being ejected, then %d of 2000 (%v)", failedDuring, failed, counts)
	if failed > 20 || counts[heavy.addr] != 0 {
		t.Fatalf("after the ejection: %d of 2000 failed, %d served by the failing instance; want at most 1%% and none", failed, counts[heavy.addr])
	}
}
