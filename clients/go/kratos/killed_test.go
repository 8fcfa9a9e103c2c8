package kratos_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	stdhttp "net/http"
	"testing"
	"time"

	"github.com/go-kratos/kratos/v2/middleware"
	transgrpc "github.com/go-kratos/kratos/v2/transport/grpc"
	transhttp "github.com/go-kratos/kratos/v2/transport/http"
	"google.golang.org/grpc"

	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
	kd "github.com/kubedisco/kubedisco/clients/go/kratos"
)

// killable is a Kratos app (gRPC and HTTP servers on one address) that
// can be killed: its listeners and connections closed at once, calls in
// flight or not, as when its process dies.
type killable struct {
	instance
	hold *agenttest.Hold
	gs   *transgrpc.Server
	hs   *transhttp.Server
}

func startKillable(t *testing.T, ip string) *killable {
	t.Helper()
	k := &killable{hold: agenttest.NewHold()}
	t.Cleanup(k.hold.Free)
	ctx := context.Background()
	glis, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	k.gs = transgrpc.NewServer(transgrpc.Listener(glis), transgrpc.UnaryInterceptor(
		func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			k.hold.Enter()
			return h(ctx, req)
		}))
	go func() { _ = k.gs.Start(ctx) }()
	t.Cleanup(func() { _ = k.gs.Stop(ctx) })

	hlis, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	k.hs = transhttp.NewServer(transhttp.Listener(hlis))
	who := hlis.Addr().String()
	k.hs.HandleFunc("/who", func(w stdhttp.ResponseWriter, r *stdhttp.Request) {
		k.hold.Enter()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{"addr": who})
	})
	go func() { _ = k.hs.Start(ctx) }()
	t.Cleanup(func() { _ = k.hs.Stop(ctx) })
	k.instance = instance{ip: ip, grpcPort: glis.Addr().(*net.TCPAddr).Port, httpPort: hlis.Addr().(*net.TCPAddr).Port}
	return k
}

// kill closes the servers' listeners and connections without waiting for
// the calls in flight (grpc.Server.Stop, http.Server.Close).
func (k *killable) kill() {
	k.gs.Server.Stop()
	_ = k.hs.Server.Close()
}

// TestKratosKilledInstance: Kratos's gRPC client (health checks) and HTTP
// client (GET) call three Kratos apps through discovery:///echo.e2e from
// 4 goroutines; one app is killed while 2 calls are in flight on it. With
// kd.Retry (and kd.NewSelector) the app sees no failed call: the calls in
// flight and the ones that reach the dead instance before it is left out
// are retried on another. The control, without Retry, shows that the
// kill does fail calls.
func TestKratosKilledInstance(t *testing.T) {
	for _, kind := range []string{"grpc", "http"} {
		for _, retry := range []bool{true, false} {
			name := kind + "/retry"
			if !retry {
				name = kind + "/no-retry"
			}
			t.Run(name, func(t *testing.T) { killedInstance(t, kind, retry) })
		}
	}
}

func killedInstance(t *testing.T, kind string, retry bool) {
	agent := startWithSelector(t)
	base := map[string]byte{"grpc": 40, "http": 41}[kind]
	if !retry {
		base += 2
	}
	var ks []*killable
	var ins []*instance
	var ips []string
	for i := range 3 {
		ip := net.IPv4(127, 0, base, byte(2+i)).String()
		k := startKillable(t, ip)
		ks, ins, ips = append(ks, k), append(ins, &k.instance), append(ips, ip)
	}
	agent.WriteManifest("echo.yaml", manifest(ins, []string{"1", "1", "1"}))
	agent.WaitService("e2e", "echo", 10*time.Second, agenttest.HasIPs(ips...))

	var mw []middleware.Middleware
	if retry {
		mw = append(mw, kd.Retry(nil, kd.WithClient(agent.Client)))
	}
	call := kratosCaller(t, agent, kind, mw)
	seen := map[string]bool{}
	if !agenttest.Until(10*time.Second, func() bool {
		addr, err := call()
		if err == nil {
			seen[addr] = true
		}
		return len(seen) == 3
	}) {
		t.Fatalf("the Kratos %s client reached %v within 10s; want all three apps", kind, seen)
	}

	victim := ks[0]
	ok, failed := agenttest.KillWithCallsHeld(t, fmt.Sprintf("Kratos %s, retry %t", kind, retry), victim.hold,
		func() error { _, err := call(); return err }, victim.kill)
	if retry && failed != 0 {
		t.Fatalf("%d of %d calls failed; want none with kd.Retry", failed, ok+failed)
	}
	if !retry && failed < 2 {
		t.Fatalf("without Retry %d calls failed; want at least the 2 in flight on the killed app", failed)
	}
}

// kratosCaller returns a call through Kratos's gRPC (a health check) or
// HTTP (GET /who) client to echo.e2e; it returns the address that
// answered where it knows it.
func kratosCaller(t *testing.T, agent *agenttest.Agent, kind string, mw []middleware.Middleware) func() (string, error) {
	t.Helper()
	ctx := context.Background()
	if kind == "grpc" {
		hc := dialService(t, agent, "echo", mw...)
		return func() (string, error) { return checkAddr(ctx, hc) }
	}
	return whoCaller(dialHTTP(t, agent, mw...))
}
