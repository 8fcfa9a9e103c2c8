package kubedisco

import (
	"context"
	"io"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Resilience configures what Transport does about failing endpoints:
// outlier ejection and retries on another endpoint. The zero value means
// the defaults; a nil Transport.Resilience too.
type Resilience struct {
	// Off turns ejection and retries off: every request goes where the
	// agent's pick says, once.
	Off bool
	// ConsecutiveFailures ejects an endpoint after this many failures in a
	// row: connection errors, per-try timeouts and 502/503/504 answers.
	// Default 5.
	ConsecutiveFailures int
	// BaseEjectionTime is how long the first ejection lasts; the n-th one
	// in a row n times as long, up to MaxEjectionTime. Defaults 30s and
	// 300s.
	BaseEjectionTime, MaxEjectionTime time.Duration
	// MaxEjectionPercent bounds the share of a Service's endpoints that
	// are ejected at once (one may always be when there are two or more;
	// never the last). Default 50.
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
	if out.ConsecutiveFailures <= 0 {
		out.ConsecutiveFailures = 5
	}
	if out.BaseEjectionTime <= 0 {
		out.BaseEjectionTime = 30 * time.Second
	}
	if out.MaxEjectionTime <= 0 {
		out.MaxEjectionTime = 300 * time.Second
	}
	out.MaxEjectionTime = max(out.MaxEjectionTime, out.BaseEjectionTime)
	if out.MaxEjectionPercent <= 0 {
		out.MaxEjectionPercent = 50
	}
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

// idempotent reports whether req may be sent again.
func idempotent(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
	default:
		if req.Header.Get("Idempotency-Key") == "" {
			return false
		}
	}
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// retryBudget lets retries add at most ratio of the requests plus burst:
// each request deposits ratio, each retry withdraws 1, and the balance is
// capped at burst so that a quiet hour does not save up for a storm.
type retryBudget struct {
	mu      sync.Mutex
	balance float64
}

func (b *retryBudget) deposit(r *Resilience) {
	b.mu.Lock()
	b.balance = min(b.balance+r.RetryRatio, r.RetryBurst)
	b.mu.Unlock()
}

func (b *retryBudget) withdraw() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.balance < 1 {
		return false
	}
	b.balance--
	return true
}

// outlierState is one Service port's endpoints as the Transport has seen
// them: failures in a row and ejections, by address.
type outlierState struct {
	mu     sync.Mutex
	byAddr map[string]*httpEndpoint
	budget retryBudget

	// The Transport's Resilience with the Service's overrides (its
	// annotations, as the agent serves them), refreshed in the background
	// every overridesRefresh.
	cfgMu      sync.Mutex
	effective  *Resilience // nil until first fetched
	fetchedAt  time.Time
	refreshing bool
}

// overridesRefresh is how old a Service's overrides may get before a
// request refreshes them (in the background; the request uses the old
// ones). An annotation change reaches the Transport within about this.
const overridesRefresh = 5 * time.Second

// forService returns base with the Service's overrides. The first request
// to a Service fetches them; later ones refresh them in the background.
func (s *outlierState) forService(ctx context.Context, client *Client, host string, base *Resilience) *Resilience {
	s.cfgMu.Lock()
	eff, at, busy := s.effective, s.fetchedAt, s.refreshing
	if eff != nil && (busy || time.Since(at) < overridesRefresh) {
		s.cfgMu.Unlock()
		return eff
	}
	if eff != nil {
		s.refreshing = true
		s.cfgMu.Unlock()
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			s.fetch(ctx, client, host, base)
		}()
		return eff
	}
	s.cfgMu.Unlock()
	return s.fetch(ctx, client, host, base)
}

