package kdgrpc

import (
	"testing"
	"time"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
)

// annotatedService serves flaky backends on ips as Service name of agent,
// with annotations on the Service.
func annotatedService(t *testing.T, agent *agenttest.Agent, name string, annotations map[string]string, ips ...string) []*flakyBackend {
	t.Helper()
	var fs []*flakyBackend
	for _, ip := range ips {
		fs = append(fs, startFlaky(t, ip, 0))
	}
	agent.WriteManifest(name+".yaml", agenttest.Annotate(manifest(name, e2eOf(fs...)...), annotations))
	agent.WaitService(namespace, name, 10*time.Second, agenttest.HasIPs(ips...))
	return fs
}

// TestE2EAnnotationsTuneTheChannel: the same client code (DialOptions'
// defaults: ejection after 5 failures in a row, up to 3 attempts) against
// two Services, one of them annotated with outlier-consecutive-failures
// "2" and retry-max-attempts "1". On the annotated one the failing
// instance is ejected after 2 calls and its failures reach the app (no
// retries); on the plain one it takes at least 5 calls, all retried
// elsewhere.
func TestE2EAnnotationsTuneTheChannel(t *testing.T) {
	agent := agenttest.StartAgent(t)
	tuned := annotatedService(t, agent, "tuned", map[string]string{
		"kubedisco.io/outlier-consecutive-failures": "2",
		"kubedisco.io/outlier-base-ejection-time":   "300s",
		"kubedisco.io/retry-max-attempts":           "1",
	}, "127.0.21.2", "127.0.21.3", "127.0.21.4")
	plain := annotatedService(t, agent, "plain", map[string]string{
		"kubedisco.io/outlier-base-ejection-time": "300s",
	}, "127.0.21.5", "127.0.21.6", "127.0.21.7")

	// The agent's API carries the validated settings.
	svc, _ := agent.WaitService(namespace, "tuned", 10*time.Second, func(s *kubedisco.Service) bool {
		return s.Resilience != nil && s.Resilience.Outlier != nil && s.Resilience.Retry != nil
	})
	if c, a := svc.Resilience.Outlier.ConsecutiveFailures, svc.Resilience.Retry.MaxAttempts; c == nil || *c != 2 || a == nil || *a != 1 {
		t.Fatalf("the agent serves resilience %+v %+v", svc.Resilience.Outlier, svc.Resilience.Retry)
	}

	run := func(name string, fs []*flakyBackend) (badHits int64, failures int) {
		conn := dial(t, target(agent, name), InsecureDialOptions()...)
		waitServed(t, conn, 10*time.Second, fs[0].Addr, fs[1].Addr, fs[2].Addr)
		fs[0].svc.fail.Store(true)
		before := fs[0].svc.hits.Load()
		// One call at a time, so that each outcome is recorded before the
		// next pick: the count of calls the failing one gets is exact.
		_, failures, _ = rpcs(t, conn, 300, 1)
		return fs[0].svc.hits.Load() - before, failures
	}
	tunedHits, tunedFailures := run("tuned", tuned)
	plainHits, plainFailures := run("plain", plain)
	t.Logf("failing instance: annotated Service: %d calls reached it, %d failed; plain Service: %d reached it, %d failed",
		tunedHits, tunedFailures, plainHits, plainFailures)
	agenttest.CheckTunedAgainstPlain(t, tunedHits, tunedFailures, plainHits, plainFailures)
}
