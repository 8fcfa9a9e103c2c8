package kdgrpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"

	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/balancer/base"
	"google.golang.org/grpc/balancer/endpointsharding"
	"google.golang.org/grpc/balancer/pickfirst"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/serviceconfig"

	"github.com/kubedisco/kubedisco/clients/go/internal/wrr"
)

// Name is the name the balancer is registered under: kubedisco_weighted.
//
// It keeps one connection (a pick_first child) per endpoint and spreads
// RPCs over the READY ones by smooth weighted round-robin (nginx's
// algorithm: over any sum(weights) RPCs each endpoint gets exactly its
// weight, evenly interleaved), using the weight and priority that the
// resolver attached to each endpoint (EndpointInfo).
//
// Priority tiers and spill-over, with t = panicThreshold (0.5 by default,
// as the agent's --panic-threshold). For each tier, in ascending priority: a = READY weight / total
// weight of the tier; health h = 0 if nothing is READY, 1 if a >= t, else
// a/t; the tier's load is min(h, what earlier tiers left over). Loads that
// add up to less than 1 are scaled up to 1. Inside a tier, READY endpoints
// share its load by weight. So a tier keeps all traffic while at least t
// (half, by default) of its weight is READY, and below that hands the
// missing part to the next tier proportionally (Envoy's priority-load model, overprovisioning factor
// 1/t). The READY share is by weight, not by count: weight is capacity, and
// a drained (weight 0) endpoint neither adds capacity nor misses it. Weight
// 0 endpoints get traffic only when no READY endpoint has a positive
// weight.
//
// When no endpoint is READY, RPCs wait for one (or fail fast as gRPC does
// for TRANSIENT_FAILURE). When the resolver reports no endpoints, RPCs fail
// with its reason (Service does not exist, or has no usable endpoints); RPCs
// with WaitForReady wait instead.
const Name = "kubedisco_weighted"

// ServiceConfig is a gRPC service config for grpc.WithDefaultServiceConfig:
// the kubedisco_weighted balancer with outlier ejection on (OutlierConfig's
// defaults: 5 failures in a row, or above 85% failed over 10s, eject an
// endpoint for 30s, longer each time, at most half of the endpoints at
// once), and RPCs that fail with UNAVAILABLE retried up to twice (on
// another endpoint when the interceptors of DialOptions are installed),
// within gRPC's retry budget: retries stop while more than 50 of the last
// attempts failed and come back at 0.2 per successful RPC, so they add at
// most about 20% to the traffic once the burst is spent.
//
// UNAVAILABLE is the code for "the RPC did not reach the application"
// (connection refused or reset, server shutting down), so retrying it is
// safe for any method; gRPC retries only attempts whose response has not
// begun.
const ServiceConfig = `{
  "loadBalancingConfig": [{"kubedisco_weighted": {"outlierDetection": {}}}],
  "methodConfig": [{
    "name": [{}],
    "retryPolicy": {
      "maxAttempts": 3,
      "initialBackoff": "0.005s",
      "maxBackoff": "0.05s",
      "backoffMultiplier": 2,
      "retryableStatusCodes": ["UNAVAILABLE"]
    }
  }],
  "retryThrottling": {"maxTokens": 100, "tokenRatio": 0.2}
}`

// WeightedOnlyServiceConfig selects the kubedisco_weighted balancer without
// outlier ejection or retries: every endpoint keeps its full share until
// the agent stops listing it or its connection fails.
const WeightedOnlyServiceConfig = `{"loadBalancingConfig":[{"kubedisco_weighted":{}}]}`

// DefaultWeight is the weight of an endpoint that carries no EndpointInfo.
const DefaultWeight = 100

// LBConfig is the balancer's configuration in a service config:
//
//	{"loadBalancingConfig":[{"kubedisco_weighted":{"panicThreshold":0.5}}]}
type LBConfig struct {
	serviceconfig.LoadBalancingConfig `json:"-"`

	// PanicThreshold is the READY share of a tier's weight, a fraction
	// from 0 to 1, at or above which the tier takes all of its traffic;
	// below it, the missing part spills over to the next tier (see Name).
	// Default 0.5. The same unit and default as the agent's
	// --panic-threshold; 0 is strict failover.
	PanicThreshold *float64 `json:"panicThreshold,omitempty"`

	// OutlierDetection turns outlier ejection on ({} for the defaults);
	// absent, it is off. See OutlierConfig.
	OutlierDetection *OutlierConfig `json:"outlierDetection,omitempty"`

	outlier *outlierSettings
}

