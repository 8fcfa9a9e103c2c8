package kdgrpc

import (
	"encoding/json"
	"errors"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/serviceconfig"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
)

func TestParseTarget(t *testing.T) {
	good := map[string]Target{
		"kubedisco:///orders.shop:grpc":                 {Service: kubedisco.ServiceName{Namespace: "shop", Name: "orders"}, Port: "grpc"},
		"kubedisco:///orders.shop":                      {Service: kubedisco.ServiceName{Namespace: "shop", Name: "orders"}},
		"kubedisco:///orders.shop.svc.cluster.local:h2": {Service: kubedisco.ServiceName{Namespace: "shop", Name: "orders"}, Port: "h2"},
		"kubedisco://127.0.0.1:8053/orders.shop:grpc":   {Service: kubedisco.ServiceName{Namespace: "shop", Name: "orders"}, Port: "grpc", Agent: "127.0.0.1:8053"},
	}
	for in, want := range good {
		u, err := url.Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ParseTarget(*u)
		if err != nil || got != want {
			t.Errorf("ParseTarget(%s) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, in := range []string{
		"kubedisco:///", "kubedisco:///orders", "kubedisco:///orders.shop:", "kubedisco:///orders.shop:9090",
		"kubedisco:///orders.shop:GRPC", "kubedisco:///Orders.shop:grpc", "kubedisco:///orders.shop:grpc?x=1",
		"dns:///orders.shop:grpc", "kubedisco:///orders.shop:grpc:extra",
	} {
		u, err := url.Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := ParseTarget(*u); err == nil {
			t.Errorf("ParseTarget(%s) = %+v, want an error", in, got)
		}
	}
}

// fakeCC records what a resolver tells gRPC.
type fakeCC struct {
	resolver.ClientConn // unused methods
	mu                  sync.Mutex
	states              []resolver.State
	errs                []error
	configs             []string // what ParseServiceConfig was given
	signal              chan struct{}
}

func newFakeCC() *fakeCC { return &fakeCC{signal: make(chan struct{}, 1000)} }

func (f *fakeCC) UpdateState(s resolver.State) error {
	f.mu.Lock()
	f.states = append(f.states, s)
	f.mu.Unlock()
	f.signal <- struct{}{}
	return nil
}

func (f *fakeCC) ReportError(err error) {
	f.mu.Lock()
	f.errs = append(f.errs, err)
	f.mu.Unlock()
	f.signal <- struct{}{}
}

// ParseServiceConfig records the config; the result carries no Config
// (only gRPC can make one), which is enough to see that one was sent.
func (f *fakeCC) ParseServiceConfig(config string) *serviceconfig.ParseResult {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.configs = append(f.configs, config)
	return &serviceconfig.ParseResult{}
}

func (f *fakeCC) wait(t *testing.T, what string, cond func(states []resolver.State, errs []error) bool) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		f.mu.Lock()
		ok := cond(f.states, f.errs)
		f.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-f.signal:
		case <-deadline:
			t.Fatalf("timed out waiting for %s (states %d, errors %v)", what, len(f.states), f.errs)
		}
	}
}

func (f *fakeCC) counts() (states, errs int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.states), len(f.errs)
}

func (f *fakeCC) last() resolver.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.states[len(f.states)-1]
}

