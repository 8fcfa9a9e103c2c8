package gokit

import (
	"context"
	"errors"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
)

// Retry is lb.Retry (up to max attempts, all within timeout, a failed
// RetryError carrying every attempt's error) that sends each retry to an
// instance the call has not tried yet. lb.Retry asks its balancer for the
// next endpoint, and a balancer shared by concurrent callers (go-kit's
// round robin) may hand the retry of a call that failed on an instance
// the very same instance, as it is that instance's turn again.
//
// It needs endpoints that know their instance: those of Ejecting.Factory,
// or of Track for a plain factory. Retry asks the balancer again when it
// hands out an instance the call has tried (or, with Ejecting, one ejected
// meanwhile: before the endpointer has dropped it); after 64 such picks in
// a row it takes the next one whatever it is. With endpoints of other
// factories it retries as lb.Retry does.
//
// Retry every call that may be sent twice (idempotent ones), as with
// lb.Retry. Ejecting.Retry and Instancer.Retry take max from the Service's
// kubedisco.io/retry-max-attempts annotation when it has one.
func Retry(max int, timeout time.Duration, b lb.Balancer) endpoint.Endpoint {
	return retry(func() int { return max }, timeout, b)
}

// overridesSource is what knows a Service's resilience overrides (its
// annotations): Instancer, and Ejecting over one.
type overridesSource interface {
	Overrides() *kubedisco.ServiceResilience
}

// retryFor is Retry with max overridden by src's retry-max-attempts.
func retryFor(src overridesSource, max int, timeout time.Duration, b lb.Balancer) endpoint.Endpoint {
	return retry(func() int {
		r := kubedisco.Resilience{MaxAttempts: max}
		return r.WithOverrides(src.Overrides()).MaxAttempts
	}, timeout, b)
}

// picksPerAttempt bounds how often one attempt asks the balancer again
// for an instance the call has not tried; the chance that a balancer
// picking at random among three misses the one untried for this many picks
// is below 1e-11.
const picksPerAttempt = 64

func retry(attempts func() int, timeout time.Duration, b lb.Balancer) endpoint.Endpoint {
	if b == nil {
		panic("nil Balancer")
	}
	return func(ctx context.Context, req any) (any, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		c := &call{}
		ctx = context.WithValue(ctx, callKey{}, c)
		max := attempts()
		var final lb.RetryError
		for i := 1; ; i++ {
			resp, err := c.attempt(ctx, b, req)
			if err == nil {
				return resp, nil
			}
			final.RawErrors = append(final.RawErrors, err)
			if i >= max || ctx.Err() != nil {
				final.Final = err
				return nil, final
			}
		}
	}
}

// call is one Retry call's record of the instances it tried.
type call struct {
	mu    sync.Mutex
	tried []string
	any   bool // every pick was tried: take whatever comes
}

type callKey struct{}

// errTried is how a tracked endpoint declines an instance the call has
// tried (or that is ejected); Retry never returns it.
var errTried = errors.New("gokit: instance already tried in this call")

func (c *call) attempt(ctx context.Context, b lb.Balancer, req any) (any, error) {
	c.mu.Lock()
	c.any = false
	c.mu.Unlock()
	for range picksPerAttempt {
		ep, err := b.Endpoint()
		if err != nil {
			return nil, err
		}
		resp, err := ep(ctx, req)
		if !errors.Is(err, errTried) {
			return resp, err
		}
	}
	c.mu.Lock()
	c.any = true
	c.mu.Unlock()
	ep, err := b.Endpoint()
	if err != nil {
		return nil, err
	}
	return ep(ctx, req)
}

// claim reports whether this call may send to instance now, and records
// it as tried when it may.
func (c *call) claim(instance string, ejected bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.any && (ejected || slices.Contains(c.tried, instance)) {
		return false
	}
	c.tried = append(c.tried, instance)
	return true
}

// Track wraps a go-kit factory so that its endpoints know their instance,
// which Retry needs to avoid the instances a call has tried. Outside a
// Retry call the endpoints are f's, unchanged. Ejecting.Factory does this
// already.
func Track(f sd.Factory) sd.Factory {
	return track(f, func(string) bool { return false })
}

func track(f sd.Factory, ejected func(instance string) bool) sd.Factory {
	return func(instance string) (endpoint.Endpoint, io.Closer, error) {
		ep, closer, err := f(instance)
		if err != nil {
			return ep, closer, err
		}
		return func(ctx context.Context, req any) (any, error) {
			if c, ok := ctx.Value(callKey{}).(*call); ok && !c.claim(instance, ejected(instance)) {
				return nil, errTried
			}
			return ep(ctx, req)
		}, closer, nil
	}
}
