package kubedisco

import (
	"context"
	"net/http"
)

// ServicePolicy is one Service's Resilience for the framework adapters
// that balance and retry on their own (Kratos): the Transport's settings,
// its per-Service overrides and its retry budget, so that an adapter
// behaves as the Transport does without copying it.
type ServicePolicy struct {
	client *Client // nil: no overrides are read
	host   string
	base   Resilience

	// The Transport's own pieces, not its whole outlierState: an adapter
	// balances and ejects on its own, so only these are shared.
	budget    retryBudget
	overrides serviceOverrides
}

// NewServicePolicy returns the policy of service ("orders.shop") with r as
// the base (nil: the defaults). The Service's kubedisco.io/outlier-* and
// kubedisco.io/retry-* annotations, as client's agent serves them,
// override it; a nil client reads none.
func NewServicePolicy(client *Client, service string, r *Resilience) *ServicePolicy {
	p := &ServicePolicy{client: client, host: service, base: r.withDefaults()}
	p.budget.balance = p.base.RetryBurst // a new Service starts with a full burst
	return p
}

// Current returns the base with the Service's overrides. The first call
// asks the agent; later ones refresh the overrides in the background
// every few seconds, as the Transport does.
func (p *ServicePolicy) Current(ctx context.Context) Resilience {
	if p.client == nil || p.base.Off {
		return p.base
	}
	return *p.overrides.forService(ctx, p.client, p.host, &p.base)
}

// Deposit adds one request's share (r.RetryRatio) to the retry budget.
func (p *ServicePolicy) Deposit(r *Resilience) { p.budget.deposit(r) }

// Withdraw takes one retry from the budget; false when it is spent.
func (p *ServicePolicy) Withdraw() bool { return p.budget.withdraw() }

// IdempotentRequest reports whether the Transport would retry req: GET,
// HEAD, OPTIONS or TRACE, or an Idempotency-Key header, and a body that
// can be replayed (none, or GetBody).
func IdempotentRequest(req *http.Request) bool { return idempotent(req) }
