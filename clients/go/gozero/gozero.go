// Package gozero plugs kubedisco into go-zero's zrpc clients: importing it
// registers the kubedisco:/// resolver and the kubedisco_weighted balancer
// (through kdgrpc), and ClientOptions makes a zrpc client use them with
// outlier ejection and retries on another endpoint.
//
//	client := zrpc.MustNewClient(zrpc.RpcClientConf{
//		Target:   gozero.Target("orders.shop", "grpc"), // kubedisco:///orders.shop:grpc
//		NonBlock: true,
//	}, gozero.ClientOptions()...)
//
// It replaces go-zero's k8s:// resolver, which ignores the endpoints'
// readiness, replaces the whole list by whichever EndpointSlice changed
// last, and then keeps a random subset: the agent serves the ready
// endpoints of all of a Service's slices, with their weights and tiers.
//
// Registration is Kubernetes' job (the Pods behind the Service): there is
// nothing to register with, and a zrpc server needs no Etcd section.
package gozero

import (
	"github.com/zeromicro/go-zero/zrpc"

	"github.com/kubedisco/kubedisco/clients/go/kdgrpc"
)

// Target returns the zrpc target of a Service's port:
// kubedisco:///<service>.<namespace>:<port-name> (port may be empty for a
// Service with a single port).
func Target(service, port string) string {
	if port == "" {
		return kdgrpc.Scheme + ":///" + service
	}
	return kdgrpc.Scheme + ":///" + service + ":" + port
}

// ClientOptions are the zrpc options for kubedisco targets: kdgrpc's
// ServiceConfig (which takes the place of go-zero's p2c, since options are
// applied after it) and the interceptors that send retries elsewhere.
func ClientOptions() []zrpc.ClientOption {
	var out []zrpc.ClientOption
	for _, o := range kdgrpc.DialOptions() {
		out = append(out, zrpc.WithDialOption(o))
	}
	return out
}
