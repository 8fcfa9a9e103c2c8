package agenttest

import "testing"

// CheckTunedAgainstPlain judges a test of per-Service overrides: one
// instance of each of two Services fails every call, and sequential calls
// counted how many reached it and how many the app saw fail. On the
// Service annotated outlier-consecutive-failures 2 and retry-max-attempts 1
// the failing instance must be ejected before the default's 5 calls and
// every call that reached it must fail (none retried); on the plain one
// the defaults hold (at least 5 before ejection, every one retried).
func CheckTunedAgainstPlain(t *testing.T, tunedHits int64, tunedFailures int, plainHits int64, plainFailures int) {
	t.Helper()
	if tunedHits >= 5 {
		t.Fatalf("with outlier-consecutive-failures 2 the failing instance got %d calls; want it ejected before the default's 5", tunedHits)
	}
	if int64(tunedFailures) != tunedHits {
		t.Fatalf("with retry-max-attempts 1, %d calls failed but %d reached the failing instance; want every one of them failed, none retried", tunedFailures, tunedHits)
	}
	if plainHits < 5 || plainFailures != 0 {
		t.Fatalf("plain Service: %d calls reached the failing instance, %d failed; want the defaults (at least 5 before ejection, all retried)", plainHits, plainFailures)
	}
}
