package kubedisco

import (
	"context"
	"io"
	"net/http"
	"sync"
)

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

// roundTripResilient sends req to one endpoint after another, as Resilience
// says.
func (t *Transport) roundTripResilient(req *http.Request, base http.RoundTripper, client *Client, host string, r *Resilience) (*http.Response, error) {
	s := t.state(host)
	r = s.overrides.forService(req.Context(), client, host, r)
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
		addr, err := t.pick(req.Context(), client, host, s, tried)
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
		s = newOutlierState()
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