// buildResolver builds the kubedisco resolver for target against fake.
func buildResolver(t *testing.T, fake *agenttest.FakeAgent, target string) (resolver.Resolver, *fakeCC) {
	t.Helper()
	client, err := kubedisco.NewClient(fake.URL)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	cc := newFakeCC()
	b := NewBuilder(WithClient(client), WithWatchOptions(kubedisco.WatchOptions{MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond}))
	r, err := b.Build(resolver.Target{URL: *u}, cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r, cc
}

func addrs(s resolver.State) []string {
	var out []string
	for _, e := range s.Endpoints {
		for _, a := range e.Addresses {
			out = append(out, a.Addr)
		}
	}
	return out
}

func TestResolverTranslatesStates(t *testing.T) {
	fake := agenttest.NewFakeAgent(t)
	_, cc := buildResolver(t, fake, "kubedisco:///orders.shop:grpc")
	conn := fake.Next(5 * time.Second)

	svc := agenttest.ServiceState("shop", "orders", "10.0.0.1:9000", "10.0.0.2:9001")
	svc.Endpoints[0].Weight, svc.Endpoints[0].Priority, svc.Endpoints[0].Zone = 300, 1, "zone-b"
	svc.Endpoints = append(svc.Endpoints, kubedisco.Endpoint{IP: svc.Endpoints[0].IP.Next().Next().Next(),
		Ports: []kubedisco.EndpointPort{{Name: "http", Port: 8080}}, Ready: true, Weight: 100}) // no grpc port
	svc.Ports = append(svc.Ports, kubedisco.ServicePort{Name: "http", Port: 8080})
	conn.SendState(svc)
	cc.wait(t, "the first state", func(s []resolver.State, _ []error) bool { return len(s) == 1 })
	st := cc.last()
	if got := strings.Join(addrs(st), ","); got != "10.0.0.1:9000,10.0.0.2:9001" {
		t.Fatalf("addresses %s", got)
	}
	if len(st.Addresses) != 2 {
		t.Errorf("State.Addresses %v", st.Addresses)
	}
	info, ok := GetEndpointInfo(st.Endpoints[0])
	if !ok || info != (EndpointInfo{Weight: 300, Priority: 1, Zone: "zone-b"}) {
		t.Errorf("endpoint info %+v, %t", info, ok)
	}
	if emptyReason(st) != nil {
		t.Errorf("a non-empty state carries a reason: %v", emptyReason(st))
	}

	// The same endpoints under a new revision (the agent restarted, say):
	// nothing new for gRPC.
	svc.Revision = 42
	conn.SendState(svc)
	// A different weight is news.
	svc.Endpoints[1].Weight = 7
	conn.SendState(svc)
	cc.wait(t, "the weight change", func(s []resolver.State, _ []error) bool { return len(s) == 2 })
	if info, _ := GetEndpointInfo(cc.last().Endpoints[1]); info.Weight != 7 {
		t.Errorf("weight after the change: %d", info.Weight)
	}

	// No endpoints, and no Service: both empty, for different reasons.
	empty := agenttest.ServiceState("shop", "orders")
	conn.SendState(empty)
	cc.wait(t, "the empty state", func(s []resolver.State, _ []error) bool { return len(s) == 3 })
	if st := cc.last(); len(st.Endpoints) != 0 || !errors.Is(emptyReason(st), kubedisco.ErrNoEndpoints) {
		t.Errorf("no endpoints: %d endpoints, reason %v", len(st.Endpoints), emptyReason(st))
	}
	conn.SendState(kubedisco.Service{Namespace: "shop", Name: "orders", Exists: false, Revision: 50})
	cc.wait(t, "the absent state", func(s []resolver.State, _ []error) bool { return len(s) == 4 })
	reason := emptyReason(cc.last())
	if !errors.Is(reason, kubedisco.ErrServiceNotFound) || errors.Is(reason, kubedisco.ErrNoEndpoints) ||
		!strings.Contains(reason.Error(), "does not exist") {
		t.Errorf("absent Service: reason %v", reason)
	}
	// A Service without the port asked for.
	other := agenttest.ServiceState("shop", "orders", "10.0.0.1:9000")
	other.Ports[0].Name, other.Endpoints[0].Ports[0].Name = "web", "web"
	conn.SendState(other)
	cc.wait(t, "the state without the port", func(s []resolver.State, _ []error) bool { return len(s) == 5 })
	if reason := emptyReason(cc.last()); !errors.Is(reason, kubedisco.ErrNoSuchPort) {
		t.Errorf("missing port: reason %v", reason)
	}
	if _, errs := cc.counts(); errs != 0 {
		t.Errorf("resolver errors: %v", cc.errs)
	}
}

func TestResolverSinglePortServiceNeedsNoPortName(t *testing.T) {
	fake := agenttest.NewFakeAgent(t)
	_, cc := buildResolver(t, fake, "kubedisco:///orders.shop")
	fake.Next(5 * time.Second).SendState(agenttest.ServiceState("shop", "orders", "10.0.0.1:9000"))
	cc.wait(t, "the state", func(s []resolver.State, _ []error) bool { return len(s) == 1 })
	if got := addrs(cc.last()); len(got) != 1 || got[0] != "10.0.0.1:9000" {
		t.Errorf("addresses %v", got)
	}
}

func TestResolverKeepsTheLastStateAcrossReconnects(t *testing.T) {
	fake := agenttest.NewFakeAgent(t)
	r, cc := buildResolver(t, fake, "kubedisco:///orders.shop:grpc")
	conn := fake.Next(5 * time.Second)
	first := agenttest.ServiceState("shop", "orders", "10.0.0.1:9000", "10.0.0.2:9000")
	conn.SendState(first)
	cc.wait(t, "the first state", func(s []resolver.State, _ []error) bool { return len(s) == 1 })

	// The agent goes away (end of stream), answers 502 and 503 while it
	// restarts, then comes back with the same endpoints.
	fake.Reject(502, 503)
	conn.End()
	conn = fake.Next(5 * time.Second)
	if n := fake.Requests(); n != 4 {
		t.Fatalf("watch requests %d, want 4", n)
	}
	restarted := first
	restarted.Revision = 1
	conn.SendState(restarted)
	// Garbage makes the resolver drop the connection: still nothing for gRPC.
	conn.Send("{\"type\":\"state\",\"service\":{\"namespace\":\"shop\",\"name\":\"orders\",\"exists\":true,\"endpoints\":[{\"ip\":\"nope\"}]}}\n")
	conn.WaitGone(t, 5*time.Second)
	conn = fake.Next(5 * time.Second)
	if states, errs := cc.counts(); states != 1 || errs != 0 {
		t.Fatalf("after the outage and the garbage: %d states, errors %v; want the first state only", states, cc.errs)
	}
	if got := addrs(cc.last()); len(got) != 2 {
		t.Fatalf("last state lost: %v", got)
	}

	// A real change after all that goes through at once.
	conn.SendState(agenttest.ServiceState("shop", "orders", "10.0.0.3:9000"))
	cc.wait(t, "the change", func(s []resolver.State, _ []error) bool { return len(s) == 2 })
	if got := addrs(cc.last()); len(got) != 1 || got[0] != "10.0.0.3:9000" {
		t.Fatalf("addresses after the change: %v", got)
	}

	// ResolveNow while connected changes nothing.
	r.ResolveNow(resolver.ResolveNowOptions{})
	fake.NoConnWithin(100 * time.Millisecond)
}

func TestResolverReportsErrorsOnlyBeforeTheFirstState(t *testing.T) {
	fake := agenttest.NewFakeAgent(t)
	fake.Reject(503, 503)
	_, cc := buildResolver(t, fake, "kubedisco:///orders.shop:grpc")
	cc.wait(t, "two errors", func(_ []resolver.State, e []error) bool { return len(e) == 2 })
	var apiErr *kubedisco.APIError
	if !errors.As(cc.errs[0], &apiErr) || apiErr.StatusCode != 503 {
		t.Errorf("error %v", cc.errs[0])
	}
	conn := fake.Next(5 * time.Second)
	conn.SendState(agenttest.ServiceState("shop", "orders", "10.0.0.1:9000"))
	cc.wait(t, "the state", func(s []resolver.State, _ []error) bool { return len(s) == 1 })
	fake.Reject(503)
	conn.End()
	fake.Next(5 * time.Second)
	if _, errs := cc.counts(); errs != 2 {
		t.Errorf("errors reported after the first state: %v", cc.errs)
	}
}

func TestResolverUsesTheTargetsAgent(t *testing.T) {
	fake := agenttest.NewFakeAgent(t)
	u, _ := url.Parse("kubedisco://" + strings.TrimPrefix(fake.URL, "http://") + "/orders.shop:grpc")
	cc := newFakeCC()
	// The builder's own client points nowhere useful.
	nowhere, _ := kubedisco.NewClient("127.0.0.1:1")
	r, err := NewBuilder(WithClient(nowhere)).Build(resolver.Target{URL: *u}, cc, resolver.BuildOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	fake.Next(5 * time.Second).SendState(agenttest.ServiceState("shop", "orders", "10.0.0.1:9000"))
	cc.wait(t, "the state", func(s []resolver.State, _ []error) bool { return len(s) == 1 })

	bad, _ := url.Parse("kubedisco:///not-a-service-name")
	if _, err := NewBuilder().Build(resolver.Target{URL: *bad}, cc, resolver.BuildOptions{}); err == nil {
		t.Errorf("Build accepted a malformed target")
	}
}

// With no overrides the resolver's config is ServiceConfig itself, and the
// overrides land in the fields they name.
func TestConfigWithOverrides(t *testing.T) {
	normal := func(s string) any {
		var v any
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		return v
	}
	if got, want := normal(configWithOverrides(nil)), normal(ServiceConfig); !reflect.DeepEqual(got, want) {
		t.Fatalf("no overrides:\n got %v\nwant %v", got, want)
	}
	two, pct, one := uint32(2), uint32(60), uint32(1)
	got := configWithOverrides(&kubedisco.ServiceResilience{
		Outlier: &kubedisco.OutlierOverrides{ConsecutiveFailures: &two, FailurePercentage: &pct, BaseEjectionTime: "1.5s", Interval: "0.5s"},
		Retry:   &kubedisco.RetryOverrides{On: []string{"resource-exhausted", "unavailable"}},
	})
	want := `{"loadBalancingConfig":[{"kubedisco_weighted":{"outlierDetection":{"interval":"0.5s","baseEjectionTime":"1.5s","consecutiveFailures":2,"failurePercentage":{"threshold":60}}}}],` +
		`"methodConfig":[{"name":[{}],"retryPolicy":{"maxAttempts":3,"initialBackoff":"0.005s","maxBackoff":"0.05s","backoffMultiplier":2,"retryableStatusCodes":["RESOURCE_EXHAUSTED","UNAVAILABLE"]}}],` +
		`"retryThrottling":{"maxTokens":100,"tokenRatio":0.2}}`
	if got != want {
		t.Fatalf("overrides:\n got %s\nwant %s", got, want)
	}
	// One attempt: no retry policy at all (gRPC refuses maxAttempts 1).
	got = configWithOverrides(&kubedisco.ServiceResilience{Retry: &kubedisco.RetryOverrides{MaxAttempts: &one}})
	if strings.Contains(got, "retryPolicy") {
		t.Fatalf("retry-max-attempts 1 kept a retry policy: %s", got)
	}
	// Every config the overrides make is one gRPC takes.
	for _, sc := range []string{got, want} {
		r := manual.NewBuilderWithScheme("cfg")
		conn, err := grpc.NewClient(r.Scheme()+":///x", grpc.WithResolvers(r), grpc.WithDefaultServiceConfig(sc),
			grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatalf("gRPC refuses %s: %v", sc, err)
		}
		conn.Close()
	}
}

// A Service's overrides become a service config for gRPC; once one has
// been sent, a Service without overrides gets plain ServiceConfig (gRPC
// would keep the last one otherwise), and nothing new is sent for the same
// state.
func TestResolverSendsTheServiceOverrides(t *testing.T) {
	fake := agenttest.NewFakeAgent(t)
	_, cc := buildResolver(t, fake, "kubedisco:///orders.shop:grpc")
	conn := fake.Next(5 * time.Second)
	svc := agenttest.ServiceState("shop", "orders", "10.0.0.1:9000")
	conn.SendState(svc)
	cc.wait(t, "the first state", func(s []resolver.State, _ []error) bool { return len(s) == 1 })
	if cc.last().ServiceConfig != nil {
		t.Fatalf("a Service without overrides got a service config")
	}
	one := uint32(1)
	tuned := &kubedisco.ServiceResilience{Retry: &kubedisco.RetryOverrides{MaxAttempts: &one}}
	svc.Resilience, svc.Revision = tuned, 2
	conn.SendState(svc)
	cc.wait(t, "the tuned state", func(s []resolver.State, _ []error) bool { return len(s) == 2 })
	svc.Resilience, svc.Revision = nil, 3
	conn.SendState(svc)
	cc.wait(t, "the untuned state", func(s []resolver.State, _ []error) bool { return len(s) == 3 })
	svc.Revision = 4
	conn.SendState(svc) // the same state: nothing for gRPC
	svc.Endpoints[0].Weight = 7
	conn.SendState(svc)
	cc.wait(t, "the reweighted state", func(s []resolver.State, _ []error) bool { return len(s) == 4 })
	cc.mu.Lock()
	defer cc.mu.Unlock()
	want := []string{configWithOverrides(tuned), configWithOverrides(nil), configWithOverrides(nil)}
	if !reflect.DeepEqual(cc.configs, want) {
		t.Fatalf("service configs sent:\n%s\nwant\n%s", strings.Join(cc.configs, "\n"), strings.Join(want, "\n"))
	}
	for i, st := range cc.states[1:] {
		if st.ServiceConfig == nil {
			t.Fatalf("state %d carries no service config", i+2)
		}
	}
}
