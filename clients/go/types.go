package kubedisco

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
)

// Service is one Service as the agent serves it (GET /v1/services/{ns}/{name}
// and each state of a watch stream).
type Service struct {
	// Namespace of the Service.
	Namespace string `json:"namespace"`
	// Name of the Service.
	Name string `json:"name"`
	// Exists is false when the agent does not serve the Service: there is
	// no such Service, or it is a ClusterIP Service that is not exposed.
	Exists bool `json:"exists"`
	// Revision changes exactly when what the agent serves for the Service
	// changes. It is not comparable across agent restarts.
	Revision uint64 `json:"revision"`
	// Headless is true for Services with clusterIP None.
	Headless bool `json:"headless"`
	// Ports are the ports of the Service spec.
	Ports []ServicePort `json:"ports"`
	// Endpoints are the endpoints to use, ordered by address: the ready
	// ones, or the serving-and-terminating ones when none is ready.
	Endpoints []Endpoint `json:"endpoints"`
	// TerminatingFallback is true when no endpoint is ready and terminating
	// (still serving) endpoints are served instead.
	TerminatingFallback bool `json:"terminatingFallback"`
	// Stale is true while the agent cannot reach its source (the state is
	// the last one it knew).
	Stale bool `json:"stale"`
	// Resilience holds the Service's outlier-ejection and retry overrides
	// (its kubedisco.io/outlier-* and kubedisco.io/retry-* annotations,
	// validated by the agent); nil when it has none. kdgrpc's resolver,
	// Transport and the go-kit adapter apply them over the client's own
	// settings (Resilience.WithOverrides).
	Resilience *ServiceResilience `json:"resilience,omitempty"`
}

// ServiceResilience is a Service's resilience overrides. A nil field, or
// a nil pointer inside one, leaves the client's setting as it is.
type ServiceResilience struct {
	Outlier *OutlierOverrides `json:"outlier,omitempty"`
	Retry   *RetryOverrides   `json:"retry,omitempty"`
}

// OutlierOverrides are the kubedisco.io/outlier-* annotations. Durations
// are decimal seconds ("30s", "0.5s").
type OutlierOverrides struct {
	// ConsecutiveFailures: outlier-consecutive-failures (0: rule off).
	ConsecutiveFailures *uint32 `json:"consecutiveFailures,omitempty"`
	// FailurePercentage: outlier-failure-percentage, 0-100 (0: rule off).
	FailurePercentage *uint32 `json:"failurePercentage,omitempty"`
	// Interval: outlier-interval, the failure-percentage rule's.
	Interval string `json:"interval,omitempty"`
	// BaseEjectionTime: outlier-base-ejection-time.
	BaseEjectionTime string `json:"baseEjectionTime,omitempty"`
	// MaxEjectionTime: outlier-max-ejection-time.
	MaxEjectionTime string `json:"maxEjectionTime,omitempty"`
	// MaxEjectionPercent: outlier-max-ejection-percent, 0-100.
	MaxEjectionPercent *uint32 `json:"maxEjectionPercent,omitempty"`
}

// RetryOverrides are the kubedisco.io/retry-* annotations.
type RetryOverrides struct {
	// MaxAttempts: retry-max-attempts, 1 (no retries) to 5.
	MaxAttempts *uint32 `json:"maxAttempts,omitempty"`
	// On: retry-on, gRPC status codes as Envoy names them
	// ("unavailable", "resource-exhausted"; gRPC only).
	On []string `json:"on,omitempty"`
}

// ServicePort is a port of a Service spec.
type ServicePort struct {
	// Name of the port; empty for the single unnamed port a Service may have.
	Name string `json:"name"`
	// Port is the Service port number.
	Port uint16 `json:"port"`
	// Protocol is TCP, UDP or SCTP.
	Protocol string `json:"protocol"`
	// TargetPort is the target port as written in the spec (a number or a
	// Pod port name); empty when the spec has none.
	TargetPort string `json:"targetPort,omitempty"`
}

