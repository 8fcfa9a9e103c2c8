package kubedisco

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/kubedisco/kubedisco/clients/go/internal/wrr"
)

// pick chooses the endpoint for one attempt of a request.
//
// While nothing of the Service is ejected, a first attempt takes the
// agent's pick: its weighted round-robin over the preferred tier, shared
// by the node's clients, so weights hold exactly across them. Otherwise
// (an endpoint ejected, or a retry) the agent's pick cannot be used: it
// knows nothing of ejections, and keeps to the preferred tier even when
// every endpoint there is ejected or tried. The Transport then plans by
// itself with the gRPC balancer's tier rule (wrr.Plan): ejected and tried
// endpoints count as not ready, so a tier that lost half or more of its
// weight spills over to the next by the panic rule, and a tier that lost
// all of it sends everything there.
func (t *Transport) pick(ctx context.Context, client *Client, host string, s *outlierState, tried []string) (string, error) {
	if len(tried) == 0 && !s.anyEjected(time.Now()) {
		return client.Pick(ctx, host, t.Port)
	}
	addr, err := t.pickLocal(ctx, client, host, s, tried)
	if err != nil && ctx.Err() == nil && !errors.Is(err, ErrServiceNotFound) {
		// A Service the local plan cannot handle (one without ports, say):
		// the agent's pick, as without ejection.
		return client.Pick(ctx, host, t.Port)
	}
	return addr, err
}

// pickLocal picks by weight among the Service's endpoints as wrr.Plan
// shares the traffic out, with ejected and tried endpoints not ready. When
// every endpoint is ejected or tried (the bounded share makes that rare:
// the endpoints changed, or all were tried), an untried ejected one is
// better than a tried one, and a tried one better than none.
func (t *Transport) pickLocal(ctx context.Context, client *Client, host string, s *outlierState, tried []string) (string, error) {
	name, err := ParseServiceName(host)
	if err != nil {
		return "", err
	}
	svc, err := client.Service(ctx, name.Namespace, name.Name)
	if err != nil {
		return "", err
	}
	port, err := svc.ResolvePort(t.Port)
	if err != nil {
		return "", err
	}
	return choose(svc, port, s, tried)
}

// choose is pickLocal's choice over the Service's state svc.
func choose(svc *Service, port string, s *outlierState, tried []string) (string, error) {
	var addrs []string
	var cands []wrr.Candidate
	for i := range svc.Endpoints {
		e := &svc.Endpoints[i]
		if addr, ok := e.Address(port); ok {
			addrs = append(addrs, addr)
			cands = append(cands, wrr.Candidate{Weight: e.Weight, Priority: e.Priority})
		}
	}
	if len(addrs) == 0 {
		return "", &APIError{Code: CodeNoEndpoints, Message: "no endpoint has port " + port, kind: ErrNoEndpoints}
	}
	now := time.Now()
	usable := []func(addr string) bool{
		func(addr string) bool { return !slices.Contains(tried, addr) && !s.ejected(addr, now) },
		func(addr string) bool { return !slices.Contains(tried, addr) },
		func(string) bool { return true },
	}
	for _, ok := range usable {
		for i, addr := range addrs {
			cands[i].Ready = ok(addr)
		}
		if i := weightedRandom(wrr.Plan(cands, wrr.DefaultThreshold)); i >= 0 {
			return addrs[i], nil
		}
	}
	return "", &APIError{Code: CodeNoEndpoints, Message: "no usable endpoint", kind: ErrNoEndpoints}
}

// weightedRandom returns an index with probability proportional to its
// weight, or -1 when no weight is positive. Random rather than a smooth
// round-robin: the plan changes with each request's tried endpoints, and
// a sequence over changing weights would not keep them.
func weightedRandom(weights []int64) int {
	var sum int64
	for _, w := range weights {
		sum += max(w, 0)
	}
	if sum == 0 {
		return -1
	}
	x := rand.Int64N(sum)
	for i, w := range weights {
		if x -= max(w, 0); x < 0 {
			return i
		}
	}
	return -1
}
