package kratos

import (
	"context"
	"sync"
	"sync/atomic"

	"github.com/go-kratos/kratos/v2/errors"
	"github.com/go-kratos/kratos/v2/selector"
	"github.com/go-kratos/kratos/v2/selector/wrr"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
)

// NewSelector returns a Kratos selector.Builder that adds the kubedisco
// client's outlier ejection to inner (Kratos's wrr, p2c or random builder;
// nil means wrr): each call's outcome, as Kratos reports it to the
// selector's DoneFunc, counts against its instance; an instance failing r's
// ConsecutiveFailures calls in a row is left out of the picks for its
// ejection time, never more than r's MaxEjectionPercent of a Service's
// instances at once (r nil: the defaults, see kubedisco.Resilience).
// A call fails when its error is a server error (Kratos code 500 and up:
// gRPC UNAVAILABLE, INTERNAL, UNKNOWN, DEADLINE_EXCEEDED, HTTP 5xx) and the
// caller's context has not ended.
//
// Kratos's gRPC and HTTP clients take the global selector:
//
//	selector.SetGlobalSelector(kratos.NewSelector(wrr.NewBuilder(), nil))
//
// before the clients are made. Retries are not the selector's: add a
// retrying middleware, or call again — the next pick avoids an ejected
// instance.
func NewSelector(inner selector.Builder, r *kubedisco.Resilience) selector.Builder {
	if inner == nil {
		inner = wrrBuilder()
	}
	return &selectorBuilder{inner: inner, r: r, ejectors: map[string]*kubedisco.Ejector{}}
}

type selectorBuilder struct {
	inner selector.Builder
	r     *kubedisco.Resilience

	mu       sync.Mutex
	ejectors map[string]*kubedisco.Ejector // by Kratos service name
}

// ejector returns the Ejector of one service: it outlives the selectors,
// which Kratos's gRPC client builds anew whenever its connections change.
func (b *selectorBuilder) ejector(service string) *kubedisco.Ejector {
	b.mu.Lock()
	defer b.mu.Unlock()
	e := b.ejectors[service]
	if e == nil {
		e = kubedisco.NewEjector(b.r)
		b.ejectors[service] = e
	}
	return e
}

func (b *selectorBuilder) Build() selector.Selector {
	return &ejectingSelector{b: b, inner: b.inner.Build()}
}

type ejectingSelector struct {
	b     *selectorBuilder
	inner selector.Selector
	n     atomic.Int64
}

func (s *ejectingSelector) Apply(nodes []selector.Node) {
	s.n.Store(int64(len(nodes)))
	s.inner.Apply(nodes)
}

func (s *ejectingSelector) Select(ctx context.Context, opts ...selector.SelectOption) (selector.Node, selector.DoneFunc, error) {
	var o selector.SelectOptions
	for _, opt := range opts {
		opt(&o)
	}
	filters := append(o.NodeFilters[:len(o.NodeFilters):len(o.NodeFilters)], s.filter)
	node, done, err := s.inner.Select(ctx, selector.WithNodeFilter(filters...))
	if err != nil {
		return node, done, err
	}
	e, addr, n := s.b.ejector(node.ServiceName()), node.Address(), int(s.n.Load())
	return node, func(ctx context.Context, di selector.DoneInfo) {
		e.Record(addr, failedCall(ctx, di.Err), n)
		if done != nil {
			done(ctx, di)
		}
	}, nil
}

// filter leaves out ejected instances; when every one is, it keeps them
// all (better an ejected instance than none).
func (s *ejectingSelector) filter(_ context.Context, nodes []selector.Node) []selector.Node {
	if len(nodes) == 0 {
		return nodes
	}
	e := s.b.ejector(nodes[0].ServiceName())
	out := make([]selector.Node, 0, len(nodes))
	for _, n := range nodes {
		if !e.Ejected(n.Address()) {
			out = append(out, n)
		}
	}
	if len(out) == 0 {
		return nodes
	}
	return out
}

func failedCall(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	return errors.FromError(err).Code >= 500
}

func wrrBuilder() selector.Builder { return wrr.NewBuilder() }
