// Package kdgrpc plugs kubedisco into gRPC-Go. Importing it registers:
//
//   - a resolver for targets kubedisco:///<service>.<namespace>:<port-name>,
//     fed by the local agent's watch stream (see NewBuilder);
//   - the kubedisco_weighted balancer: smooth weighted round-robin over
//     READY connections, by endpoint weight and priority tier.
//
// Use them together:
//
//	conn, err := grpc.NewClient("kubedisco:///orders.shop:grpc",
//		grpc.WithDefaultServiceConfig(kdgrpc.ServiceConfig),
//		grpc.WithTransportCredentials(insecure.NewCredentials()))
//
// Without the service config gRPC uses pick_first over the endpoints.
//
// A Service with resilience annotations (kubedisco.io/outlier-*,
// kubedisco.io/retry-*) gets a service config from the resolver instead:
// ServiceConfig with the annotations applied, which gRPC uses in place of
// the channel's default (grpc.WithDisableServiceConfig() opts a channel
// out).
//
// The agent's address is KUBEDISCO_ADDR (http://127.0.0.1:8053 when unset),
// or the target's authority: kubedisco://127.0.0.1:8053/orders.shop:grpc.
// The port name may be left out when the Service has a single port.
package kdgrpc

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"google.golang.org/grpc/attributes"
	"google.golang.org/grpc/balancer"
	"google.golang.org/grpc/grpclog"
	"google.golang.org/grpc/resolver"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
)

// Scheme is the target scheme of the resolver.
const Scheme = "kubedisco"

var logger = grpclog.Component("kubedisco")

func init() {
	resolver.Register(NewBuilder())
	balancer.Register(balancerBuilder{})
}

// EndpointInfo is what the resolver attaches to each endpoint it hands to
// gRPC, and what the kubedisco_weighted balancer reads.
type EndpointInfo struct {
	// Weight is the endpoint's relative weight (0 = drain).
	Weight uint32
	// Priority is the endpoint's tier: 0 is preferred, higher is fallback.
	Priority uint32
	// Zone is the endpoint's zone, if known.
	Zone string
	// Node is the endpoint's node, if known.
	Node string
}

type infoKey struct{}

// SetEndpointInfo returns ep carrying info, for resolvers other than
// kubedisco's that want to feed the kubedisco_weighted balancer.
func SetEndpointInfo(ep resolver.Endpoint, info EndpointInfo) resolver.Endpoint {
	ep.Attributes = ep.Attributes.WithValue(infoKey{}, info)
	return ep
}

// GetEndpointInfo returns the EndpointInfo ep carries, if any. The
// balancer treats an endpoint without one as weight 100, priority 0.
func GetEndpointInfo(ep resolver.Endpoint) (EndpointInfo, bool) {
	info, ok := ep.Attributes.Value(infoKey{}).(EndpointInfo)
	return info, ok
}

type reasonKey struct{}

// emptyReason returns why a resolver state has no endpoints, when the
// kubedisco resolver made it.
func emptyReason(s resolver.State) error {
	err, _ := s.Attributes.Value(reasonKey{}).(error)
	return err
}

// Target is a parsed kubedisco target.
type Target struct {
	// Service is the Service to resolve.
	Service kubedisco.ServiceName
	// Port is the name of the Service port; empty for the Service's only
	// port.
	Port string
	// Agent is the agent address from the target's authority, if any.
	Agent string
}

// ParseTarget reads a kubedisco target URL: kubedisco:///<service>.<namespace>[:<port-name>],
// optionally with the agent's address as authority.
func ParseTarget(u url.URL) (Target, error) {
	if u.Scheme != "" && u.Scheme != Scheme {
		return Target{}, fmt.Errorf("kubedisco: target %q: scheme is not %s", u.String(), Scheme)
	}
	endpoint := strings.TrimPrefix(u.Path, "/")
	if endpoint == "" {
		endpoint = u.Opaque
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return Target{}, fmt.Errorf("kubedisco: target %q: query and fragment are not supported", u.String())
	}
	name, port, hasPort := strings.Cut(endpoint, ":")
	svc, err := kubedisco.ParseServiceName(name)
	if err != nil {
		return Target{}, fmt.Errorf("%w (target %q, want kubedisco:///<service>.<namespace>:<port-name>)", err, u.String())
	}
	if hasPort {
		if _, err := strconv.Atoi(port); err == nil {
			return Target{}, fmt.Errorf("kubedisco: target %q: the port must be a Service port name, not a number", u.String())
		}
		if !validPortName(port) {
			return Target{}, fmt.Errorf("kubedisco: target %q: invalid port name %q", u.String(), port)
		}
	}
	return Target{Service: svc, Port: port, Agent: u.Host}, nil
}

