package wrr

import (
	"math"
	"reflect"
	"testing"
)

func TestSmoothMatchesNginxSequence(t *testing.T) {
	s := NewSmooth([]int64{5, 1, 1})
	var got []int
	for range 7 {
		got = append(got, s.Next())
	}
	// nginx's documented sequence for weights 5,1,1 (and the agent's).
	if want := []int{0, 0, 1, 0, 2, 0, 0}; !reflect.DeepEqual(got, want) {
		t.Fatalf("sequence %v, want %v", got, want)
	}
}

func TestSmoothIsExactOverEveryWindow(t *testing.T) {
	s := NewSmooth([]int64{1, 0, 3})
	for window := range 100 {
		counts := make([]int, 3)
		for range 4 {
			counts[s.Next()]++
		}
		if counts[0] != 1 || counts[1] != 0 || counts[2] != 3 {
			t.Fatalf("window %d: counts %v, want [1 0 3]", window, counts)
		}
	}
	if got := NewSmooth([]int64{0, 0}).Next(); got != -1 {
		t.Fatalf("all-zero round-robin picked %d", got)
	}
}

// shares returns each candidate's share of traffic under Plan.
func shares(cands []Candidate, threshold float64) []float64 {
	weights := Plan(cands, threshold)
	var total int64
	for _, w := range weights {
		total += w
	}
	out := make([]float64, len(weights))
	for i, w := range weights {
		if total > 0 {
			out[i] = float64(w) / float64(total)
		}
	}
	return out
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-4 }

func assertShares(t *testing.T, name string, cands []Candidate, threshold float64, want []float64) {
	t.Helper()
	got := shares(cands, threshold)
	for i := range want {
		if !near(got[i], want[i]) {
			t.Errorf("%s: shares %.4f, want %.4f", name, got, want)
			return
		}
	}
}

func TestPlanTiers(t *testing.T) {
	const half = DefaultThreshold
	up := func(w, p uint32) Candidate { return Candidate{Weight: w, Priority: p, Ready: true} }
	down := func(w, p uint32) Candidate { return Candidate{Weight: w, Priority: p} }

	assertShares(t, "one tier uses its weights", []Candidate{up(1, 0), up(3, 0)}, half,
		[]float64{0.25, 0.75})
	assertShares(t, "a healthy preferred tier takes everything", []Candidate{up(100, 0), up(100, 1)}, half,
		[]float64{1, 0})
	assertShares(t, "exactly half READY is still healthy", []Candidate{up(100, 0), down(100, 0), up(100, 1)}, half,
		[]float64{1, 0, 0})
	// 1 of 4 READY: a=0.25, h=0.5 → half the traffic spills to tier 1.
	assertShares(t, "below the threshold traffic spills proportionally",
		[]Candidate{up(100, 0), down(100, 0), down(100, 0), down(100, 0), up(100, 1), up(300, 1)}, half,
		[]float64{0.5, 0, 0, 0, 0.125, 0.375})
	assertShares(t, "an empty preferred tier spills everything",
		[]Candidate{down(100, 0), up(100, 1)}, half, []float64{0, 1})
	// Tier 0 a=0.2 → h=0.4; tier 1 a=0.2 → h=0.4 (capped at the 0.6 left); tier 2 gets 0.2.
	assertShares(t, "spill-over cascades through three tiers",
		[]Candidate{up(1, 0), down(4, 0), up(1, 1), down(4, 1), up(5, 2)}, half,
		[]float64{0.4, 0, 0.4, 0, 0.2})
	// Total health 0.2+0.2 = 0.4 < 1: normalised to 0.5/0.5.
	assertShares(t, "short total health is normalised",
		[]Candidate{up(1, 0), down(9, 0), up(1, 1), down(9, 1)}, half,
		[]float64{0.5, 0, 0.5, 0})
	// The share is by weight: 2 of 3 endpoints are READY (a count would keep
	// everything in tier 0) but only 100 of 400 weight, so h=0.5.
	assertShares(t, "READY share is weighted, not counted",
		[]Candidate{down(300, 0), up(50, 0), up(50, 0), up(100, 1)}, half,
		[]float64{0, 0.25, 0.25, 0.5})
	assertShares(t, "drained endpoints count neither way",
		[]Candidate{up(100, 0), down(0, 0), down(0, 0), up(100, 1)}, half,
		[]float64{1, 0, 0, 0})
	assertShares(t, "threshold 0 is strict failover",
		[]Candidate{up(1, 0), down(99, 0), up(100, 1)}, 0, []float64{1, 0, 0})
	assertShares(t, "threshold 1 spills any shortfall",
		[]Candidate{up(3, 0), down(1, 0), up(100, 1)}, 1, []float64{0.75, 0, 0.25})
	assertShares(t, "priorities need not be contiguous",
		[]Candidate{down(1, 3), up(1, 7)}, half, []float64{0, 1})
	assertShares(t, "weight 0 endpoints are the last resort, best tier first",
		[]Candidate{up(0, 1), up(0, 1), up(0, 2), down(100, 0)}, half, []float64{0.5, 0.5, 0, 0})
	assertShares(t, "weight 0 endpoints get nothing while others can serve",
		[]Candidate{up(0, 0), up(10, 1)}, half, []float64{0, 1})
	if got := Plan([]Candidate{down(1, 0), down(0, 1)}, half); !reflect.DeepEqual(got, []int64{0, 0}) {
		t.Errorf("nothing READY: plan %v, want all zero", got)
	}
	if got := Plan(nil, half); len(got) != 0 {
		t.Errorf("no candidates: plan %v", got)
	}
}

func TestPlanSingleTierKeepsRawWeights(t *testing.T) {
	got := Plan([]Candidate{{Weight: 5, Ready: true}, {Weight: 1, Ready: true}, {Weight: 1}, {Weight: 9, Priority: 1, Ready: true}}, DefaultThreshold)
	// 6 of 7 READY in tier 0: it keeps all traffic, with its own weights.
	if want := []int64{5, 1, 0, 0}; !reflect.DeepEqual(got, want) {
		t.Fatalf("plan %v, want %v", got, want)
	}
}

func TestPlanSmallSharesStayPositive(t *testing.T) {
	// A tiny endpoint in a spilling tier still gets (a little) traffic.
	cands := []Candidate{{Weight: 1, Ready: true}, {Weight: 65535}, {Weight: 65535, Priority: 1, Ready: true}}
	got := Plan(cands, DefaultThreshold)
	if got[0] < 1 || got[1] != 0 || got[2] < 1 {
		t.Fatalf("plan %v", got)
	}
}
