// Package outlier is the arithmetic of outlier ejection (gRFC A50) that
// kdgrpc's balancer and the HTTP Transport (with the framework adapters'
// Ejector) share, so that both eject by the same rules: the bounded share,
// the growing ejection time and the failure-percentage rule. Each keeps its
// own bookkeeping (gRPC per subchannel with a ticker, HTTP by address,
// evaluated lazily by the requests themselves).
package outlier

import "time"

// MaxEjected is how many of n endpoints may be ejected at once with
// maxPercent: that share (rounded down), but at least one when there are
// two or more and maxPercent is positive, and never all of them.
func MaxEjected(n, maxPercent int) int {
	if maxPercent <= 0 || n < 2 {
		return 0
	}
	return min(max(n*maxPercent/100, 1), n-1)
}

// EjectionTime is how long an endpoint's multiplier-th ejection in a row
// lasts: multiplier times base, capped at maxTime.
func EjectionTime(multiplier int64, base, maxTime time.Duration) time.Duration {
	return min(time.Duration(multiplier)*base, maxTime)
}

// Counts are one endpoint's outcomes over an interval.
type Counts struct {
	Successes, Failures int64
}

// FailurePercentage is A50's failure_percentage_ejection rule.
type FailurePercentage struct {
	// Threshold: an endpoint failing more than this percentage of its
	// requests is an outlier. 0 (or 100 and above) turns the rule off.
	Threshold int
	// MinimumHosts is how many endpoints need RequestVolume requests in
	// the interval for the rule to judge any.
	MinimumHosts int
	// RequestVolume is how many requests an endpoint needs in the
	// interval to be judged.
	RequestVolume int64
}

// Outliers returns the indexes of the endpoints (by their counts over
// the interval that ended) that the rule would eject, before the bounded
// share is applied.
func (r FailurePercentage) Outliers(counts []Counts) []int {
	if r.Threshold <= 0 || r.Threshold >= 100 {
		return nil
	}
	judged := 0
	for _, c := range counts {
		if c.Successes+c.Failures >= r.RequestVolume {
			judged++
		}
	}
	if judged < max(r.MinimumHosts, 1) {
		return nil
	}
	var out []int
	for i, c := range counts {
		total := c.Successes + c.Failures
		if total >= r.RequestVolume && 100*c.Failures > int64(r.Threshold)*total {
			out = append(out, i)
		}
	}
	return out
}
