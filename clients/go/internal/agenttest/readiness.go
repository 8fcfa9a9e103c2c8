package agenttest

import (
	"testing"
	"time"
)

// UntilWindow makes windows of n calls (CountCalls) until cond holds for
// one window's counts by address, for at most timeout. It returns whether
// one did, when that window ended, and how many calls failed in all.
func UntilWindow(timeout time.Duration, n int, call func() (string, error), cond func(map[string]int) bool) (ok bool, at time.Time, failed int) {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		counts, f := CountCalls(n, call)
		failed += f
		if cond(counts) {
			return true, time.Now(), failed
		}
	}
	return false, time.Time{}, failed
}

// CheckReadiness marks pod not Ready, waits until a window of 200 calls
// has none answered at addr (its server), marks it Ready again and waits
// until calls reach addr again. Each wait is timed from the start of the
// status patch (the kubectl run included: its own time is logged too)
// and logged for what; the test fails if a wait runs out (20s) or a call
// fails (the server never stops: nothing should).
func (c *Cluster) CheckReadiness(t *testing.T, what string, pod Pod, addr string, call func() (string, error)) {
	t.Helper()
	const window = 200
	patched := time.Now()
	c.SetReady(pod, false)
	kubectlTook := time.Since(patched)
	ok, gone, failedUnready := UntilWindow(20*time.Second, window, call, func(m map[string]int) bool { return m[addr] == 0 })
	if !ok {
		t.Fatalf("%s: %s, marked not Ready, still gets calls 20s later", what, pod.Name)
	}
	unready := gone.Sub(patched)

	patched = time.Now()
	c.SetReady(pod, true)
	kubectlAgain := time.Since(patched)
	ok, back, failedReady := UntilWindow(20*time.Second, window, call, func(m map[string]int) bool { return m[addr] > 0 })
	if !ok {
		t.Fatalf("%s: %s, Ready again, got no call within 20s", what, pod.Name)
	}
	ready := back.Sub(patched)
	t.Logf("%s readiness (status patch → end of the first window of %d calls that shows it): not Ready %d ms (kubectl %d ms), Ready again %d ms (kubectl %d ms); %d calls failed",
		what, window, unready.Milliseconds(), kubectlTook.Milliseconds(), ready.Milliseconds(), kubectlAgain.Milliseconds(), failedUnready+failedReady)
	if failedUnready+failedReady != 0 {
		t.Fatalf("%s: %d calls failed while %s's readiness changed; want none (its server kept answering)", what, failedUnready+failedReady, pod.Name)
	}
}
