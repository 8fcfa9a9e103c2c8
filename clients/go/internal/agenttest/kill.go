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
	defer load.Stop()
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

// KillWithCallsHeld calls call from 4 goroutines, kills a server (kill)
// once 2 of its calls are held in flight (hold), frees them, and lets 300
// more calls end: enough that the dead server had its share of picks
// until the client left it out. It returns how many calls succeeded and
// failed in all, for the caller to judge (with the client's retries, or
// without them as a control).
func KillWithCallsHeld(t *testing.T, what string, hold *Hold, call func() error, kill func()) (ok, failed int64) {
	t.Helper()
	hold.Arm(2)
	load := StartLoad(4, call)
	defer load.Stop()
	if !Until(10*time.Second, func() bool { return hold.Held() == 2 }) {
		t.Fatalf("%s: %d calls in flight on the server to kill after 10s; want 2", what, hold.Held())
	}
	kill()
	killedAt := load.Done()
	hold.Free()
	if !Until(10*time.Second, func() bool { return load.Done() >= killedAt+300 }) {
		t.Fatalf("%s: fewer than 300 calls within 10s of the kill", what)
	}
	load.Stop()
	ok, failed = load.Calls()
	t.Logf("%s: server killed with 2 calls in flight; %d calls succeeded, %d failed (%d made after the kill); first errors: %v",
		what, ok, failed, ok+failed-killedAt, load.FirstErrors())
	return ok, failed
}