func (s *outlierState) fetch(ctx context.Context, client *Client, host string, base *Resilience) *Resilience {
	eff := base
	var err error
	var svc *Service
	if name, perr := ParseServiceName(host); perr == nil {
		svc, err = client.Service(ctx, name.Namespace, name.Name)
	}
	s.cfgMu.Lock()
	defer s.cfgMu.Unlock()
	switch {
	case err != nil && s.effective != nil:
		// The agent did not answer: keep what it said last (the request
		// itself fails or not by its own pick).
		eff = s.effective
	case svc != nil && svc.Resilience != nil:
		o := base.withOverrides(svc.Resilience)
		eff = &o
	}
	s.effective, s.fetchedAt, s.refreshing = eff, time.Now(), false
	return eff
}

// withOverrides returns r with a Service's overrides applied: the ones
// the Transport has (consecutive failures, ejection times, ejection share,
// attempts). The failure percentage, interval and retry codes are gRPC's.
func (r *Resilience) withOverrides(o *ServiceResilience) Resilience {
	out := *r
	if x := o.Outlier; x != nil {
		if n := x.ConsecutiveFailures; n != nil {
			out.ConsecutiveFailures = int(*n)
		}
		if d, err := time.ParseDuration(x.BaseEjectionTime); err == nil && d > 0 {
			out.BaseEjectionTime = d
		}
		if d, err := time.ParseDuration(x.MaxEjectionTime); err == nil && d > 0 {
			out.MaxEjectionTime = d
		}
		out.MaxEjectionTime = max(out.MaxEjectionTime, out.BaseEjectionTime)
		if p := x.MaxEjectionPercent; p != nil {
			out.MaxEjectionPercent = int(*p)
		}
		// 0 consecutive failures or a 0% share: no ejection at all, the
		// only ejection rule the Transport has being off.
		if out.ConsecutiveFailures == 0 || out.MaxEjectionPercent == 0 {
			out.ConsecutiveFailures = math.MaxInt
		}
	}
	if x := o.Retry; x != nil && x.MaxAttempts != nil {
		out.MaxAttempts = max(int(*x.MaxAttempts), 1)
	}
	return out
}

type httpEndpoint struct {
	consecutive  int
	ejectedUntil time.Time
	multiplier   int
}

func (s *outlierState) ejected(addr string, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.byAddr[addr]
	return e != nil && now.Before(e.ejectedUntil)
}

// record counts one attempt's outcome at addr. count returns how many
// endpoints the Service port has, for the bounded share; it is asked only
// when an ejection is due.
//
// It returns when the endpoint's ejection ends if this outcome ejected it,
// the zero time otherwise.
func (s *outlierState) record(addr string, failed bool, r *Resilience, count func() int) time.Time {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.byAddr[addr]
	if e == nil {
		if !failed {
			return time.Time{} // nothing to remember of an endpoint that works
		}
		e = &httpEndpoint{}
		s.byAddr[addr] = e
	}
	if !failed {
		e.consecutive = 0
		return time.Time{}
	}
	e.consecutive++
	if e.consecutive < r.ConsecutiveFailures || now.Before(e.ejectedUntil) {
		return time.Time{}
	}
	ejectedNow := 0
	for _, other := range s.byAddr {
		if now.Before(other.ejectedUntil) {
			ejectedNow++
		}
	}
	// The count costs a request to the agent; it is asked for outside
	// the lock's hot path only when an ejection is due.
	s.mu.Unlock()
	n := count()
	s.mu.Lock()
	allowed := n * r.MaxEjectionPercent / 100
	if allowed < 1 && n >= 2 {
		allowed = 1
	}
	allowed = min(allowed, n-1)
	if ejectedNow >= allowed {
		return time.Time{}
	}
	// The multiplier grows per ejection and is forgotten after a stretch
	// as long as the longest ejection without one.
	if now.Sub(e.ejectedUntil) > r.MaxEjectionTime {
		e.multiplier = 0
	}
	e.multiplier++
	e.ejectedUntil = now.Add(min(time.Duration(e.multiplier)*r.BaseEjectionTime, r.MaxEjectionTime))
	e.consecutive = 0
	return e.ejectedUntil
}

