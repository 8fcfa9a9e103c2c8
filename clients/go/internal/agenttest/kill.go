package agenttest

import (
	"testing"
	"time"
)

// KillUnderLoad calls call from workers goroutines (StartLoad), lets 200
// calls end (the client has reached every server by then), waits until
// inFlight says the server to kill has calls under way, kills it,
// and lets 1000 more calls end. It fails the test if any call failed: the
// calls are idempotent, and the framework's resilience should retry those
// the dead server lost on another one.
func KillUnderLoad(t *testing.T, what string, workers int, call func() error, inFlight func() bool, kill func()) {
	t.Helper()
	load := StartLoad(workers, call)
	defer load.End()
	if !Until(10*time.Second, func() bool { return load.Done() >= 200 }) {
		t.Fatalf("%s: fewer than 200 calls ended within 10s (%d)", what, load.Done())
	}
	if !Until(10*time.Second, inFlight) {
		t.Fatalf("%s: no calls in flight on the server to kill within 10s", what)
	}
	killedAt := load.Done()
	killed := time.Now()
	kill()
	if !Until(20*time.Second, func() bool { return load.Done() >= killedAt+1000 }) {
		t.Fatalf("%s: fewer than 1000 calls ended within 20s of the kill (%d)", what, load.Done()-killedAt)
	}
	failures := load.Stop()
	t.Logf("%s: server killed after %d calls; %d calls in all, the 1000 after the kill within %d ms, %d failed; first errors: %v",
		what, killedAt, load.Done(), time.Since(killed).Milliseconds(), len(failures), load.FirstErrors())
	if len(failures) != 0 {
		t.Fatalf("%s: %d calls failed across the kill, first: %s", what, len(failures), failures[0])
	}
}
