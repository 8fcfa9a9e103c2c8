package kdgrpc

import (
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kubedisco/kubedisco/clients/go/internal/outlier"
)

// Outlier ejection lives inside kubedisco_weighted rather than in gRPC's
// own outlier_detection policy wrapped around it. grpc-go keeps that policy
// in an internal package (internal/xds/balancer/outlierdetection) that is
// registered only by importing google.golang.org/grpc/xds, which would put
// the whole xDS client (Envoy protos and all) into every program using this
// module, under a name that ends in _experimental. Inside the balancer an
// ejected endpoint is simply "not READY" to the tier planner (wrr.Plan), so
// the bounded share and the panic rule apply to it exactly as to an
// endpoint that lost its connection: a tier short of capacity spills over
// by weight, and no extra bookkeeping is needed to keep weights and tiers
// right. The ejection rules, names and defaults follow gRFC A50.

// OutlierConfig configures outlier ejection ("outlierDetection" in the
// balancer's config). Every field is optional; zero values take the
// defaults below. Durations are strings as in gRPC service configs
// ("30s", "0.5s").
//
//	{"kubedisco_weighted":{"outlierDetection":{"baseEjectionTime":"10s","consecutiveFailures":3}}}
type OutlierConfig struct {
	// Interval is how often failure percentages are evaluated and the
	// ejection multiplier of healthy endpoints decays. Default 10s.
	Interval string `json:"interval,omitempty"`
	// BaseEjectionTime is how long the first ejection of an endpoint
	// lasts; the n-th one in a row lasts n times as long. Default 30s.
	BaseEjectionTime string `json:"baseEjectionTime,omitempty"`
	// MaxEjectionTime caps one ejection. Default 300s.
	MaxEjectionTime string `json:"maxEjectionTime,omitempty"`
	// MaxEjectionPercent is the share of a Service's endpoints (by count)
	// that may be ejected at once. One endpoint may always be ejected when
	// there are two or more; the last one never is. Default 50.
	MaxEjectionPercent *uint32 `json:"maxEjectionPercent,omitempty"`
	// ConsecutiveFailures ejects an endpoint at once after this many
	// failed RPCs in a row (0 turns it off). Default 5.
	ConsecutiveFailures *uint32 `json:"consecutiveFailures,omitempty"`
	// FailurePercentage ejects, at each Interval, endpoints whose share of
	// failed RPCs is above Threshold. Default on, with A50's defaults.
	FailurePercentage *FailurePercentage `json:"failurePercentage,omitempty"`
	// FailureCodes are the status codes that count as a failure of the
	// endpoint (the server's fault, not the caller's). Default
	// UNAVAILABLE, INTERNAL, UNKNOWN, DATA_LOSS.
	FailureCodes []string `json:"failureCodes,omitempty"`
}

// FailurePercentage is A50's failure_percentage_ejection.
type FailurePercentage struct {
	// Threshold is the failure percentage above which an endpoint is
	// ejected (0 turns it off). Default 85.
	Threshold *uint32 `json:"threshold,omitempty"`
	// MinimumHosts is how many endpoints must have RequestVolume RPCs in
	// the interval for the rule to run at all. Default 5.
	MinimumHosts uint32 `json:"minimumHosts,omitempty"`
	// RequestVolume is how many RPCs an endpoint needs in the interval to
	// be judged. Default 50.
	RequestVolume uint32 `json:"requestVolume,omitempty"`
}

// outlierSettings is an OutlierConfig with defaults applied.
type outlierSettings struct {
	interval, base, maxTime time.Duration
	maxPercent              uint32
	consecutive             int64
	fpThreshold             uint32 // 0: off
	fpMinHosts, fpVolume    int64
	failure                 map[codes.Code]bool
}

func parseDuration(field, s string, def time.Duration) (time.Duration, error) {
	if s == "" {
		return def, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%s: outlierDetection.%s %q is not a positive duration (\"30s\")", Name, field, s)
	}
	return d, nil
}

