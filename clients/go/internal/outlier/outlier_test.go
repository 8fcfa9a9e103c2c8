package outlier

import (
	"slices"
	"testing"
	"time"
)

func TestMaxEjected(t *testing.T) {
	for _, c := range []struct{ n, percent, want int }{
		{0, 50, 0}, {1, 50, 0}, {1, 100, 0},
		{2, 50, 1}, {2, 10, 1}, {2, 100, 1},
		{3, 50, 1}, {4, 50, 2}, {10, 50, 5}, {10, 100, 9},
		{4, 0, 0}, {4, -1, 0},
	} {
		if got := MaxEjected(c.n, c.percent); got != c.want {
			t.Errorf("MaxEjected(%d, %d) = %d, want %d", c.n, c.percent, got, c.want)
		}
	}
}

func TestEjectionTime(t *testing.T) {
	for m, want := range map[int64]time.Duration{1: 30 * time.Second, 3: 90 * time.Second, 20: 300 * time.Second} {
		if got := EjectionTime(m, 30*time.Second, 300*time.Second); got != want {
			t.Errorf("EjectionTime(%d) = %s, want %s", m, got, want)
		}
	}
}

func TestFailurePercentageOutliers(t *testing.T) {
	counts := []Counts{
		{Successes: 2, Failures: 18},  // 90% of 20: out
		{Successes: 3, Failures: 17},  // 85%: not above the threshold
		{Successes: 1, Failures: 18},  // 19 requests: below the volume
		{Successes: 20, Failures: 0},  // healthy
		{Successes: 0, Failures: 100}, // 100%: out
	}
	rule := FailurePercentage{Threshold: 85, MinimumHosts: 1, RequestVolume: 20}
	if got := rule.Outliers(counts); !slices.Equal(got, []int{0, 4}) {
		t.Errorf("outliers %v, want [0 4]", got)
	}
	rule.MinimumHosts = 5 // only four have the volume
	if got := rule.Outliers(counts); got != nil {
		t.Errorf("with 5 hosts needed: outliers %v, want none", got)
	}
	for _, off := range []int{0, 100} {
		rule := FailurePercentage{Threshold: off, RequestVolume: 20}
		if got := rule.Outliers(counts); got != nil {
			t.Errorf("threshold %d: outliers %v, want none (rule off)", off, got)
		}
	}
}
