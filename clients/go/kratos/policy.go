package kratos

import (
	"context"
	"net/url"
	"slices"
	"strings"
	"sync"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
)

// Option configures NewSelector and Retry.
type Option func(*options)

type options struct {
	client *kubedisco.Client
}

// WithClient makes NewSelector or Retry read the Services' overrides
// (their kubedisco.io/outlier-* and kubedisco.io/retry-* annotations) from
// client's agent; without it they ask the agent at KUBEDISCO_ADDR.
func WithClient(client *kubedisco.Client) Option {
	return func(o *options) { o.client = client }
}

// policies keeps one kubedisco.ServicePolicy per Service: the settings
// the caller passed, with the Service's annotations over them.
type policies struct {
	base   *kubedisco.Resilience
	client *kubedisco.Client

	mu     sync.Mutex
	byName map[string]*kubedisco.ServicePolicy
}

func newPolicies(r *kubedisco.Resilience, opts []Option) *policies {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.client == nil {
		// An agent address that does not parse leaves the overrides
		// unread: the calls themselves go through Kratos's discovery.
		o.client, _ = kubedisco.DefaultClient()
	}
	return &policies{base: r, client: o.client, byName: map[string]*kubedisco.ServicePolicy{}}
}

// get returns the policy of a Service ("orders.shop"); "" means a call
// that does not go through discovery, which has no annotations to read.
func (p *policies) get(service string) *kubedisco.ServicePolicy {
	p.mu.Lock()
	defer p.mu.Unlock()
	sp := p.byName[service]
	if sp == nil {
		client := p.client
		if service == "" {
			client = nil
		}
		sp = kubedisco.NewServicePolicy(client, service, p.base)
		p.byName[service] = sp
	}
	return sp
}

// serviceOf returns the Service of a Kratos client endpoint
// ("discovery:///orders.shop"), "" for a direct one.
func serviceOf(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "discovery" {
		return ""
	}
	return strings.TrimPrefix(u.Path, "/")
}

// call is what one application call's tries share through their
// contexts: the instances tried so far, which the selector leaves out of
// the next pick, and the caller's context, which says whether a try that
// ended with its own deadline failed (a per-try timeout) or was given up.
type call struct {
	caller context.Context

	mu    sync.Mutex
	tried []string
}

type callKey struct{}

func withCall(ctx context.Context) context.Context {
	return context.WithValue(ctx, callKey{}, &call{caller: ctx})
}

func callFrom(ctx context.Context) *call {
	c, _ := ctx.Value(callKey{}).(*call)
	return c
}

func (c *call) add(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !slices.Contains(c.tried, addr) {
		c.tried = append(c.tried, addr)
	}
}

func (c *call) has(addr string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Contains(c.tried, addr)
}
