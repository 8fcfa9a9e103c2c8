package agenttest

import (
	"testing"
	"time"
)

// CheckScale scales app up by one Pod and down again, as a Deployment's
// replicas would change: it creates Pod app-<i> (spec: the ports of the
// server the caller started at Loopback(i), which answers as addr) and
// marks it Ready, waits until a window of 200 calls reaches addr, then
// deletes the Pod and waits until a window of 200 calls has none at addr.
// The server keeps running throughout, so only discovery is tested: a
// call that failed would be the client still sending to an address it
// was told is gone, or a new one before it is reachable, not a dead
// server. Each wait is timed from the start of the kubectl create or
// delete (kubectl's own time is logged too) and logged for what; the
// test fails if a wait runs out (20s) or a call fails.
func (c *Cluster) CheckScale(t *testing.T, what, app string, i int, spec PodSpec, addr string, call func() (string, error)) {
	t.Helper()
	const window = 200
	created := time.Now()
	pod := c.AddPod(app, i, spec)
	kubectlUp := time.Since(created)
	ok, reached, failedUp := UntilWindow(20*time.Second, window, call, func(m map[string]int) bool { return m[addr] > 0 })
	if !ok {
		t.Fatalf("%s: %s, created and Ready, got no call within 20s (%d calls failed)", what, pod.Name, failedUp)
	}
	up := reached.Sub(created)

	deleted := time.Now()
	c.DeletePod(pod)
	kubectlDown := time.Since(deleted)
	ok, gone, failedDown := UntilWindow(20*time.Second, window, call, func(m map[string]int) bool { return m[addr] == 0 })
	if !ok {
		t.Fatalf("%s: %s, deleted, still gets calls 20s later (%d calls failed)", what, pod.Name, failedDown)
	}
	down := gone.Sub(deleted)
	t.Logf("%s scale (kubectl → end of the first window of %d calls that shows it): up %d ms (kubectl create + Ready patch %d ms), down %d ms (kubectl delete %d ms); %d calls failed",
		what, window, up.Milliseconds(), kubectlUp.Milliseconds(), down.Milliseconds(), kubectlDown.Milliseconds(), failedUp+failedDown)
	if failedUp+failedDown != 0 {
		t.Fatalf("%s: %d calls failed while %s was added and deleted; want none (its server kept answering)", what, failedUp+failedDown, pod.Name)
	}
}
