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
// selector's DoneFunc, counts against its instance; an instance failing
// ConsecutiveFailures calls in a row is left out of the picks for its
// ejection time, never more than MaxEjectionPercent of a Service's
// instances at once. The settings are r's (nil: the defaults, see
// kubedisco.Resilience) with each Service's kubedisco.io/outlier-*
// annotations over them, read from the agent (see WithClient) and
// refreshed every few seconds; a change of settings applies from then on,
// and the ejections so far stand.
// A call fails when its error is a server error (Kratos code 500 and up:
// gRPC UNAVAILABLE, INTERNAL, UNKNOWN, DEADLINE_EXCEEDED, HTTP 5xx) and the
// caller's context has not ended.
//
// Kratos's gRPC and HTTP clients take the global selector:
//
//	selector.SetGlobalSelector(kratos.NewSelector(wrr.NewBuilder(), nil))
//
// before the clients are made. The selector also sends the retries of
// Retry to instances the call has not tried.
func NewSelector(inner selector.Builder, r *kubedisco.Resilience, opts ...Option) selector.Builder {
	if inner == nil {
		inner = wrrBuilder()
	}
	return &selectorBuilder{inner: inner, policies: newPolicies(r, opts), services: map[string]*serviceEjection{}}
}

type selectorBuilder struct {
	inner    selector.Builder
	policies *policies

	mu       sync.Mutex
	services map[string]*serviceEjection // by Kratos service name
}

// serviceEjection is one Service's ejections: they outlive the selectors,
// which Kratos's gRPC client builds anew whenever its connections change.
type serviceEjection struct {
	policy *kubedisco.ServicePolicy

	mu  sync.Mutex
	cfg kubedisco.Resilience
	ej  *kubedisco.Ejector
}

// ejector returns the Ejector of one service under its current settings.
func (b *selectorBuilder) ejector(ctx context.Context, service string) *kubedisco.Ejector {
	b.mu.Lock()
	s := b.services[service]
	if s == nil {
		s = &serviceEjection{policy: b.policies.get(service)}
		b.services[service] = s
	}
	b.mu.Unlock()
	cfg := s.policy.Current(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.ej == nil:
		s.cfg, s.ej = cfg, kubedisco.NewEjector(&cfg)
	case cfg != s.cfg:
		// New annotations: new rules from now on, the ejections so far kept.
		s.cfg = cfg
		s.ej.Use(&cfg)
	}
	return s.ej
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
	e, addr, n := s.b.ejector(ctx, node.ServiceName()), node.Address(), int(s.n.Load())
	return node, func(ctx context.Context, di selector.DoneInfo) {
		// The call's own context, not the try's: a try that ran out of
		// its per-try time while the caller still waits has failed.
		judge := ctx
		if c := callFrom(ctx); c != nil {
			c.add(addr)
			judge = c.caller
		}
		e.Record(addr, failedCall(judge, di.Err), n)
		if done != nil {
			done(ctx, di)
		}
	}, nil
}

// filter leaves out the instances the call has tried and the ejected
// ones, in that order of importance: when nothing is left, it keeps the
// untried ones, then the ones not ejected, then all (better a second try
// or an ejected instance than none).
func (s *ejectingSelector) filter(ctx context.Context, nodes []selector.Node) []selector.Node {
	if len(nodes) == 0 {
		return nodes
	}
	e := s.b.ejector(ctx, nodes[0].ServiceName())
	c := callFrom(ctx)
	tried := func(n selector.Node) bool { return c != nil && c.has(n.Address()) }
	ejected := func(n selector.Node) bool { return e.Ejected(n.Address()) }
	for _, leaveOut := range []func(selector.Node) bool{
		func(n selector.Node) bool { return tried(n) || ejected(n) },
		tried,
		ejected,
	} {
		out := make([]selector.Node, 0, len(nodes))
		for _, n := range nodes {
			if !leaveOut(n) {
				out = append(out, n)
			}
		}
		if len(out) > 0 {
			return out
		}
	}
	return nodes
}

func failedCall(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil {
		return false
	}
	return errors.FromError(err).Code >= 500
}

func wrrBuilder() selector.Builder { return wrr.NewBuilder() }
