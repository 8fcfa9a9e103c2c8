package gozero_test

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/zeromicro/go-zero/zrpc"
	"google.golang.org/grpc"

	"github.com/kubedisco/kubedisco/clients/go/gozero"
	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
	"github.com/kubedisco/kubedisco/clients/go/kdgrpc"
)

// TestZrpcKilledInstance: a zrpc client with gozero.ClientOptions calls
// three zrpc servers through kubedisco:///echo.e2e:grpc from 4
// goroutines; one server is killed while 2 calls are in flight on it. The
// app sees no failed call: kdgrpc's retry policy sends the calls in flight
// and the ones that reach the dead server before the balancer leaves it
// out to another server. The control, with kubedisco_weighted alone (no
// retries, no ejection), shows that the kill does fail calls.
func TestZrpcKilledInstance(t *testing.T) {
	t.Run("ClientOptions", func(t *testing.T) { zrpcKilledInstance(t, 50, gozero.ClientOptions()) })
	t.Run("weighted-only", func(t *testing.T) {
		zrpcKilledInstance(t, 51, []zrpc.ClientOption{zrpc.WithDialOption(grpc.WithDefaultServiceConfig(kdgrpc.WeightedOnlyServiceConfig))})
	})
}

func zrpcKilledInstance(t *testing.T, ip3 byte, opts []zrpc.ClientOption) {
	retries := len(opts) > 1
	agent := agenttest.StartAgent(t)
	var servers []*server
	var ips []string
	for i := range 3 {
		ip := net.IPv4(127, 0, ip3, byte(2+i)).String()
		servers, ips = append(servers, startServer(t, ip)), append(ips, ip)
	}
	agent.WriteManifest("echo.yaml", manifest(servers, []string{"1", "1", "1"}))
	agent.WaitService("e2e", "echo", 10*time.Second, agenttest.HasIPs(ips...))

	hc := dialZrpc(t, agent, opts)
	if !agenttest.Until(10*time.Second, func() bool {
		c, _ := calls(hc, 40)
		return c[servers[0].addr] > 0 && c[servers[1].addr] > 0 && c[servers[2].addr] > 0
	}) {
		t.Fatal("the zrpc client did not reach all three servers within 10s")
	}

	victim := servers[0]
	ok, failed := agenttest.KillWithCallsHeld(t, fmt.Sprintf("zrpc, retries %t", retries), victim.svc.hold,
		func() error { _, err := call(hc); return err }, victim.kill)
	if retries && failed != 0 {
		t.Fatalf("%d of %d calls failed; want none with gozero.ClientOptions", failed, ok+failed)
	}
	if !retries && failed < 2 {
		t.Fatalf("without retries %d calls failed; want at least the 2 in flight on the killed server", failed)
	}
}