func validPortName(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// BuilderOption configures NewBuilder.
type BuilderOption func(*builder)

// WithClient makes the resolver ask c (not KUBEDISCO_ADDR's agent), unless
// a target names its agent.
func WithClient(c *kubedisco.Client) BuilderOption { return func(b *builder) { b.client = c } }

// WithWatchOptions sets the reconnect backoff and heartbeat timeout of the
// resolver's watch streams (the callbacks in o are ignored).
func WithWatchOptions(o kubedisco.WatchOptions) BuilderOption {
	return func(b *builder) { b.watch = o }
}

// NewBuilder returns a resolver builder for the kubedisco scheme. The one
// registered by this package uses KUBEDISCO_ADDR; pass another to
// grpc.WithResolvers to change that for one channel.
//
// The resolver keeps the agent's watch stream for the target's Service
// open and pushes every new state to gRPC at once. When the stream breaks
// (the agent restarts, say) it keeps the last state and reconnects with
// jittered backoff; the connections to the backends are not touched. A
// Service the agent does not serve and one with no usable endpoint both
// give an empty endpoint list, with different errors for RPCs (which wrap
// kubedisco.ErrServiceNotFound or kubedisco.ErrNoEndpoints) when the
// kubedisco_weighted balancer is used. Until the first state arrives,
// failures to reach the agent are reported to gRPC as resolver errors.
func NewBuilder(opts ...BuilderOption) resolver.Builder {
	b := &builder{}
	for _, o := range opts {
		o(b)
	}
	return b
}

type builder struct {
	client *kubedisco.Client
	watch  kubedisco.WatchOptions
}

func (b *builder) Scheme() string { return Scheme }

func (b *builder) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	t, err := ParseTarget(target.URL)
	if err != nil {
		return nil, err
	}
	client := b.client
	switch {
	case t.Agent != "":
		client, err = kubedisco.NewClient(t.Agent)
	case client == nil:
		client, err = kubedisco.DefaultClient()
	}
	if err != nil {
		return nil, err
	}
	r := &kdResolver{cc: cc, target: t}
	opts := b.watch
	opts.OnState = r.onState
	opts.OnError = r.onError
	r.watch = client.Watch(t.Service.Namespace, t.Service.Name, opts)
	return r, nil
}

type kdResolver struct {
	cc     resolver.ClientConn
	target Target
	watch  *kubedisco.Watch

	// Only touched from the watch's goroutine.
	pushed bool
	last   string
	// sentConfig: a service config was pushed (see configWithOverrides).
	sentConfig bool
}

func (r *kdResolver) ResolveNow(resolver.ResolveNowOptions) { r.watch.RetryNow() }

func (r *kdResolver) Close() { r.watch.Stop() }

func (r *kdResolver) onState(svc *kubedisco.Service) {
	state, fingerprint := r.buildState(svc)
	// The Service's overrides as a service config; an absent or empty
	// Service leaves gRPC's config as it is.
	var config string
	if svc.Exists && (svc.Resilience != nil || r.sentConfig) {
		config = configWithOverrides(svc.Resilience)
		fingerprint += "\nconfig:" + config
	}
	if r.pushed && fingerprint == r.last {
		return
	}
	r.pushed, r.last = true, fingerprint
	if config != "" {
		if parsed := r.cc.ParseServiceConfig(config); parsed != nil && parsed.Err == nil {
			state.ServiceConfig, r.sentConfig = parsed, true
		} else if parsed != nil {
			// The agent validated the annotations, so this is a bug, not
			// bad input: say so, and keep the channel's config.
			logger.Warningf("kubedisco: %s: ignoring the Service's resilience annotations: %v", r.target.Service, parsed.Err)
		}
	}
	if err := r.cc.UpdateState(state); err != nil {
		logger.Infof("kubedisco: %s: gRPC did not accept the state: %v", r.target.Service, err)
	}
}

func (r *kdResolver) onError(err error) {
	if !r.pushed {
		r.cc.ReportError(err)
		return
	}
	var malformed *kubedisco.MalformedError
	if errors.As(err, &malformed) {
		logger.Warningf("%v; keeping the last state and reconnecting", err)
		return
	}
	logger.Infof("%v; keeping the last state and reconnecting", err)
}

// buildState turns a Service state into gRPC's, with a fingerprint that
// changes exactly when what gRPC sees does.
func (r *kdResolver) buildState(svc *kubedisco.Service) (resolver.State, string) {
	name := svc.Namespace + "/" + svc.Name
	if !svc.Exists {
		err := fmt.Errorf("kubedisco: service %s does not exist (or is a ClusterIP Service without kubedisco.io/expose): %w", name, kubedisco.ErrServiceNotFound)
		return emptyState(err), "absent"
	}
	port, err := svc.ResolvePort(r.target.Port)
	if err != nil {
		return emptyState(err), "port:" + err.Error()
	}
	var state resolver.State
	var fp strings.Builder
	for i := range svc.Endpoints {
		e := &svc.Endpoints[i]
		addr, ok := e.Address(port)
		if !ok {
			continue
		}
		info := EndpointInfo{Weight: e.Weight, Priority: e.Priority, Zone: e.Zone, Node: e.Node}
		ep := SetEndpointInfo(resolver.Endpoint{Addresses: []resolver.Address{{Addr: addr}}}, info)
		state.Endpoints = append(state.Endpoints, ep)
		state.Addresses = append(state.Addresses, resolver.Address{Addr: addr})
		fmt.Fprintf(&fp, "%s w%d p%d %s %s;", addr, info.Weight, info.Priority, info.Zone, info.Node)
	}
	if len(state.Endpoints) == 0 {
		err := fmt.Errorf("kubedisco: service %s has no usable endpoints for port %q: %w", name, port, kubedisco.ErrNoEndpoints)
		return emptyState(err), "empty:" + port
	}
	return state, fp.String()
}

func emptyState(reason error) resolver.State {
	return resolver.State{Attributes: attributes.New(reasonKey{}, reason)}
}
