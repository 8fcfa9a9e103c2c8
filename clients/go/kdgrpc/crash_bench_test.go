package kdgrpc

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
)

// BenchmarkCrashFailedCalls measures the share of calls that fail when one
// of four instances crashes mid-run, with and without outlier ejection and
// retries. A real agent serves the Service; four real gRPC servers on
// loopback addresses answer (5 ms per call); the client sends crashRate
// calls a second, open loop (a call does not wait for the one before it),
// for crashDuration, and one instance crashes crashAt into the run. The agent
// keeps listing the crashed instance throughout, as Kubernetes does until
// its readiness probe fails.
//
// Two kinds of crash:
//   - killed: the server process dies (listener and connections closed:
//     refused and reset);
//   - failing: the process keeps its port but every call fails with
//     UNAVAILABLE (the app crashed behind a live listener, or lost a
//     dependency).
//
// Run it with -benchtime 1x (one run of crashDuration per case); see
// bench/RESULTS.md.
func BenchmarkCrashFailedCalls(b *testing.B) {
	agent := agenttest.StartAgent(b)
	configs := []struct {
		name string
		opts []grpc.DialOption
	}{
		{"none", []grpc.DialOption{grpc.WithDefaultServiceConfig(WeightedOnlyServiceConfig)}},
		{"ejection", []grpc.DialOption{grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"kubedisco_weighted":{"outlierDetection":{}}}]}`)}},
		{"retries", []grpc.DialOption{
			// ServiceConfig's retries without its ejection.
			grpc.WithDefaultServiceConfig(`{"loadBalancingConfig":[{"kubedisco_weighted":{}}],
			  "methodConfig":[{"name":[{}],"retryPolicy":{"maxAttempts":3,"initialBackoff":"0.005s","maxBackoff":"0.05s","backoffMultiplier":2,"retryableStatusCodes":["UNAVAILABLE"]}}],
			  "retryThrottling":{"maxTokens":100,"tokenRatio":0.2}}`),
			grpc.WithChainUnaryInterceptor(UnaryClientInterceptor()),
		}},
		{"ejection+retries", DialOptions()},
	}
	run := 0
	for _, crash := range []string{"killed", "failing"} {
		for _, cfg := range configs {
			run++
			b.Run(crash+"/"+cfg.name, func(b *testing.B) {
				var total, failed, failedAfter int
				for iter := range b.N {
					t, f, fa := crashRun(b, agent, run, iter, crash, cfg.opts)
					total, failed, failedAfter = total+t, failed+f, failedAfter+fa
				}
				b.ReportMetric(100*float64(failed)/float64(total), "failed-%")
				b.ReportMetric(float64(failed)/float64(b.N), "failed/op")
				b.ReportMetric(float64(total)/float64(b.N), "calls/op")
				b.Logf("%s, %s: %d of %d calls failed (%.2f%%), %d of them after the crash",
					crash, cfg.name, failed, total, 100*float64(failed)/float64(total), failedAfter)
			})
		}
	}
}

const (
	crashRate     = 500 // calls per second
	crashDuration = 6 * time.Second
	crashAt       = 2 * time.Second
)

// crashRun runs one case; it returns the calls made, how many failed, and
// how many of those ended after the crash.
func crashRun(b *testing.B, agent *agenttest.Agent, run, iter int, crash string, opts []grpc.DialOption) (total, failed, failedAfter int) {
	b.StopTimer()
	name := fmt.Sprintf("crash-%d-%d", run, iter)
	var fs []*flakyBackend
	var ips []string
	for k := range 4 {
		ip := fmt.Sprintf("127.0.%d.%d", 30+run, 2+4*iter+k)
		fs = append(fs, startFlaky(b, ip, 5*time.Millisecond))
		ips = append(ips, ip)
	}
	agent.WriteManifest(name+".yaml", manifest(name, e2eOf(fs...)...))
	agent.WaitService(namespace, name, 10*time.Second, agenttest.HasIPs(ips...))
	conn, err := grpc.NewClient(target(agent, name), append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	hc := healthpb.NewHealthClient(conn)
	// Warm: every instance connected and serving.
	seen := map[string]bool{}
	if !agenttest.Until(10*time.Second, func() bool {
		if addr, err := call(context.Background(), hc); err == nil {
			seen[addr] = true
		}
		return len(seen) == len(fs)
	}) {
		b.Fatalf("not every instance served within 10s: %v", seen)
	}

	b.StartTimer()
	var wg sync.WaitGroup
	var crashed atomic.Bool
	var mu sync.Mutex
	tick := time.NewTicker(time.Second / crashRate)
	defer tick.Stop()
	start := time.Now()
	for now := range tick.C {
		if now.Sub(start) >= crashDuration {
			break
		}
		if !crashed.Load() && now.Sub(start) >= crashAt {
			crashed.Store(true)
			if crash == "killed" {
				fs[0].srv.Stop()
			} else {
				fs[0].svc.fail.Store(true)
			}
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			_, err := hc.Check(ctx, &healthpb.HealthCheckRequest{})
			after := crashed.Load()
			mu.Lock()
			total++
			if err != nil {
				failed++
				if after {
					failedAfter++
				}
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	b.StopTimer()
	return total, failed, failedAfter
}
