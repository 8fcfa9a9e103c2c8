package kratos_test

import (
	"context"
	"net"
	stdhttp "net/http"
	"sync/atomic"
	"testing"
	"time"

	transhttp "github.com/go-kratos/kratos/v2/transport/http"

	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
	kd "github.com/kubedisco/kubedisco/clients/go/kratos"
)

// TestKratosRetryOnlyIdempotentWithinBudget: two Kratos HTTP apps that
// answer every request 503. Through Kratos's HTTP client with kd.Retry's
// defaults, a POST is sent once; GETs are retried, but retries add at most
// the budget's 20% of the calls plus its burst of 10.
func TestKratosRetryOnlyIdempotentWithinBudget(t *testing.T) {
	agent := startWithSelector(t)
	var hits atomic.Int64
	var ins []*instance
	for _, ip := range []string{"127.0.46.2", "127.0.46.3"} {
		lis, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
		if err != nil {
			t.Fatal(err)
		}
		hs := transhttp.NewServer(transhttp.Listener(lis))
		hs.HandleFunc("/who", func(w stdhttp.ResponseWriter, _ *stdhttp.Request) {
			hits.Add(1)
			w.WriteHeader(stdhttp.StatusServiceUnavailable)
		})
		go func() { _ = hs.Start(context.Background()) }()
		t.Cleanup(func() { _ = hs.Stop(context.Background()) })
		// The gRPC port is not served: the manifest needs one.
		ins = append(ins, &instance{ip: ip, httpPort: lis.Addr().(*net.TCPAddr).Port, grpcPort: agenttest.FreePort(t, ip)})
	}
	agent.WriteManifest("echo.yaml", manifest(ins, []string{"1", "1"}))
	agent.WaitService("e2e", "echo", 10*time.Second, agenttest.HasIPs(ins[0].ip, ins[1].ip))

	ctx := context.Background()
	hcl := dialHTTP(t, agent, kd.Retry(nil, kd.WithClient(agent.Client)))

	const n = 200
	sent := func(method string) (tries int64) {
		before := hits.Load()
		for range n {
			if err := hcl.Invoke(ctx, method, "/who", nil, &struct{}{}); err == nil {
				t.Fatalf("%s /who succeeded; the apps answer 503", method)
			}
		}
		return hits.Load() - before
	}
	posts, gets := sent("POST"), sent("GET")
	t.Logf("%d calls each to two apps answering 503: POST reached them %d times, GET %d times (budget: %d retries at most)", n, posts, gets, n/5+10)
	if posts != n {
		t.Fatalf("%d POSTs reached the apps %d times; want each once (not idempotent: no retry)", n, posts)
	}
	if gets <= n || gets > n+n/5+10 {
		t.Fatalf("%d GETs reached the apps %d times; want retries (more than %d) within the budget (at most %d)", n, gets, n, n+n/5+10)
	}
}
