package agenttest

import (
	"math"
	"testing"
	"time"
)

// CheckWeights waits until calls reach the servers at light and heavy
// (weights 1 and 3; a client may take a moment to connect to both), then
// makes n calls (CountCalls) and fails the test unless those two answer
// 25% and 75% of them within 2 points and none fails; it logs the shares
// for what.
func CheckWeights(t *testing.T, what string, n int, call func() (string, error), light, heavy string) {
	t.Helper()
	if ok, _, _ := UntilWindow(10*time.Second, 40, call, func(m map[string]int) bool { return m[light] > 0 && m[heavy] > 0 }); !ok {
		t.Fatalf("%s: calls did not reach both servers within 10s", what)
	}
	start := time.Now()
	counts, failed := CountCalls(n, call)
	lightShare, heavyShare := float64(counts[light])/float64(n), float64(counts[heavy])/float64(n)
	t.Logf("%s weights 1:3 over %d calls (%d ms): %.2f%% / %.2f%% (%d / %d), %d failed", what, n, time.Since(start).Milliseconds(),
		100*lightShare, 100*heavyShare, counts[light], counts[heavy], failed)
	if failed != 0 || math.Abs(lightShare-0.25) > 0.02 || math.Abs(heavyShare-0.75) > 0.02 {
		t.Fatalf("%s: shares %.4f / %.4f, %d failed; want 0.25 / 0.75 within 2 points, none failed", what, lightShare, heavyShare, failed)
	}
}
