// Package wrr is the balancing arithmetic of the kubedisco_weighted gRPC
// balancer, kept free of gRPC so that it can be tested with synthetic
// states: how much traffic each priority tier gets (with spill-over when a
// tier is short of READY capacity), and smooth weighted round-robin.
//
// # The tier rule
//
// Every endpoint has a weight w (0 = drain), a priority p (0 = preferred
// tier, higher = fallback) and is READY or not. Tiers are visited in
// ascending priority. For tier i:
//
//	T_i = sum of w over the tier's endpoints
//	R_i = sum of w over the tier's READY endpoints
//	a_i = R_i / T_i                    (READY share, by weight)
//	h_i = 0            if R_i = 0
//	      1            if a_i >= threshold
//	      a_i/threshold otherwise      (tier health)
//	L_i = min(h_i, 1 - (L_0 + ... + L_{i-1}))
//
// If the loads add up to less than 1 they are scaled up to 1 (as Envoy
// normalises priority load when total health is short). Within tier i each
// READY endpoint gets L_i * w / R_i of the traffic.
//
// With the default threshold 0.5 this is Envoy's priority-load model with an
// overprovisioning factor of 2 (1/threshold): a tier takes all the traffic
// while at least half of its weight is READY, and hands the missing part
// over to the next tier proportionally below that. The share is by weight,
// not by endpoint count, because weights are capacity: a drained endpoint
// (weight 0) neither counts as capacity nor as missing capacity. A threshold
// of 0 gives strict failover (a tier is used while anything in it is READY).
//
// Weight 0 endpoints are a last resort: they get traffic only when no READY
// endpoint with a positive weight exists, and then the READY ones of the
// best tier that has any share it equally.
package wrr

import (
	"math"
	"sort"
)

// DefaultThreshold is the READY share (by weight) at or above which a tier
// takes all of its traffic itself.
const DefaultThreshold = 0.5

// scale is what the weights of a multi-tier plan add up to (about).
const scale = 1 << 20

// Candidate is one endpoint as the planner sees it.
type Candidate struct {
	// Weight is the endpoint's weight; 0 drains it.
	Weight uint32
	// Priority is the endpoint's tier: 0 is preferred, higher is fallback.
	Priority uint32
	// Ready says whether traffic can go to the endpoint now.
	Ready bool
}

type tier struct {
	priority     uint32
	total, ready uint64
	load         float64
}

// Plan returns, for each candidate, its round-robin weight: 0 for
// candidates that get no traffic. When a single tier takes all traffic the
// returned weights are the candidates' own weights (so the round-robin
// sequence is exactly nginx's over them); otherwise they are scaled so that
// each tier receives its load. threshold is clamped to [0, 1].
func Plan(cands []Candidate, threshold float64) []int64 {
	out := make([]int64, len(cands))
	if math.IsNaN(threshold) || threshold < 0 {
		threshold = 0
	}
	if threshold > 1 {
		threshold = 1
	}

	byPriority := map[uint32]*tier{}
	anyReadyWeight := false
	for _, c := range cands {
		t := byPriority[c.Priority]
		if t == nil {
			t = &tier{priority: c.Priority}
			byPriority[c.Priority] = t
		}
		t.total += uint64(c.Weight)
		if c.Ready {
			t.ready += uint64(c.Weight)
			if c.Weight > 0 {
				anyReadyWeight = true
			}
		}
	}

	if !anyReadyWeight {
		// Last resort: READY drained endpoints of the best tier with any.
		best, found := uint32(0), false
		for _, c := range cands {
			if c.Ready && (!found || c.Priority < best) {
				best, found = c.Priority, true
			}
		}
		for i, c := range cands {
			if found && c.Ready && c.Priority == best {
				out[i] = 1
			}
		}
		return out
	}

	tiers := make([]*tier, 0, len(byPriority))
	for _, t := range byPriority {
		tiers = append(tiers, t)
	}
	sort.Slice(tiers, func(i, j int) bool { return tiers[i].priority < tiers[j].priority })

	remaining, sum, used := 1.0, 0.0, 0
	for _, t := range tiers {
		t.load = math.Min(health(t, threshold), remaining)
		remaining -= t.load
		sum += t.load
		if t.load > 0 {
			used++
		}
	}
	// sum > 0: some tier has READY weight, so its health is positive.
	for _, t := range tiers {
		t.load /= sum
	}

	for i, c := range cands {
		t := byPriority[c.Priority]
		if !c.Ready || c.Weight == 0 || t.load == 0 {
			continue
		}
		if used == 1 {
			out[i] = int64(c.Weight)
			continue
		}
		w := int64(math.Round(t.load * scale * float64(c.Weight) / float64(t.ready)))
		out[i] = max(w, 1)
	}
	return out
}

// health is h_i of the package documentation.
func health(t *tier, threshold float64) float64 {
	if t.ready == 0 {
		return 0
	}
	share := float64(t.ready) / float64(t.total)
	if share >= threshold {
		return 1
	}
	return share / threshold
}

// Smooth is smooth weighted round-robin (nginx's algorithm): over any run
// of sum(weights) picks each index is chosen exactly weight times, evenly
// interleaved. It is not safe for concurrent use.
type Smooth struct {
	weights []int64
	current []int64
	total   int64
}

// NewSmooth returns a round-robin over weights; indexes with weight <= 0
// are never chosen.
func NewSmooth(weights []int64) *Smooth {
	s := &Smooth{weights: weights, current: make([]int64, len(weights))}
	for _, w := range weights {
		if w > 0 {
			s.total += w
		}
	}
	return s
}

// Next returns the next index, or -1 when no weight is positive.
func (s *Smooth) Next() int {
	best := -1
	for i, w := range s.weights {
		if w <= 0 {
			continue
		}
		s.current[i] += w
		if best < 0 || s.current[i] > s.current[best] {
			best = i
		}
	}
	if best >= 0 {
		s.current[best] -= s.total
	}
	return best
}
