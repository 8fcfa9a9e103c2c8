package kubedisco

import "time"

// Resilience configures what Transport does about failing endpoints:
// outlier ejection and retries on another endpoint. The zero value means
// the defaults; a nil Transport.Resilience too. For the ejection rules a
// negative value turns the rule off.
type Resilience struct {
	// Off turns ejection and retries off: every request goes where the
	// agent's pick says, once.
	Off bool
	// ConsecutiveFailures ejects an endpoint after this many failures in a
	// row: connection errors, per-try timeouts and 502/503/504 answers.
	// Default 5.
	ConsecutiveFailures int
	// FailurePercentage ejects, once per Interval, an endpoint whose share
	// of failed requests in the interval was above this percentage, if it
	// had at least RequestVolume requests (gRFC A50's failure-percentage
	// rule; it catches an endpoint that fails most requests but seldom
	// several in a row). Default 85.
	FailurePercentage int
	// Interval is the failure-percentage rule's interval. Default 10s.
	Interval time.Duration
	// RequestVolume is how many requests an endpoint needs in an Interval
	// for the failure-percentage rule to judge it. Default 20.
	RequestVolume int
	// BaseEjectionTime is how long the first ejection lasts; the n-th one
	// in a row n times as long, up to MaxEjectionTime. Defaults 30s and
	// 300s.
	BaseEjectionTime, MaxEjectionTime time.Duration
	// MaxEjectionPercent bounds the share of a Service's endpoints that
	// are ejected at once (one may always be when there are two or more;
	// never the last). Default 50; negative: none is.
	MaxEjectionPercent int
	// MaxAttempts is how many endpoints an idempotent request may try
	// (1: no retries). Default 3. A request is idempotent when its method
	// is GET, HEAD, OPTIONS or TRACE, or it carries an Idempotency-Key
	// header; one with a body needs GetBody too (http.NewRequest sets it
	// for in-memory bodies).
	MaxAttempts int
	// RetryRatio is the budget: retries may add at most this share of the
	// requests, plus RetryBurst. Defaults 0.2 and 10.
	RetryRatio float64
	// RetryBurst: see RetryRatio.
	RetryBurst float64
	// PerTryTimeout bounds one attempt (0: none besides the request's own
	// context, which bounds all of them together).
	PerTryTimeout time.Duration
}

func (r *Resilience) withDefaults() Resilience {
	out := Resilience{}
	if r != nil {
		out = *r
	}
	defaultInt(&out.ConsecutiveFailures, 5)
	defaultInt(&out.FailurePercentage, 85)
	defaultInt(&out.RequestVolume, 20)
	defaultInt(&out.MaxEjectionPercent, 50)
	if out.Interval <= 0 {
		out.Interval = 10 * time.Second
	}
	if out.BaseEjectionTime <= 0 {
		out.BaseEjectionTime = 30 * time.Second
	}
	if out.MaxEjectionTime <= 0 {
		out.MaxEjectionTime = 300 * time.Second
	}
	out.MaxEjectionTime = max(out.MaxEjectionTime, out.BaseEjectionTime)
	if out.MaxAttempts <= 0 {
		out.MaxAttempts = 3
	}
	if out.RetryRatio <= 0 {
		out.RetryRatio = 0.2
	}
	if out.RetryBurst <= 0 {
		out.RetryBurst = 10
	}
	return out
}

// defaultInt sets *v to def when it is 0; a negative value (off) stays.
func defaultInt(v *int, def int) {
	if *v == 0 {
		*v = def
	}
}

// WithOverrides returns r with a Service's overrides (its
// kubedisco.io/outlier-* and kubedisco.io/retry-* annotations, as the
// agent serves them in Service.Resilience) applied: an annotation of 0
// that turns a rule off becomes the negative value that does. The retry
// codes (retry-on) are gRPC's and are not applied. Transport applies them
// by itself; the framework adapters use this.
func (r *Resilience) WithOverrides(o *ServiceResilience) Resilience {
	out := *r
	if o == nil {
		return out
	}
	if x := o.Outlier; x != nil {
		overrideInt(&out.ConsecutiveFailures, x.ConsecutiveFailures)
		overrideInt(&out.FailurePercentage, x.FailurePercentage)
		overrideInt(&out.MaxEjectionPercent, x.MaxEjectionPercent)
		overrideDuration(&out.Interval, x.Interval)
		overrideDuration(&out.BaseEjectionTime, x.BaseEjectionTime)
		overrideDuration(&out.MaxEjectionTime, x.MaxEjectionTime)
		out.MaxEjectionTime = max(out.MaxEjectionTime, out.BaseEjectionTime)
	}
	if x := o.Retry; x != nil && x.MaxAttempts != nil {
		out.MaxAttempts = max(int(*x.MaxAttempts), 1)
	}
	return out
}

func overrideInt(v *int, o *uint32) {
	switch {
	case o == nil:
	case *o == 0:
		*v = -1
	default:
		*v = int(*o)
	}
}

func overrideDuration(v *time.Duration, o string) {
	if d, err := time.ParseDuration(o); err == nil && d > 0 {
		*v = d
	}
}
