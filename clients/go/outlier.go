package kubedisco

import (
	"sync"
	"time"

	"github.com/kubedisco/kubedisco/clients/go/internal/outlier"
)

// outlierState is one Service port's endpoints as the Transport (or an
// Ejector) has seen them: outcomes and ejections, by address. The
// failure-percentage rule runs lazily: the first outcome recorded after an
// Interval has passed closes it and judges the endpoints, so an idle
// Transport runs no timers.
type outlierState struct {
	mu            sync.Mutex
	byAddr        map[string]*httpEndpoint
	intervalStart time.Time
	// lastEnd is when the last ejection ends: before it some endpoint may
	// be ejected, after it none is (a cheap test for the common case).
	lastEnd time.Time
	budget  retryBudget

	overrides serviceOverrides
}

func newOutlierState() *outlierState {
	return &outlierState{byAddr: map[string]*httpEndpoint{}}
}

type httpEndpoint struct {
	consecutive         int
	successes, failures int64 // in the current interval
	ejectedUntil        time.Time
	multiplier          int64
}

func (s *outlierState) ejected(addr string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.byAddr[addr]
	return e != nil && now.Before(e.ejectedUntil)
}

// anyEjected reports whether some endpoint may be ejected now.
func (s *outlierState) anyEjected(now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return now.Before(s.lastEnd)
}

// record counts one attempt's outcome at addr: the consecutive-failure
// rule may eject addr at once, and an outcome that closes an interval runs
// the failure-percentage rule over every endpoint. count returns how many
// endpoints the Service port has, for the bounded share; it is asked only
// when an ejection is due (it may cost a request to the agent).
//
// It returns when the ejections this outcome caused end (the latest of
// them), the zero time when it caused none.
func (s *outlierState) record(addr string, failed bool, r *Resilience, count func() int) time.Time {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.byAddr[addr]
	if e == nil {
		e = &httpEndpoint{}
		s.byAddr[addr] = e
	}
	var due []*httpEndpoint
	if failed {
		e.failures++
		e.consecutive++
		if r.ConsecutiveFailures > 0 && e.consecutive >= r.ConsecutiveFailures && !now.Before(e.ejectedUntil) {
			due = append(due, e)
		}
	} else {
		e.successes++
		e.consecutive = 0
	}
	if s.intervalStart.IsZero() {
		s.intervalStart = now
	}
	if now.Sub(s.intervalStart) >= r.Interval {
		due = append(due, s.endIntervalLocked(now, r)...)
	}
	if len(due) == 0 || r.MaxEjectionPercent <= 0 {
		return time.Time{}
	}
	s.mu.Unlock()
	n := count()
	s.mu.Lock()
	var until time.Time
	for _, x := range due {
		if end := s.ejectLocked(x, now, n, r); end.After(until) {
			until = end
		}
	}
	return until
}

// endIntervalLocked closes the current interval: it returns the endpoints
// the failure-percentage rule judges outliers, and forgets endpoints that
// had no requests and nothing to remember (no ejection in the last
// MaxEjectionTime), such as those no longer in the Service.
func (s *outlierState) endIntervalLocked(now time.Time, r *Resilience) []*httpEndpoint {
	s.intervalStart = now
	var judged []*httpEndpoint
	var counts []outlier.Counts
	for addr, e := range s.byAddr {
		c := outlier.Counts{Successes: e.successes, Failures: e.failures}
		e.successes, e.failures = 0, 0
		switch {
		case now.Before(e.ejectedUntil):
		case c.Successes+c.Failures == 0:
			if now.Sub(e.ejectedUntil) > r.MaxEjectionTime {
				delete(s.byAddr, addr)
			}
		default:
			judged = append(judged, e)
			counts = append(counts, c)
		}
	}
	// One endpoint with the volume is enough to judge it: unlike gRPC's
	// Services with many backends, an HTTP Service often has two or three
	// (A50's default of five would turn the rule off for most of them).
	rule := outlier.FailurePercentage{Threshold: r.FailurePercentage, MinimumHosts: 1, RequestVolume: int64(r.RequestVolume)}
	var out []*httpEndpoint
	for _, i := range rule.Outliers(counts) {
		out = append(out, judged[i])
	}
	return out
}

// ejectLocked ejects e, one of n endpoints, unless it is ejected already
// or the bounded share is used up; it returns when the ejection ends (the
// zero time when there is none).
func (s *outlierState) ejectLocked(e *httpEndpoint, now time.Time, n int, r *Resilience) time.Time {
	if now.Before(e.ejectedUntil) {
		return time.Time{}
	}
	ejectedNow := 0
	for _, other := range s.byAddr {
		if now.Before(other.ejectedUntil) {
			ejectedNow++
		}
	}
	if ejectedNow >= outlier.MaxEjected(n, r.MaxEjectionPercent) {
		return time.Time{}
	}
	// The multiplier grows per ejection and is forgotten after a stretch
	// as long as the longest ejection without one.
	if now.Sub(e.ejectedUntil) > r.MaxEjectionTime {
		e.multiplier = 0
	}
	e.multiplier++
	e.ejectedUntil = now.Add(outlier.EjectionTime(e.multiplier, r.BaseEjectionTime, r.MaxEjectionTime))
	e.consecutive = 0
	s.lastEnd = maxTime(s.lastEnd, e.ejectedUntil)
	return e.ejectedUntil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
