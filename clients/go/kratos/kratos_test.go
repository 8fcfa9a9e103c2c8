package kratos_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	stdhttp "net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-kratos/kratos/v2/middleware"
	"github.com/go-kratos/kratos/v2/registry"
	transgrpc "github.com/go-kratos/kratos/v2/transport/grpc"
	transhttp "github.com/go-kratos/kratos/v2/transport/http"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"

	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
	kd "github.com/kubedisco/kubedisco/clients/go/kratos"
)

// instance is one Kratos app: a Kratos gRPC server and a Kratos HTTP
// server on the same loopback address.
type instance struct {
	ip                 string
	grpcPort, httpPort int
}

func (i *instance) grpcAddr() string { return net.JoinHostPort(i.ip, fmt.Sprint(i.grpcPort)) }

// httpAddr is the address its HTTP server answers /who with.
func (i *instance) httpAddr() string { return net.JoinHostPort(i.ip, fmt.Sprint(i.httpPort)) }

func startInstance(t *testing.T, ip string) *instance {
	t.Helper()
	ctx := context.Background()
	glis, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	// Kratos's gRPC server serves the health service itself: the calls
	// below go to it.
	gs := transgrpc.NewServer(transgrpc.Listener(glis))
	go func() { _ = gs.Start(ctx) }()
	t.Cleanup(func() { _ = gs.Stop(ctx) })

	hlis, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	hs := transhttp.NewServer(transhttp.Listener(hlis))
	who := hlis.Addr().String()
	hs.HandleFunc("/who", func(w stdhttp.ResponseWriter, r *stdhttp.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"addr": who})
	})
	go func() { _ = hs.Start(ctx) }()
	t.Cleanup(func() { _ = hs.Stop(ctx) })
	return &instance{ip: ip, grpcPort: glis.Addr().(*net.TCPAddr).Port, httpPort: hlis.Addr().(*net.TCPAddr).Port}
}

func manifest(ins []*instance, weights []string) string {
	return serviceManifest("echo", ins, weights)
}

// serviceManifest is a headless Service name.e2e with one slice per
// instance, its grpc and http ports.
func serviceManifest(name string, ins []*instance, weights []string) string {
	var slices []agenttest.Slice
	for i, in := range ins {
		slices = append(slices, agenttest.Slice{
			Name: fmt.Sprintf("%s-%d", name, i), Weight: weights[i],
			Ports:     map[string]int{"grpc": in.grpcPort, "http": in.httpPort},
			Endpoints: []agenttest.SliceEndpoint{{IP: in.ip}},
		})
	}
	return agenttest.ServiceYAML("e2e", name, []string{"grpc", "http"}, slices...)
}

