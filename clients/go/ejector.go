package kubedisco

import "time"

// Ejector is the Transport's outlier ejection for clients that balance
// on their own (the Kratos and go-kit adapters): it counts each call's
// outcome at an endpoint, ejects an endpoint after
// Resilience.ConsecutiveFailures failures in a row for a time growing per
// ejection (BaseEjectionTime, up to MaxEjectionTime), and never ejects
// more than MaxEjectionPercent of the endpoints at once, nor the last one.
// Retries are the framework's; an Ejector does none. It is safe for
// concurrent use. Keep one per Service and port.
type Ejector struct {
	r Resilience
	s outlierState
}

// NewEjector returns an Ejector with r's ejection settings (nil: the
// defaults). With r.Off it ejects nothing.
func NewEjector(r *Resilience) *Ejector {
	return &Ejector{r: r.withDefaults(), s: outlierState{byAddr: map[string]*httpEndpoint{}}}
}

// Ejected reports whether the endpoint at addr is ejected now.
func (e *Ejector) Ejected(addr string) bool {
	return !e.r.Off && e.s.ejected(addr, time.Now())
}

// Record counts one call's outcome at addr, one of endpoints endpoints
// (for the bounded share). It returns when addr's ejection ends if this
// outcome ejected it, and the zero time otherwise.
func (e *Ejector) Record(addr string, failed bool, endpoints int) time.Time {
	if e.r.Off {
		return time.Time{}
	}
	return e.s.record(addr, failed, &e.r, func() int { return endpoints })
}
