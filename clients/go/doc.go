// Package kubedisco is the Go client of the kubedisco agent, the node-local
// service-discovery agent for Kubernetes: live endpoint lists of headless
// Services, with weights and topology tiers, from the agent's local HTTP API.
//
// The agent's address comes from the KUBEDISCO_ADDR environment variable
// (http://127.0.0.1:8053, the sidecar address, when unset); host:port
// without a scheme is accepted too.
//
// Plain helpers, for code that is not gRPC:
//
//	eps, err := kubedisco.Lookup(ctx, "orders.shop")      // the endpoints
//	addr, err := kubedisco.Pick(ctx, "orders.shop", "http") // "10.244.1.11:8080"
//	client := &http.Client{Transport: &kubedisco.Transport{Port: "http"}}
//	resp, err := client.Get("http://orders.shop.svc/v1/orders") // resolved per request
//	resp, err = client.Get("https://example.com/")               // not a Service: sent as it is
//
// [Transport] and [Dialer] take only cluster DNS names with .svc
// (orders.shop.svc, orders.shop.svc.cluster.local) for Services, so they can
// carry all of a program's traffic; [MatchNamespaces] adds the short
// <service>.<namespace> names of chosen namespaces. [Dialer] resolves
// Service names in DialContext for anything that dials. [Client.Watch]
// follows one Service as it changes, across agent restarts.
//
// The agent's errors are [*APIError]s carrying its machine-readable code;
// errors.Is tells them apart: [ErrServiceNotFound], [ErrNoEndpoints],
// [ErrNoSuchPort], [ErrBadRequest] (the same request fails again), and
// [ErrNotSynced], [ErrOverloaded], [ErrUnavailable] (retry later).
//
// For gRPC, import the kdgrpc subpackage: it registers the resolver for
// kubedisco:///<service>.<namespace>:<port-name> targets and the
// kubedisco_weighted balancer.
//
// Service names for Lookup, Pick and gRPC targets are written
// <service>.<namespace>, optionally followed by .svc or
// .svc.<cluster-domain>, as in cluster DNS.
//
// The module is github.com/kubedisco/kubedisco/clients/go; its releases are
// tagged clients/go/vX.Y.Z in the kubedisco repository.
package kubedisco
