package kubedisco

import (
	"sync/atomic"
	"time"
)

// Ejector is the Transport's outlier ejection for clients that balance
// on their own (the Kratos and go-kit adapters): it counts each call's
// outcome at an endpoint and ejects an endpoint by the Transport's rules
// (Resilience.ConsecutiveFailures failures in a row at once; more than
// FailurePercentage failed calls in an Interval), for a time growing per
// ejection (BaseEjectionTime, up to MaxEjectionTime), never more than
// MaxEjectionPercent of the endpoints at once, nor the last one. Retries
// are the framework's; an Ejector does none. It is safe for concurrent
// use. Keep one per Service and port.
type Ejector struct {
	base Resilience
	r    atomic.Pointer[Resilience]
	s    *outlierState
}

// NewEjector returns an Ejector with r's ejection settings (nil: the
// defaults). With r.Off it ejects nothing.
func NewEjector(r *Resilience) *Ejector {
	e := &Ejector{base: r.withDefaults(), s: newOutlierState()}
	e.r.Store(&e.base)
	return e
}

// SetOverrides applies a Service's overrides (Service.Resilience, its
// annotations) over the Ejector's own settings; nil goes back to them.
func (e *Ejector) SetOverrides(o *ServiceResilience) {
	r := e.base.WithOverrides(o)
	e.r.Store(&r)
}

// Use replaces the Ejector's settings with r (nil: the defaults), keeping
// its ejections and counts: for an adapter that merges a Service's
// annotations itself (kratos.NewSelector), so that a change of them does
// not bring back endpoints ejected a moment ago.
func (e *Ejector) Use(r *Resilience) {
	settings := r.withDefaults()
	e.r.Store(&settings)
}

// Ejected reports whether the endpoint at addr is ejected now.
func (e *Ejector) Ejected(addr string) bool {
	return !e.r.Load().Off && e.s.ejected(addr, time.Now())
}

// Record counts one call's outcome at addr, one of endpoints endpoints
// (for the bounded share). It returns when the ejections this outcome
// caused end (the latest, when the failure-percentage rule ejected
// several), and the zero time when it caused none.
func (e *Ejector) Record(addr string, failed bool, endpoints int) time.Time {
	r := e.r.Load()
	if r.Off {
		return time.Time{}
	}
	return e.s.record(addr, failed, r, func() int { return endpoints })
}