// Endpoint is one endpoint (one address) of a Service.
type Endpoint struct {
	// IP is the endpoint's address.
	IP netip.Addr `json:"ip"`
	// Ports are the endpoint's ports, by name.
	Ports []EndpointPort `json:"ports"`
	// Ready is the EndpointSlice ready condition.
	Ready bool `json:"ready"`
	// Serving is the EndpointSlice serving condition.
	Serving bool `json:"serving"`
	// Terminating is the EndpointSlice terminating condition.
	Terminating bool `json:"terminating"`
	// Zone is the endpoint's topology zone, if known.
	Zone string `json:"zone"`
	// Node is the name of the endpoint's node, if known.
	Node string `json:"node"`
	// Hostname is the endpoint's hostname, if set.
	Hostname string `json:"hostname"`
	// TargetRef is the object behind the endpoint (normally a Pod).
	TargetRef *TargetRef `json:"targetRef"`
	// Weight is the endpoint's relative weight (default 100, 0 = drain).
	Weight uint32 `json:"weight"`
	// Priority is the endpoint's topology tier: 0 is preferred, higher
	// numbers are fallbacks.
	Priority uint32 `json:"priority"`
}

// EndpointPort is a named port of an endpoint.
type EndpointPort struct {
	// Name of the port (empty for an unnamed port).
	Name string `json:"name"`
	// Port is the port number on the endpoint.
	Port uint16 `json:"port"`
	// Protocol is TCP, UDP or SCTP.
	Protocol string `json:"protocol"`
}

// TargetRef refers to the object behind an endpoint.
type TargetRef struct {
	// Kind of the object, e.g. Pod.
	Kind string `json:"kind"`
	// Namespace of the object, if set.
	Namespace string `json:"namespace,omitempty"`
	// Name of the object.
	Name string `json:"name"`
}

// Port returns the endpoint's port called name.
func (e *Endpoint) Port(name string) (EndpointPort, bool) {
	for _, p := range e.Ports {
		if p.Name == name {
			return p, true
		}
	}
	return EndpointPort{}, false
}

// Address returns "ip:port" (brackets around IPv6) for the endpoint's port
// called portName, ready to dial.
func (e *Endpoint) Address(portName string) (string, bool) {
	p, ok := e.Port(portName)
	if !ok {
		return "", false
	}
	return net.JoinHostPort(e.IP.String(), strconv.Itoa(int(p.Port))), true
}

// PortNames returns the port names of the Service spec and its endpoints,
// sorted and without repeats.
func (s *Service) PortNames() []string {
	var names []string
	for _, p := range s.Ports {
		names = append(names, p.Name)
	}
	for i := range s.Endpoints {
		for _, p := range s.Endpoints[i].Ports {
			names = append(names, p.Name)
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// ResolvePort chooses the port a client means, by the agent's rule: the
// port called name; or, when name is empty, the Service's only port. The
// error wraps [ErrNoSuchPort].
func (s *Service) ResolvePort(name string) (string, error) {
	names := s.PortNames()
	if name != "" {
		if slices.Contains(names, name) {
			return name, nil
		}
		return "", fmt.Errorf("kubedisco: service %s/%s has no port named %q (ports: %s): %w",
			s.Namespace, s.Name, name, describePorts(names), ErrNoSuchPort)
	}
	switch len(names) {
	case 1:
		return names[0], nil
	case 0:
		return "", fmt.Errorf("kubedisco: service %s/%s has no ports: %w", s.Namespace, s.Name, ErrNoSuchPort)
	default:
		return "", fmt.Errorf("kubedisco: service %s/%s has several ports; name one (%s): %w",
			s.Namespace, s.Name, describePorts(names), ErrNoSuchPort)
	}
}

func describePorts(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	out := make([]string, len(names))
	for i, n := range names {
		if n == "" {
			n = `"" (unnamed)`
		}
		out[i] = n
	}
	return strings.Join(out, ", ")
}

// validate checks what JSON decoding does not: the state is for the
// Service asked for and every endpoint is usable.
func (s *Service) validate(namespace, name string) error {
	if s.Namespace != namespace || s.Name != name {
		return fmt.Errorf("state is for %s/%s, not %s/%s", s.Namespace, s.Name, namespace, name)
	}
	for i := range s.Endpoints {
		e := &s.Endpoints[i]
		if !e.IP.IsValid() {
			return fmt.Errorf("endpoint %d has no valid ip", i)
		}
		for _, p := range e.Ports {
			if p.Port == 0 {
				return fmt.Errorf("endpoint %s: port %q is 0", e.IP, p.Name)
			}
		}
	}
	if !s.Exists && len(s.Endpoints) > 0 {
		return fmt.Errorf("service marked as not existing has %d endpoints", len(s.Endpoints))
	}
	return nil
}
