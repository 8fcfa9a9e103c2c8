package kubedisco

import (
	"fmt"
	"net/netip"
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

// IsServiceHost reports whether host (a host name, without port) names a
// Service in the form ParseServiceName reads. IP addresses and names of any
// other shape (one label, or three or more without "svc" third) are not.
// Note that every valid two-label name is taken for a Service: "orders.shop"
// and "example.com" alike.
func IsServiceHost(host string) bool {
	if _, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil {
		return false
	}
	_, err := ParseServiceName(host)
	return err == nil
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