// TestKratosClientsThroughTheAgent: Kratos's own gRPC and HTTP clients,
// with discovery:///echo.e2e and this Discovery, call Kratos servers:
// weights 1:3 by Kratos's wrr selector, scale-up and readiness changes.
func TestKratosClientsThroughTheAgent(t *testing.T) {
	agent := agenttest.StartAgent(t)
	light, heavy := startInstance(t, "127.0.31.2"), startInstance(t, "127.0.31.3")
	agent.WriteManifest("echo.yaml", manifest([]*instance{light, heavy}, []string{"1", "3"}))
	agent.WaitService("e2e", "echo", 10*time.Second, agenttest.HasIPs(light.ip, heavy.ip))
	dis := kd.New(agent.Client)

	ctx := context.Background()
	conn, err := transgrpc.DialInsecure(ctx, transgrpc.WithEndpoint("discovery:///echo.e2e"), transgrpc.WithDiscovery(dis))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	callGRPC := func(n int) (map[string]int, int) {
		return agenttest.CountCalls(n, func() (string, error) { return checkAddr(ctx, hc) })
	}
	if !agenttest.Until(10*time.Second, func() bool { c, _ := callGRPC(40); return c[light.grpcAddr()] > 0 && c[heavy.grpcAddr()] > 0 }) {
		t.Fatal("the Kratos gRPC client did not reach both instances within 10s")
	}
	const n = 20000
	counts, failed := callGRPC(n)
	share := float64(counts[light.grpcAddr()]) / n
	t.Logf("Kratos gRPC, weights 1:3 over %d calls: %d / %d (%.2f%% light), %d failed", n, counts[light.grpcAddr()], counts[heavy.grpcAddr()], 100*share, failed)
	if failed != 0 || math.Abs(share-0.25) > 0.02 {
		t.Fatalf("light share %.4f, %d failed; want 0.25 within 2 points", share, failed)
	}

	// Kratos's HTTP client, on the same Discovery.
	who := whoCaller(dialHTTP(t, agent))
	seen := map[string]bool{}
	for range 40 {
		addr, err := who()
		if err != nil {
			t.Fatalf("Kratos HTTP client: %v", err)
		}
		seen[addr] = true
	}
	if !seen[light.httpAddr()] || !seen[heavy.httpAddr()] {
		t.Fatalf("Kratos HTTP client reached %v; want both instances", seen)
	}

	// Scale up, then the light instance turns unready: both reach the
	// clients.
	third := startInstance(t, "127.0.31.4")
	all := []*instance{light, heavy, third}
	agent.WriteManifest("echo.yaml", manifest(all, []string{"1", "3", "1"}))
	_, shown := agent.WaitService("e2e", "echo", 10*time.Second, agenttest.HasIPs(light.ip, heavy.ip, third.ip))
	if !agenttest.Until(10*time.Second, func() bool { c, _ := callGRPC(8); return c[third.grpcAddr()] > 0 }) {
		t.Fatal("the new instance got no Kratos gRPC call within 10s of the agent listing it")
	}
	t.Logf("scale-up: first Kratos gRPC call on the new instance within %s of the agent's API showing it", time.Since(shown).Round(time.Millisecond))

	unready := manifest(all, []string{"1", "3", "1"})
	agent.WriteManifest("echo.yaml", unreadyFirst(unready, light.ip))
	_, shown = agent.WaitService("e2e", "echo", 10*time.Second, agenttest.HasIPs(heavy.ip, third.ip))
	if !agenttest.Until(10*time.Second, func() bool { c, _ := callGRPC(400); return c[light.grpcAddr()] == 0 }) {
		t.Fatal("the unready instance still gets Kratos gRPC calls 10s after the agent dropped it")
	}
	t.Logf("readiness: the unready instance stopped getting Kratos gRPC calls within %s of the agent's API dropping it", time.Since(shown).Round(time.Millisecond))
}

// dialHTTP makes Kratos's HTTP client of echo.e2e through the agent, with
// middleware mw.
func dialHTTP(t *testing.T, agent *agenttest.Agent, mw ...middleware.Middleware) *transhttp.Client {
	t.Helper()
	// A transport of its own, whose connections the test closes: a
	// connection dialled for a call that another one then served stays
	// new to the server, and http.Server.Shutdown waits 5s for those.
	tr := &stdhttp.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return newHTTPClient(t, agent, "echo.e2e", tr, mw...)
}

// newHTTPClient makes Kratos's HTTP client of discovery:///<service>
// through the agent, over tr, with middleware mw; it blocks until the
// agent has given it the instances.
func newHTTPClient(t *testing.T, agent *agenttest.Agent, service string, tr stdhttp.RoundTripper, mw ...middleware.Middleware) *transhttp.Client {
	t.Helper()
	hcl, err := transhttp.NewClient(context.Background(), transhttp.WithEndpoint("discovery:///"+service), transhttp.WithTransport(tr),
		transhttp.WithDiscovery(kd.New(agent.Client)), transhttp.WithBlock(), transhttp.WithMiddleware(mw...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hcl.Close() })
	return hcl
}

// whoCaller makes GET /who calls with hcl, which return the address of
// the HTTP server that answered.
func whoCaller(hcl *transhttp.Client) func() (string, error) {
	return func() (string, error) {
		var reply struct{ Addr string }
		err := hcl.Invoke(context.Background(), "GET", "/who", nil, &reply)
		return reply.Addr, err
	}
}

// checkAddr makes one health check and returns the address that answered.
func checkAddr(ctx context.Context, hc healthpb.HealthClient) (string, error) {
	var p peer.Peer
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p)); err != nil {
		return "", err
	}
	return p.Addr.String(), nil
}

// unreadyFirst marks ip not ready in a manifest.
func unreadyFirst(m, ip string) string {
	prefix := "- addresses: [" + ip + "]\n  conditions: {ready: "
	return strings.Replace(m, prefix+"true}", prefix+"false}", 1)
}

func TestRegisterIsReadOnly(t *testing.T) {
	var r registry.Registrar = kd.New(nil)
	if err := r.Register(context.Background(), &registry.ServiceInstance{Name: "x"}); !errors.Is(err, kd.ErrReadOnly) {
		t.Fatalf("Register: %v, want ErrReadOnly", err)
	}
}