// failedAttempt says whether an attempt's outcome counts against the
// endpoint (and makes it worth another try).
func failedAttempt(caller context.Context, resp *http.Response, err error) bool {
	if err != nil {
		// The caller giving up is not the endpoint's fault.
		return caller.Err() == nil
	}
	switch resp.StatusCode {
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// cancelOnClose ends an attempt's context when its body is closed, so that
// a per-try timeout keeps bounding the read of the answer's body.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	err := c.ReadCloser.Close()
	c.cancel()
	return err
}

// pickAvoiding asks the agent for endpoints until one is neither ejected
// nor tried already. The agent's pick is its weighted round-robin, shared
// by the node's clients, so a few picks in a row cover the endpoints by
// weight; when all of a handful are ejected or tried, the last pick is
// used (the panic rule: better an ejected endpoint than none).
func (t *Transport) pickAvoiding(ctx context.Context, client *Client, host string, s *outlierState, tried []string) (string, error) {
	const picks = 8
	var addr string
	for range picks {
		var err error
		if addr, err = client.Pick(ctx, host, t.Port); err != nil {
			return "", err
		}
		if !slices.Contains(tried, addr) && !s.ejected(addr, time.Now()) {
			return addr, nil
		}
	}
	return addr, nil
}

// roundTripResilient sends req to one endpoint after another, as Resilience
// says.
func (t *Transport) roundTripResilient(req *http.Request, base http.RoundTripper, client *Client, host string, r *Resilience) (*http.Response, error) {
	s := t.state(host)
	r = s.forService(req.Context(), client, host, r)
	s.budget.deposit(r)
	attempts := 1
	if idempotent(req) {
		attempts = r.MaxAttempts
	}
	count := func() int {
		eps, err := client.Lookup(req.Context(), host)
		if err != nil {
			return 0
		}
		n := 0
		for i := range eps {
			if _, ok := eps[i].Port(t.Port); ok || t.Port == "" {
				n++
			}
		}
		return n
	}
	var tried []string
	for attempt := 1; ; attempt++ {
		addr, err := t.pickAvoiding(req.Context(), client, host, s, tried)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		out := req.Clone(req.Context())
		if out.Host == "" {
			out.Host = req.URL.Host
		}
		out.URL.Host = addr
		if attempt > 1 && req.GetBody != nil {
			if out.Body, err = req.GetBody(); err != nil {
				return nil, err
			}
		}
		ctx, cancel := req.Context(), context.CancelFunc(func() {})
		if r.PerTryTimeout > 0 {
			ctx, cancel = context.WithTimeout(ctx, r.PerTryTimeout)
		}
		resp, err := base.RoundTrip(out.WithContext(ctx))
		failed := failedAttempt(req.Context(), resp, err)
		s.record(addr, failed, r, count)
		if !failed || attempt >= attempts || req.Context().Err() != nil || !s.budget.withdraw() {
			if err != nil {
				cancel()
				return nil, err
			}
			resp.Body = &cancelOnClose{ReadCloser: resp.Body, cancel: cancel}
			return resp, nil
		}
		if resp != nil {
			// Drain a little so that the connection can be reused.
			_, _ = io.CopyN(io.Discard, resp.Body, 4<<10)
			resp.Body.Close()
		}
		cancel()
		tried = append(tried, addr)
	}
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// state returns the outlier state of one Service host (and the Transport's
// port).
func (t *Transport) state(host string) *outlierState {
	name, err := ParseServiceName(host)
	key := host
	if err == nil {
		key = name.String() // orders.shop.svc and orders.shop.svc.cluster.local alike
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.states == nil {
		t.states = map[string]*outlierState{}
	}
	s := t.states[key]
	if s == nil {
		s = &outlierState{byAddr: map[string]*httpEndpoint{}}
		// A new Service starts with a full burst of retries.
		s.budget.balance = t.resilience().RetryBurst
		t.states[key] = s
	}
	return s
}

func (t *Transport) resilience() *Resilience {
	t.resOnce.Do(func() { r := t.Resilience.withDefaults(); t.res = &r })
	return t.res
}