// balancerBuilder builds the kubedisco_weighted balancer (see Name).
type balancerBuilder struct{}

func (balancerBuilder) Name() string { return Name }

func (balancerBuilder) Build(cc balancer.ClientConn, opts balancer.BuildOptions) balancer.Balancer {
	b := &weightedBalancer{ClientConn: cc, threshold: wrr.DefaultThreshold}
	b.ejector = newEjector(b.publish)
	b.child = endpointsharding.NewBalancer(b, opts, balancer.Get(pickfirst.Name).Build, endpointsharding.Options{})
	return b
}

func (balancerBuilder) ParseConfig(raw json.RawMessage) (serviceconfig.LoadBalancingConfig, error) {
	cfg := &LBConfig{}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, cfg); err != nil {
			return nil, fmt.Errorf("%s: invalid config %s: %w", Name, raw, err)
		}
	}
	if t := cfg.PanicThreshold; t != nil && !(*t >= 0 && *t <= 1) {
		return nil, fmt.Errorf("%s: panicThreshold %v is not a fraction from 0 to 1 (0.5: half the tier's weight READY), the unit of the agent's --panic-threshold", Name, *t)
	}
	if cfg.OutlierDetection != nil {
		s, err := cfg.OutlierDetection.settings()
		if err != nil {
			return nil, err
		}
		cfg.outlier = s
	}
	return cfg, nil
}

type weightedBalancer struct {
	// The parent ClientConn; embedded so that the endpointsharding child
	// can use this balancer as its ClientConn, which lets UpdateState below
	// see every child's state.
	balancer.ClientConn
	child   balancer.Balancer
	ejector *ejector

	// publishMu serialises publish: it runs on endpointsharding's updates
	// and on ejections (RPC goroutines, timers).
	publishMu sync.Mutex

	mu          sync.Mutex
	last        balancer.State // endpointsharding's latest aggregate state
	threshold   float64
	emptyReason error // why the resolver gave no endpoints
	resolverErr error // the latest resolver error
}

func (b *weightedBalancer) UpdateClientConnState(s balancer.ClientConnState) error {
	threshold := wrr.DefaultThreshold
	var outlier *outlierSettings
	if cfg, ok := s.BalancerConfig.(*LBConfig); ok {
		if cfg.PanicThreshold != nil {
			threshold = *cfg.PanicThreshold
		}
		outlier = cfg.outlier
	}
	b.ejector.configure(outlier)
	reason := emptyReason(s.ResolverState)
	b.mu.Lock()
	b.threshold, b.emptyReason, b.resolverErr = threshold, reason, nil
	b.mu.Unlock()
	// As round_robin does: pick_first children, with the health listener
	// enabled so that client-side health checks apply when configured.
	err := b.child.UpdateClientConnState(balancer.ClientConnState{
		ResolverState: pickfirst.EnableHealthListener(s.ResolverState),
	})
	if len(s.ResolverState.Endpoints) == 0 && reason != nil {
		return nil // a real answer ("no endpoints"), not a bad resolver state
	}
	return err
}

func (b *weightedBalancer) ResolverError(err error) {
	b.mu.Lock()
	b.resolverErr = err
	b.mu.Unlock()
	b.child.ResolverError(err)
}

func (b *weightedBalancer) UpdateSubConnState(balancer.SubConn, balancer.SubConnState) {
	// Deprecated in gRPC; subconn states reach the children directly.
}

func (b *weightedBalancer) ExitIdle() { b.child.ExitIdle() }

func (b *weightedBalancer) Close() {
	b.ejector.close()
	b.child.Close()
}

// UpdateState receives endpointsharding's aggregate state, and publishes
// the weighted picker in its place.
func (b *weightedBalancer) UpdateState(s balancer.State) {
	b.mu.Lock()
	b.last = s
	b.mu.Unlock()
	b.publish()
}

// endpointKey names an endpoint for the ejector across updates.
func endpointKey(ep resolver.Endpoint) string {
	addrs := make([]string, len(ep.Addresses))
	for i, a := range ep.Addresses {
		addrs[i] = a.Addr
	}
	return strings.Join(addrs, ",")
}