func (c *OutlierConfig) settings() (*outlierSettings, error) {
	s := &outlierSettings{maxPercent: 50, consecutive: 5, fpThreshold: 85, fpMinHosts: 5, fpVolume: 50}
	var err error
	if s.interval, err = parseDuration("interval", c.Interval, 10*time.Second); err != nil {
		return nil, err
	}
	if s.base, err = parseDuration("baseEjectionTime", c.BaseEjectionTime, 30*time.Second); err != nil {
		return nil, err
	}
	if s.maxTime, err = parseDuration("maxEjectionTime", c.MaxEjectionTime, 300*time.Second); err != nil {
		return nil, err
	}
	s.maxTime = max(s.maxTime, s.base)
	if p := c.MaxEjectionPercent; p != nil {
		if *p > 100 {
			return nil, fmt.Errorf("%s: outlierDetection.maxEjectionPercent %d is above 100", Name, *p)
		}
		s.maxPercent = *p
	}
	if n := c.ConsecutiveFailures; n != nil {
		s.consecutive = int64(*n)
	}
	if fp := c.FailurePercentage; fp != nil {
		if fp.Threshold != nil {
			if *fp.Threshold > 100 {
				return nil, fmt.Errorf("%s: outlierDetection.failurePercentage.threshold %d is above 100", Name, *fp.Threshold)
			}
			s.fpThreshold = *fp.Threshold
		}
		if fp.MinimumHosts > 0 {
			s.fpMinHosts = int64(fp.MinimumHosts)
		}
		if fp.RequestVolume > 0 {
			s.fpVolume = int64(fp.RequestVolume)
		}
	}
	names := c.FailureCodes
	if len(names) == 0 {
		names = []string{"UNAVAILABLE", "INTERNAL", "UNKNOWN", "DATA_LOSS"}
	}
	s.failure = map[codes.Code]bool{}
	for _, n := range names {
		var code codes.Code
		if err := code.UnmarshalJSON([]byte(`"` + strings.ToUpper(n) + `"`)); err != nil {
			return nil, fmt.Errorf("%s: outlierDetection.failureCodes: %q is not a gRPC status code", Name, n)
		}
		s.failure[code] = true
	}
	return s, nil
}

// endpointStats is the outlier state of one endpoint. The counters are
// touched by every RPC (atomics, no lock); the ejection fields only under
// ejector.mu.
type endpointStats struct {
	key         string
	consecutive atomic.Int64
	successes   atomic.Int64 // in the current interval
	failures    atomic.Int64 // in the current interval

	ejected    bool
	multiplier int64
	timer      *time.Timer
}

// ejector decides ejections for one balancer.
type ejector struct {
	republish func() // rebuilds the picker after an ejection or its end

	mu       sync.Mutex
	cfg      *outlierSettings // nil: ejection off
	byKey    map[string]*endpointStats
	stopTick chan struct{}
	interval time.Duration
	closed   bool
}

func newEjector(republish func()) *ejector {
	return &ejector{republish: republish, byKey: map[string]*endpointStats{}}
}

// configure applies a new config (nil turns ejection off and lifts every
// ejection).
func (e *ejector) configure(cfg *outlierSettings) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return
	}
	e.cfg = cfg
	if cfg == nil {
		for _, s := range e.byKey {
			e.liftLocked(s)
		}
		e.stopTickerLocked()
		return
	}
	if e.stopTick == nil || e.interval != cfg.interval {
		e.stopTickerLocked()
		stop := make(chan struct{})
		e.stopTick, e.interval = stop, cfg.interval
		go e.tick(cfg.interval, stop)
	}
}

func (e *ejector) stopTickerLocked() {
	if e.stopTick != nil {
		close(e.stopTick)
		e.stopTick = nil
	}
}

func (e *ejector) close() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	e.stopTickerLocked()
	for _, s := range e.byKey {
		if s.timer != nil {
			s.timer.Stop()
		}
	}
}

func (e *ejector) liftLocked(s *endpointStats) {
	if s.timer != nil {
		s.timer.Stop()
		s.timer = nil
	}
	s.ejected = false
	s.consecutive.Store(0)
}

