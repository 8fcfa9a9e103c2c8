// Package kratos is a Kratos registry.Discovery on the kubedisco agent:
// Kratos's gRPC and HTTP clients with discovery:///<service>.<namespace>
// endpoints find the ready Pods of that Service, as the node's agent
// serves them, and follow every change through the agent's watch stream.
//
//	dis := kratos.New(nil) // the agent at KUBEDISCO_ADDR
//	conn, err := grpc.DialInsecure(ctx,
//		grpc.WithEndpoint("discovery:///orders.shop"),
//		grpc.WithDiscovery(dis))
//
// Each endpoint becomes one instance; its endpoints are scheme://ip:port
// for the Service's named ports whose name is, or starts with, grpc, http
// or https ("grpc-api" gives grpc://...). Metadata carries the endpoint's
// weight (what Kratos's wrr selector reads), zone, node and priority tier.
//
// Unlike Kratos's own Kubernetes registry it needs no RBAC and honours
// readiness. Kubernetes registers instances (the Pods behind the Service):
// Register and Deregister return ErrReadOnly, so that an app that passes
// the Discovery to kratos.Registrar by mistake fails at start with a clear
// message rather than silently registering nothing.
package kratos

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"sync"

	"github.com/go-kratos/kratos/v2/registry"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
)

// Discovery implements registry.Discovery with the agent.
type Discovery struct {
	client *kubedisco.Client
}

var _ registry.Discovery = (*Discovery)(nil)

// New returns a Discovery asking client; nil means the agent at
// KUBEDISCO_ADDR.
func New(client *kubedisco.Client) *Discovery { return &Discovery{client: client} }

// resolve reads serviceName and chooses the agent.
func (d *Discovery) resolve(serviceName string) (kubedisco.ServiceName, *kubedisco.Client, error) {
	name, err := kubedisco.ParseServiceName(serviceName)
	if err != nil {
		return name, nil, err
	}
	if d.client != nil {
		return name, d.client, nil
	}
	client, err := kubedisco.DefaultClient()
	return name, client, err
}

// GetService returns the instances of serviceName ("orders.shop"). A
// Service without ready endpoints gives none and no error; one the agent
// does not serve gives an error wrapping kubedisco.ErrServiceNotFound.
func (d *Discovery) GetService(ctx context.Context, serviceName string) ([]*registry.ServiceInstance, error) {
	name, client, err := d.resolve(serviceName)
	if err != nil {
		return nil, err
	}
	svc, err := client.Service(ctx, name.Namespace, name.Name)
	if err != nil {
		return nil, err
	}
	return Instances(svc), nil
}

// Watch follows serviceName on the agent's watch stream.
func (d *Discovery) Watch(ctx context.Context, serviceName string) (registry.Watcher, error) {
	name, client, err := d.resolve(serviceName)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	w := &watcher{ctx: ctx, cancel: cancel, changed: make(chan struct{}, 1)}
	w.watch = client.Watch(name.Namespace, name.Name, kubedisco.WatchOptions{OnState: w.onState})
	return w, nil
}

// watcher keeps only the latest state: Kratos wants the current list, not
// every step to it.
type watcher struct {
	ctx     context.Context
	cancel  context.CancelFunc
	watch   *kubedisco.Watch
	changed chan struct{}

	mu     sync.Mutex
	latest []*registry.ServiceInstance
	last   string // fingerprint of what Next returned last
	sent   bool
}

func (w *watcher) onState(svc *kubedisco.Service) {
	w.mu.Lock()
	w.latest = Instances(svc)
	w.mu.Unlock()
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// Next returns the instances the first time there is a state, then each
// time they change; it blocks until then, or until the watch's context ends
// or Stop.
func (w *watcher) Next() ([]*registry.ServiceInstance, error) {
	for {
		select {
		case <-w.ctx.Done():
			return nil, w.ctx.Err()
		case <-w.changed:
		}
		w.mu.Lock()
		latest, fp := w.latest, fingerprint(w.latest)
		first := !w.sent
		if first || fp != w.last {
			w.sent, w.last = true, fp
			w.mu.Unlock()
			return latest, nil
		}
		w.mu.Unlock()
	}
}

// Stop ends the watch.
func (w *watcher) Stop() error {
	w.cancel()
	w.watch.Stop()
	return nil
}

func fingerprint(ins []*registry.ServiceInstance) string {
	var b strings.Builder
	for _, i := range ins {
		b.WriteString(i.ID + " " + strings.Join(i.Endpoints, ",") + " " + i.Metadata["weight"] + " " + i.Metadata["priority"] + ";")
	}
	return b.String()
}

// schemeOf maps a Service port name to a Kratos endpoint scheme.
func schemeOf(port string) string {
	for _, s := range []string{"grpc", "https", "http"} {
		if port == s || strings.HasPrefix(port, s+"-") {
			return s
		}
	}
	return ""
}

// Instances turns a Service state into Kratos instances, one per endpoint.
func Instances(svc *kubedisco.Service) []*registry.ServiceInstance {
	out := []*registry.ServiceInstance{}
	for i := range svc.Endpoints {
		e := &svc.Endpoints[i]
		ins := &registry.ServiceInstance{
			ID:   e.IP.String(),
			Name: svc.Name + "." + svc.Namespace,
			Metadata: map[string]string{
				"weight":   strconv.FormatUint(uint64(e.Weight), 10),
				"priority": strconv.FormatUint(uint64(e.Priority), 10),
				"zone":     e.Zone,
				"node":     e.Node,
			},
		}
		if e.TargetRef != nil && e.TargetRef.Name != "" {
			ins.ID = e.TargetRef.Name
		}
		for _, p := range e.Ports {
			if scheme := schemeOf(p.Name); scheme != "" {
				ins.Endpoints = append(ins.Endpoints, scheme+"://"+net.JoinHostPort(e.IP.String(), strconv.Itoa(int(p.Port))))
			}
		}
		if len(ins.Endpoints) > 0 {
			out = append(out, ins)
		}
	}
	return out
}

// Register returns ErrReadOnly: Kubernetes registers instances.
func (d *Discovery) Register(context.Context, *registry.ServiceInstance) error { return ErrReadOnly }

// Deregister returns ErrReadOnly: Kubernetes registers instances.
func (d *Discovery) Deregister(context.Context, *registry.ServiceInstance) error { return ErrReadOnly }

// ErrReadOnly is what Register and Deregister return.
var ErrReadOnly = errors.New("kubedisco: instances are registered by Kubernetes (the Pods behind the Service); there is nothing to register")