// publish builds the picker from the latest children's states and the
// ejections, and hands it to gRPC.
func (b *weightedBalancer) publish() {
	b.publishMu.Lock()
	defer b.publishMu.Unlock()
	b.mu.Lock()
	s, threshold, reason, resolverErr := b.last, b.threshold, b.emptyReason, b.resolverErr
	b.mu.Unlock()
	if s.Picker == nil {
		return // nothing from endpointsharding yet
	}
	children := endpointsharding.ChildStatesFromPicker(s.Picker)
	keys := make([]string, len(children))
	for i, c := range children {
		keys[i] = endpointKey(c.Endpoint)
	}
	stats, ejected := b.ejector.track(keys)

	if len(children) == 0 {
		err := reason
		if err == nil {
			err = resolverErr
		}
		if err == nil {
			err = errors.New("kubedisco: the resolver gave no endpoints")
		}
		b.ClientConn.UpdateState(balancer.State{
			ConnectivityState: connectivity.TransientFailure,
			Picker:            base.NewErrPicker(err),
		})
		return
	}

	cands := make([]wrr.Candidate, len(children))
	for i, c := range children {
		info, ok := GetEndpointInfo(c.Endpoint)
		if !ok {
			info.Weight = DefaultWeight
		}
		cands[i] = wrr.Candidate{
			Weight:   info.Weight,
			Priority: info.Priority,
			// An ejected endpoint counts as not READY, so that its
			// tier spills over by the panic rule as for a lost
			// connection.
			Ready: c.State.ConnectivityState == connectivity.Ready && !(ejected != nil && ejected[i]),
		}
	}
	plan := wrr.Plan(cands, threshold)
	var pickers []balancer.Picker
	var weights []int64
	var picked []*endpointStats
	var pickedKeys []string
	for i, w := range plan {
		if w > 0 {
			pickers = append(pickers, children[i].State.Picker)
			weights = append(weights, w)
			pickedKeys = append(pickedKeys, keys[i])
			if stats != nil {
				picked = append(picked, stats[i])
			}
		}
	}
	if len(pickers) == 0 {
		// Nothing READY: endpointsharding's picker round-robins over the
		// children in the best state there is (CONNECTING, IDLE, or
		// TRANSIENT_FAILURE with their errors).
		b.ClientConn.UpdateState(s)
		return
	}
	b.ClientConn.UpdateState(balancer.State{
		ConnectivityState: connectivity.Ready,
		Picker:            newPicker(pickers, weights, pickedKeys, picked, b.ejector),
	})
}

// picker is smooth weighted round-robin over the READY children's pickers.
type picker struct {
	mu      sync.Mutex
	rr      *wrr.Smooth
	pickers []balancer.Picker
	weights []int64          // parallel to pickers
	keys    []string         // parallel to pickers: the endpoints' keys
	stats   []*endpointStats // parallel to pickers; nil when ejection is off
	ejector *ejector
}

func newPicker(pickers []balancer.Picker, weights []int64, keys []string, stats []*endpointStats, e *ejector) *picker {
	rr := wrr.NewSmooth(weights)
	// Start at a random point, so that clients that start together do not
	// all send their first RPCs to the same endpoint.
	for range rand.IntN(len(pickers)) {
		rr.Next()
	}
	return &picker{rr: rr, pickers: pickers, weights: weights, keys: keys, stats: stats, ejector: e}
}

func (p *picker) Pick(info balancer.PickInfo) (balancer.PickResult, error) {
	tried := triedFrom(info.Ctx)
	p.mu.Lock()
	i := p.rr.Next()
	p.mu.Unlock()
	if tried != nil {
		if tried.has(p.keys[i]) {
			// A retry that the round-robin sends back to an endpoint this
			// RPC has tried (with 1:3 weights, the heavy one comes twice
			// in a row): choose among the untried ones, by weight.
			i = p.untried(tried, i)
		}
		tried.add(p.keys[i])
	}
	res, err := p.pickers[i].Pick(info)
	if err == nil && p.stats != nil {
		res = p.ejector.withOutcome(res, p.stats[i])
	}
	return res, err
}

// untried returns a random endpoint, by weight, among those the RPC has not
// tried; fallback when it has tried them all.
func (p *picker) untried(t *tried, fallback int) int {
	var total int64
	for j, w := range p.weights {
		if !t.has(p.keys[j]) {
			total += w
		}
	}
	if total <= 0 {
		return fallback
	}
	r := rand.Int64N(total)
	for j, w := range p.weights {
		if t.has(p.keys[j]) {
			continue
		}
		if r < w {
			return j
		}
		r -= w
	}
	return fallback
}
