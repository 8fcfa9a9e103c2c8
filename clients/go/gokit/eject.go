package gokit

import (
	"context"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
)

// Ejecting adds the kubedisco client's outlier ejection to go-kit: it is
// an sd.Instancer passing on another one's instances minus those ejected,
// and its Factory wraps a go-kit factory so that every call's outcome
// counts against its instance. An error (the caller's context not having
// ended) is a failure; an instance failing Resilience's
// ConsecutiveFailures calls in a row, or more than FailurePercentage of
// at least RequestVolume calls in an Interval, is dropped from the
// instances for its ejection time, never more than MaxEjectionPercent of
// them at once, nor the last one:
//
//	instancer, _ := gokit.NewInstancer(nil, "orders.shop", "http", logger)
//	ejecting := gokit.NewEjecting(instancer, nil)
//	endpointer := sd.NewEndpointer(ejecting, ejecting.Factory(factory), logger)
//	call := ejecting.Retry(3, time.Second, lb.NewRoundRobin(endpointer))
//
// Over an Instancer it applies the Service's annotations
// (kubedisco.io/outlier-*) over r, as kubedisco.Transport does, and its
// Retry their kubedisco.io/retry-max-attempts.
type Ejecting struct {
	inner sd.Instancer
	ej    *kubedisco.Ejector
	in    chan sd.Event
	done  chan struct{}
	hub

	lmu  sync.Mutex
	last sd.Event // the inner instancer's

	src     overridesSource // nil when inner knows no Service
	omu     sync.Mutex
	applied *kubedisco.ServiceResilience
}

var _ sd.Instancer = (*Ejecting)(nil)

// NewEjecting follows inner and ejects as r says (nil: the defaults).
func NewEjecting(inner sd.Instancer, r *kubedisco.Resilience) *Ejecting {
	e := &Ejecting{inner: inner, ej: kubedisco.NewEjector(r), in: make(chan sd.Event), done: make(chan struct{})}
	e.src, _ = inner.(overridesSource)
	go e.loop()
	inner.Register(e.in)
	return e
}

func (e *Ejecting) loop() {
	for {
		select {
		case ev := <-e.in:
			e.lmu.Lock()
			e.last = ev
			e.lmu.Unlock()
			e.republish()
		case <-e.done:
			return
		}
	}
}

// republish passes on the inner instances minus the ejected ones (all of
// them if every one is).
func (e *Ejecting) republish() {
	e.lmu.Lock()
	ev := sd.Event{Err: e.last.Err, Instances: slices.DeleteFunc(slices.Clone(e.last.Instances), e.ej.Ejected)}
	if len(ev.Instances) == 0 {
		ev.Instances = slices.Clone(e.last.Instances)
	}
	e.lmu.Unlock()
	e.publish(ev)
}

func (e *Ejecting) count() int {
	e.lmu.Lock()
	defer e.lmu.Unlock()
	return len(e.last.Instances)
}

// Factory wraps f: the endpoints it makes report each call's outcome, and
// know their instance (see Retry).
func (e *Ejecting) Factory(f sd.Factory) sd.Factory {
	recording := func(instance string) (endpoint.Endpoint, io.Closer, error) {
		ep, closer, err := f(instance)
		if err != nil {
			return ep, closer, err
		}
		return func(ctx context.Context, req any) (any, error) {
			resp, err := ep(ctx, req)
			e.applyOverrides()
			until := e.ej.Record(instance, err != nil && ctx.Err() == nil, e.count())
			if !until.IsZero() {
				go e.republish()
				time.AfterFunc(time.Until(until)+time.Millisecond, e.republish)
			}
			return resp, err
		}, closer, nil
	}
	return track(recording, e.ej.Ejected)
}

// applyOverrides hands the Ejector the Service's annotations when they
// changed.
func (e *Ejecting) applyOverrides() {
	if e.src == nil {
		return
	}
	o := e.src.Overrides()
	e.omu.Lock()
	defer e.omu.Unlock()
	if o != e.applied {
		e.applied = o
		e.ej.SetOverrides(o)
	}
}

// Overrides returns the Service's resilience annotations as the inner
// Instancer last had them (nil when it is not an Instancer, or the
// Service has none).
func (e *Ejecting) Overrides() *kubedisco.ServiceResilience {
	if e.src == nil {
		return nil
	}
	return e.src.Overrides()
}

// Retry is the package's Retry with max replaced by the Service's
// kubedisco.io/retry-max-attempts annotation when it has one.
func (e *Ejecting) Retry(max int, timeout time.Duration, b lb.Balancer) endpoint.Endpoint {
	return retryFor(e, max, timeout, b)
}

// Stop stops following the inner instancer (it does not stop that one).
func (e *Ejecting) Stop() {
	e.inner.Deregister(e.in)
	close(e.done)
}
