package kubedisco

import (
	"fmt"
	"strings"
)

// ServiceName names one Service.
type ServiceName struct {
	// Namespace of the Service.
	Namespace string
	// Name of the Service.
	Name string
}

// String returns "<name>.<namespace>", the form ParseServiceName reads.
func (n ServiceName) String() string { return n.Name + "." + n.Namespace }

// ParseServiceName reads "<service>.<namespace>", optionally followed by
// ".svc" or ".svc.<cluster-domain>" (and a final dot), as cluster DNS
// names Services. Both parts must be DNS labels.
func ParseServiceName(s string) (ServiceName, error) {
	labels := strings.Split(strings.TrimSuffix(s, "."), ".")
	if len(labels) < 2 || (len(labels) > 2 && labels[2] != "svc") {
		return ServiceName{}, fmt.Errorf("kubedisco: %q is not a Service name: want <service>.<namespace>[.svc[.<cluster-domain>]]", s)
	}
	for i, what := range []string{"service name", "namespace"} {
		if !isDNSLabel(labels[i]) {
			return ServiceName{}, fmt.Errorf("kubedisco: invalid %s %q in %q: want a DNS label (lowercase letters, digits and '-', at most 63)", what, labels[i], s)
		}
	}
	return ServiceName{Namespace: labels[1], Name: labels[0]}, nil
}

// IsServiceHost reports whether host (a host name, without port) is a
// cluster DNS name of a Service: <service>.<namespace>.svc, optionally
// followed by .<cluster-domain> (and a final dot). It is what Transport and
// Dialer take for Services by default. Two-label names ("orders.shop") are
// not: they cannot be told from ordinary hosts such as "example.com"; take
// them with MatchNamespaces. IP addresses never are (none has "svc" as its
// third label).
func IsServiceHost(host string) bool {
	labels := strings.Split(strings.TrimSuffix(host, "."), ".")
	if len(labels) < 3 {
		return false
	}
	_, err := ParseServiceName(host)
	return err == nil
}

// MatchNamespaces returns a matcher for Transport.Match and Dialer.Match
// that takes what IsServiceHost takes and, in addition, the short names
// <service>.<namespace> of Services in the given namespaces ("orders.shop"
// for MatchNamespaces("shop")). Other two-label names ("example.com") stay
// ordinary hosts.
func MatchNamespaces(namespaces ...string) func(host string) bool {
	listed := make(map[string]bool, len(namespaces))
	for _, ns := range namespaces {
		listed[ns] = true
	}
	return func(host string) bool {
		if IsServiceHost(host) {
			return true
		}
		name, err := ParseServiceName(host)
		return err == nil && listed[name.Namespace]
	}
}

func isDNSLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}
