// Package gokit is a go-kit sd.Instancer on the kubedisco agent's watch
// stream: the instances are the "ip:port" addresses of one port of a
// Service's ready endpoints, updated on every change the agent reports.
// Use it as any go-kit instancer (wrap it in Ejecting for outlier
// ejection, see NewEjecting), with Retry in place of lb.Retry so that a
// retry goes to another instance:
//
//	instancer := gokit.NewInstancer(nil, "orders.shop", "http", logger)
//	defer instancer.Stop()
//	endpointer := sd.NewEndpointer(instancer, gokit.Track(factory), logger)
//	balancer := lb.NewRoundRobin(endpointer)
//	call := instancer.Retry(3, time.Second, balancer)
//
// go-kit's balancers do not weigh instances, so kubedisco weights are not
// applied here (priority tiers are: the agent lists the preferred tier's
// endpoints first, but go-kit's round robin uses all of them); use kdgrpc
// or kubedisco.Transport where weights matter. Registration is
// Kubernetes' job (the Pods behind the Service): there is no Registrar.
package gokit

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	"github.com/go-kit/log"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
)

// Instancer implements sd.Instancer with the agent's watch stream.
type Instancer struct {
	logger log.Logger
	port   string
	watch  *kubedisco.Watch
	hub

	overrides atomic.Pointer[kubedisco.ServiceResilience]
}

// hub holds an instancer's last event and its subscribers.
type hub struct {
	mu       sync.Mutex
	state    sd.Event
	hasState bool
	subs     []chan<- sd.Event
}

var _ sd.Instancer = (*Instancer)(nil)

// NewInstancer follows service ("orders.shop") on client's agent (nil: the
// agent at KUBEDISCO_ADDR) and publishes the addresses of its port called
// port (empty: the Service's only port).
func NewInstancer(client *kubedisco.Client, service, port string, logger log.Logger) (*Instancer, error) {
	name, err := kubedisco.ParseServiceName(service)
	if err != nil {
		return nil, err
	}
	if client == nil {
		if client, err = kubedisco.DefaultClient(); err != nil {
			return nil, err
		}
	}
	if logger == nil {
		logger = log.NewNopLogger()
	}
	i := &Instancer{logger: logger, port: port}
	i.watch = client.Watch(name.Namespace, name.Name, kubedisco.WatchOptions{OnState: i.onState, OnError: i.onError})
	return i, nil
}

// Instances returns the addresses of svc's port called port.
func Instances(svc *kubedisco.Service, port string) ([]string, error) {
	if !svc.Exists {
		return nil, kubedisco.ErrServiceNotFound
	}
	name, err := svc.ResolvePort(port)
	if err != nil {
		return nil, err
	}
	out := []string{}
	for i := range svc.Endpoints {
		if addr, ok := svc.Endpoints[i].Address(name); ok {
			out = append(out, addr)
		}
	}
	return out, nil
}

func (i *Instancer) onState(svc *kubedisco.Service) {
	i.overrides.Store(svc.Resilience)
	addrs, err := Instances(svc, i.port)
	i.publish(sd.Event{Instances: addrs, Err: err})
}

// onError reports a broken watch only while there is no state yet: after
// that the last state stays valid (the agent restarting does not change
// the endpoints), as in kdgrpc's resolver.
func (i *Instancer) onError(err error) {
	i.mu.Lock()
	has := i.hasState
	i.mu.Unlock()
	if has {
		_ = i.logger.Log("msg", "kubedisco watch broken; keeping the last instances", "err", err)
		return
	}
	i.publish(sd.Event{Err: err})
}

func (i *hub) publish(e sd.Event) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.hasState && e.Err == i.state.Err && slices.Equal(e.Instances, i.state.Instances) {
		return
	}
	i.state, i.hasState = e, e.Err == nil || i.hasState
	for _, ch := range i.subs {
		ch <- copyEvent(e)
	}
}

func copyEvent(e sd.Event) sd.Event {
	return sd.Event{Instances: slices.Clone(e.Instances), Err: e.Err}
}

// Register implements sd.Instancer: ch gets the current state at once (if
// there is one) and every change after.
func (i *hub) Register(ch chan<- sd.Event) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.subs = append(i.subs, ch)
	if i.hasState || i.state.Err != nil {
		ch <- copyEvent(i.state)
	}
}

// Deregister implements sd.Instancer.
func (i *hub) Deregister(ch chan<- sd.Event) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.subs = slices.DeleteFunc(i.subs, func(c chan<- sd.Event) bool { return c == ch })
}

// Overrides returns the Service's resilience annotations
// (kubedisco.io/outlier-*, kubedisco.io/retry-*) as the agent last served
// them; nil when it has none.
func (i *Instancer) Overrides() *kubedisco.ServiceResilience { return i.overrides.Load() }

// Retry is the package's Retry with max replaced by the Service's
// kubedisco.io/retry-max-attempts annotation when it has one.
func (i *Instancer) Retry(max int, timeout time.Duration, b lb.Balancer) endpoint.Endpoint {
	return retryFor(i, max, timeout, b)
}

// Stop ends the watch.
func (i *Instancer) Stop() { i.watch.Stop() }