// track returns the stats of the endpoints with these keys (made when new)
// and whether each is ejected now; endpoints no longer present are
// forgotten. It returns nils when ejection is off.
func (e *ejector) track(keys []string) ([]*endpointStats, []bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.cfg == nil {
		return nil, nil
	}
	stats := make([]*endpointStats, len(keys))
	ejected := make([]bool, len(keys))
	present := make(map[string]bool, len(keys))
	for i, k := range keys {
		s := e.byKey[k]
		if s == nil {
			s = &endpointStats{key: k}
			e.byKey[k] = s
		}
		stats[i], ejected[i], present[k] = s, s.ejected, true
	}
	for k, s := range e.byKey {
		if !present[k] {
			e.liftLocked(s)
			delete(e.byKey, k)
		}
	}
	return stats, ejected
}

// record counts the outcome of one RPC on s, and ejects s after too many
// consecutive failures.
func (e *ejector) record(s *endpointStats, err error) {
	cfg := e.currentConfig()
	if cfg == nil {
		return
	}
	if err == nil || !cfg.failure[status.Code(err)] {
		s.successes.Add(1)
		s.consecutive.Store(0)
		return
	}
	s.failures.Add(1)
	if n := s.consecutive.Add(1); cfg.consecutive > 0 && n >= cfg.consecutive {
		if e.eject(s, cfg) {
			e.republish()
		}
	}
}

func (e *ejector) currentConfig() *outlierSettings {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.cfg
}

// eject ejects s unless it is ejected already, gone, or the bounded share
// is used up; it reports whether it did.
func (e *ejector) eject(s *endpointStats, cfg *outlierSettings) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed || s.ejected || e.byKey[s.key] != s || !e.mayEjectLocked(cfg) {
		return false
	}
	s.ejected = true
	s.multiplier++
	d := outlier.EjectionTime(s.multiplier, cfg.base, cfg.maxTime)
	s.timer = time.AfterFunc(d, func() {
		e.mu.Lock()
		if e.byKey[s.key] != s || !s.ejected {
			e.mu.Unlock()
			return
		}
		e.liftLocked(s)
		e.mu.Unlock()
		e.republish()
	})
	return true
}

// mayEjectLocked applies the bounded share (outlier.MaxEjected).
func (e *ejector) mayEjectLocked(cfg *outlierSettings) bool {
	ejected := 0
	for _, s := range e.byKey {
		if s.ejected {
			ejected++
		}
	}
	return ejected < outlier.MaxEjected(len(e.byKey), int(cfg.maxPercent))
}

// tick runs A50's interval work: failure-percentage ejection, and decay of
// the ejection multiplier of endpoints that stayed in.
func (e *ejector) tick(interval time.Duration, stop chan struct{}) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		if e.evaluate() {
			e.republish()
		}
	}
}

func (e *ejector) evaluate() bool {
	e.mu.Lock()
	cfg := e.cfg
	var judged []*endpointStats
	var counts []outlier.Counts
	for _, s := range e.byKey {
		ok, fails := s.successes.Swap(0), s.failures.Swap(0)
		if !s.ejected && s.multiplier > 0 {
			s.multiplier--
		}
		if !s.ejected {
			judged = append(judged, s)
			counts = append(counts, outlier.Counts{Successes: ok, Failures: fails})
		}
	}
	e.mu.Unlock()
	if cfg == nil {
		return false
	}
	rule := outlier.FailurePercentage{Threshold: int(cfg.fpThreshold), MinimumHosts: int(cfg.fpMinHosts), RequestVolume: cfg.fpVolume}
	changed := false
	for _, i := range rule.Outliers(counts) {
		if e.eject(judged[i], cfg) {
			changed = true
		}
	}
	return changed
}

// withOutcome wraps a pick's Done so that the RPC's outcome counts for s.
func (e *ejector) withOutcome(res balancer.PickResult, s *endpointStats) balancer.PickResult {
	done := res.Done
	res.Done = func(info balancer.DoneInfo) {
		e.record(s, info.Err)
		if done != nil {
			done(info)
		}
	}
	return res
}
