package kratos_test

import (
	"context"
	"net"
	"testing"
	"time"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
	kd "github.com/kubedisco/kubedisco/clients/go/kratos"
)

// TestKratosAnnotationsTuneTheClient: the same Kratos client code
// (kd.NewSelector and kd.Retry with the defaults: ejection after 5
// failures in a row, up to 3 tries) against two Services, one annotated
// with outlier-consecutive-failures "2" and retry-max-attempts "1". On
// the annotated one the failing instance is ejected after 2 calls and its
// failures reach the app (no retries); on the plain one it takes 5 calls,
// all retried on another instance.
func TestKratosAnnotationsTuneTheClient(t *testing.T) {
	agent := startWithSelector(t)
	serve := func(name string, annotations map[string]string, ip3 byte) []*failable {
		var fs []*failable
		var ins []*instance
		var ips []string
		for i := range 3 {
			ip := net.IPv4(127, 0, ip3, byte(2+i)).String()
			f := startFailable(t, ip)
			fs, ins, ips = append(fs, f), append(ins, &f.instance), append(ips, ip)
		}
		agent.WriteManifest(name+".yaml", agenttest.Annotate(serviceManifest(name, ins, []string{"1", "1", "1"}), annotations))
		agent.WaitService("e2e", name, 10*time.Second, agenttest.HasIPs(ips...))
		return fs
	}
	tuned := serve("tuned", map[string]string{
		"kubedisco.io/outlier-consecutive-failures": "2",
		"kubedisco.io/outlier-base-ejection-time":   "300s",
		"kubedisco.io/retry-max-attempts":           "1",
	}, 44)
	plain := serve("plain", map[string]string{"kubedisco.io/outlier-base-ejection-time": "300s"}, 45)
	agent.WaitService("e2e", "tuned", 10*time.Second, func(s *kubedisco.Service) bool {
		return s.Resilience != nil && s.Resilience.Retry != nil && s.Resilience.Outlier != nil
	})

	retry := kd.Retry(nil, kd.WithClient(agent.Client))
	run := func(name string, fs []*failable) (badHits int64, failures int) {
		hc := dialService(t, agent, name, retry)
		ctx := context.Background()
		seen := map[string]bool{}
		if !agenttest.Until(10*time.Second, func() bool {
			if addr, err := checkAddr(ctx, hc); err == nil {
				seen[addr] = true
			}
			return len(seen) == 3
		}) {
			t.Fatalf("%s: the Kratos client reached %v within 10s; want all three", name, seen)
		}
		fs[0].failing.Store(true)
		before := fs[0].hits.Load()
		// One call at a time, so that each outcome is recorded before the
		// next pick: the count of calls the failing one gets is exact.
		for range 300 {
			if _, err := checkAddr(ctx, hc); err != nil {
				failures++
			}
		}
		return fs[0].hits.Load() - before, failures
	}
	tunedHits, tunedFailures := run("tuned", tuned)
	plainHits, plainFailures := run("plain", plain)
	t.Logf("failing instance, 300 Kratos gRPC calls each: annotated Service: %d reached it, %d failed; plain Service: %d reached it, %d failed",
		tunedHits, tunedFailures, plainHits, plainFailures)
	agenttest.CheckTunedAgainstPlain(t, tunedHits, tunedFailures, plainHits, plainFailures)
}
