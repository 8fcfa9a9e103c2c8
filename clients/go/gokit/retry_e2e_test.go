package gokit_test

import (
	"context"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"

	"github.com/kubedisco/kubedisco/clients/go/gokit"
	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
)

// throughGoKit serves fs as the Service who.e2e (with annotations) on
// agent and returns a call through go-kit's endpointer, round robin and
// the Ejecting instancer's Retry(3) with the defaults, as an app writes it.
func throughGoKit(t *testing.T, agent *agenttest.Agent, annotations map[string]string, fs ...*failable) endpoint.Endpoint {
	t.Helper()
	var servers []*server
	var ips []string
	for _, f := range fs {
		servers = append(servers, &f.server)
		ips = append(ips, f.ip)
	}
	agent.WriteManifest("who.yaml", agenttest.Annotate(manifest(servers, ""), annotations))
	agent.WaitService("e2e", "who", 10*time.Second, agenttest.HasIPs(ips...))
	instancer, err := gokit.NewInstancer(agent.Client, "who.e2e", "http", log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(instancer.Stop)
	ejecting := gokit.NewEjecting(instancer, nil)
	t.Cleanup(ejecting.Stop)
	endpointer := sd.NewEndpointer(ejecting, ejecting.Factory(strictFactory), log.NewNopLogger())
	t.Cleanup(endpointer.Close)
	call := ejecting.Retry(3, 5*time.Second, lb.NewRoundRobin(endpointer))
	if !agenttest.Until(10*time.Second, func() bool {
		seen := map[any]bool{}
		for range 3 * len(fs) {
			resp, err := call(context.Background(), nil)
			if err == nil {
				seen[resp] = true
			}
		}
		return len(seen) == len(fs)
	}) {
		t.Fatalf("go-kit did not reach all %d servers within 10s", len(fs))
	}
	return call
}

// TestGoKitAppliesServiceAnnotations: the same client code (Ejecting's
// defaults, Retry(3)) against a Service annotated with
// outlier-consecutive-failures "2" and retry-max-attempts "1", and against
// a plain one. On the annotated one the failing server is ejected after 2
// calls and their failures reach the app (no retries); on the plain one it
// takes the default 5 calls, all retried on another server.
func TestGoKitAppliesServiceAnnotations(t *testing.T) {
	run := func(annotations map[string]string, ips ...string) (badHits int64, failures int) {
		agent := agenttest.StartAgent(t)
		var fs []*failable
		for _, ip := range ips {
			fs = append(fs, startFailable(t, ip))
		}
		call := throughGoKit(t, agent, annotations, fs...)
		fs[0].failing.Store(true)
		before := fs[0].hits.Load()
		// One call at a time: each outcome is recorded before the next
		// pick, so the count of calls the failing server gets is exact.
		for range 300 {
			if _, err := call(context.Background(), nil); err != nil {
				failures++
			}
		}
		return fs[0].hits.Load() - before, failures
	}
	tunedHits, tunedFailures := run(map[string]string{
		"kubedisco.io/outlier-consecutive-failures": "2",
		"kubedisco.io/outlier-base-ejection-time":   "300s",
		"kubedisco.io/retry-max-attempts":           "1",
	}, "127.0.35.2", "127.0.35.3", "127.0.35.4")
	plainHits, plainFailures := run(map[string]string{
		"kubedisco.io/outlier-base-ejection-time": "300s",
	}, "127.0.35.5", "127.0.35.6", "127.0.35.7")
	t.Logf("failing server: annotated Service: %d calls reached it, %d failed; plain Service: %d reached it, %d failed",
		tunedHits, tunedFailures, plainHits, plainFailures)
	if tunedHits != 2 || tunedFailures != 2 {
		t.Fatalf("annotated: %d calls reached the failing server, %d failed; want 2 and 2 (ejected after 2, no retries)", tunedHits, tunedFailures)
	}
	if plainHits != 5 || plainFailures != 0 {
		t.Fatalf("plain: %d calls reached the failing server, %d failed; want 5 (the default) and none (retried)", plainHits, plainFailures)
	}
}

// TestGoKitRetryAcrossAKill: go-kit HTTP clients call three go-kit HTTP
// servers through the Ejecting instancer and Retry(3), from 8 goroutines;
// one server is killed with calls in flight (its connections closed under
// them). Every call, idempotent, that was in flight there or is sent there
// before it is ejected is retried on another server: the app sees no
// failed call.
func TestGoKitRetryAcrossAKill(t *testing.T) {
	agent := agenttest.StartAgent(t)
	var fs []*failable
	for _, ip := range []string{"127.0.36.2", "127.0.36.3", "127.0.36.4"} {
		fs = append(fs, startSlow(t, ip, 20*time.Millisecond))
	}
	call := throughGoKit(t, agent, nil, fs...)
	victim := fs[0]
	hitsAtStart := victim.hits.Load()
	// Close closes its connections under the calls in flight.
	agenttest.KillUnderLoad(t, "go-kit Retry", 8,
		func() error { _, err := call(context.Background(), nil); return err },
		func() bool { return victim.hits.Load() >= hitsAtStart+8 },
		func() { victim.srv.Close() })
}
