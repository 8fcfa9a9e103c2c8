package kdgrpc

import (
	"context"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"
	"google.golang.org/grpc/status"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
)

// These tests drive the balancer with real grpc-go servers on loopback and
// gRPC's manual resolver, so that every endpoint state is chosen by the
// test (no agent involved).

type ep struct {
	addr     string
	weight   uint32
	priority uint32
}

func manualState(eps ...ep) resolver.State {
	var s resolver.State
	for _, e := range eps {
		s.Endpoints = append(s.Endpoints, SetEndpointInfo(
			resolver.Endpoint{Addresses: []resolver.Address{{Addr: e.addr}}},
			EndpointInfo{Weight: e.weight, Priority: e.priority}))
	}
	return s
}

func manualConn(t *testing.T, initial resolver.State, serviceConfig string) (*grpc.ClientConn, *manual.Resolver) {
	t.Helper()
	r := manual.NewBuilderWithScheme("kdtest")
	r.InitialState(initial)
	conn := dial(t, r.Scheme()+":///test", grpc.WithResolvers(r), grpc.WithDefaultServiceConfig(serviceConfig))
	conn.Connect()
	return conn, r
}

func share(counts map[string]int, addr string, total int) float64 {
	return float64(counts[addr]) / float64(total)
}

func TestBalancerHonoursWeights(t *testing.T) {
	a, b, c := startBackend(t, "127.0.0.1"), startBackend(t, "127.0.0.1"), startBackend(t, "127.0.0.1")
	conn, r := manualConn(t, manualState(ep{a.Addr, 1, 0}, ep{b.Addr, 3, 0}, ep{c.Addr, 0, 0}), ServiceConfig)
	waitServed(t, conn, 10*time.Second, a.Addr, b.Addr)

	const n = 4000
	counts, failures, err := rpcs(t, conn, n, 4)
	if failures != 0 {
		t.Fatalf("%d RPCs failed: %v", failures, err)
	}
	// Smooth WRR with everything READY is exact: 1000 / 3000 / 0.
	if counts[a.Addr] != 1000 || counts[b.Addr] != 3000 || counts[c.Addr] != 0 {
		t.Fatalf("counts %v, want 1000/3000/0 (weights 1:3:0)", counts)
	}

	// New weights apply at once, on the same connections.
	r.UpdateState(manualState(ep{a.Addr, 1, 0}, ep{b.Addr, 1, 0}, ep{c.Addr, 2, 0}))
	waitServed(t, conn, 10*time.Second, c.Addr)
	counts, failures, _ = rpcs(t, conn, n, 4)
	if failures != 0 || math.Abs(share(counts, c.Addr, n)-0.5) > 0.01 || math.Abs(share(counts, a.Addr, n)-0.25) > 0.01 {
		t.Fatalf("after reweighting to 1:1:2: counts %v, %d failures", counts, failures)
	}

	// Only drained endpoints left: they are the last resort.
	r.UpdateState(manualState(ep{c.Addr, 0, 0}))
	waitServed(t, conn, 10*time.Second, c.Addr)
	counts, failures, _ = rpcs(t, conn, 100, 2)
	if failures != 0 || counts[c.Addr] != 100 {
		t.Fatalf("drained only: counts %v, %d failures", counts, failures)
	}
}

func TestBalancerTiersAndSpillOver(t *testing.T) {
	near, far := startBackend(t, "127.0.0.1"), startBackend(t, "127.0.0.1")
	dead := []string{deadAddr(t, "127.0.0.1"), deadAddr(t, "127.0.0.1"), deadAddr(t, "127.0.0.1")}

	// A healthy preferred tier keeps all traffic.
	conn, r := manualConn(t, manualState(ep{near.Addr, 100, 0}, ep{far.Addr, 100, 1}), ServiceConfig)
	waitServed(t, conn, 10*time.Second, near.Addr)
	counts, failures, _ := rpcs(t, conn, 1000, 4)
	if failures != 0 || counts[near.Addr] != 1000 {
		t.Fatalf("healthy tier 0: counts %v, %d failures", counts, failures)
	}

	// Tier 0 with only a quarter of its weight READY (h = 0.25/0.5): half
	// the traffic spills to tier 1.
	quarter := manualState(ep{near.Addr, 100, 0}, ep{dead[0], 100, 0}, ep{dead[1], 100, 0}, ep{dead[2], 100, 0}, ep{far.Addr, 100, 1})
	r.UpdateState(quarter)
	waitServed(t, conn, 10*time.Second, far.Addr)
	const n = 4000
	counts, failures, _ = rpcs(t, conn, n, 4)
	if failures != 0 || math.Abs(share(counts, near.Addr, n)-0.5) > 0.02 || math.Abs(share(counts, far.Addr, n)-0.5) > 0.02 {
		t.Fatalf("a quarter READY: counts %v, %d failures; want about 50/50", counts, failures)
	}

	// With panicThreshold 0 the same state is strict failover: tier 0 keeps
	// everything while anything in it is READY.
	strict, _ := manualConn(t, quarter, `{"loadBalancingConfig":[{"kubedisco_weighted":{"panicThreshold":0}}]}`)
	waitServed(t, strict, 10*time.Second, near.Addr)
	counts, failures, _ = rpcs(t, strict, 1000, 4)
	if failures != 0 || counts[near.Addr] != 1000 {
		t.Fatalf("panicThreshold 0: counts %v, %d failures", counts, failures)
	}

	// The threshold is a fraction, as the agent's --panic-threshold: at
	// 0.25 a quarter READY is healthy (all traffic stays), at 1 only a
	// fully READY tier is (h = 0.25: a quarter stays, three quarters spill).
	for _, c := range []struct {
		threshold string
		nearShare float64
	}{{"0.25", 1}, {"1", 0.25}} {
		cfg := `{"loadBalancingConfig":[{"kubedisco_weighted":{"panicThreshold":` + c.threshold + `}}]}`
		tuned, _ := manualConn(t, quarter, cfg)
		waitServed(t, tuned, 10*time.Second, near.Addr)
		if c.nearShare < 1 {
			waitServed(t, tuned, 10*time.Second, far.Addr)
		}
		counts, failures, _ = rpcs(t, tuned, n, 4)
		if failures != 0 || math.Abs(share(counts, near.Addr, n)-c.nearShare) > 0.02 {
			t.Fatalf("panicThreshold %s, a quarter READY: counts %v, %d failures; want %.0f%% to tier 0",
				c.threshold, counts, failures, 100*c.nearShare)
		}
	}

	// The preferred tier's server dies: everything spills over.
	near.srv.Stop()
	waitServed(t, conn, 10*time.Second, far.Addr)
	if !rpcsAllTo(t, conn, far.Addr, 10*time.Second) {
		t.Fatalf("tier 0 down: traffic did not move to tier 1 entirely")
	}
}

// rpcsAllTo waits until 500 RPCs in a row are served by addr.
func rpcsAllTo(t *testing.T, conn *grpc.ClientConn, addr string, timeout time.Duration) bool {
	t.Helper()
	hc := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(timeout)
	run := 0
	for time.Now().Before(deadline) {
		got, err := call(context.Background(), hc)
		if err == nil && got == addr {
			run++
			if run == 500 {
				return true
			}
		} else {
			run = 0
		}
	}
	return false
}

func TestBalancerSaysWhyThereAreNoEndpoints(t *testing.T) {
	b := startBackend(t, "127.0.0.1")
	notFound := fmt.Errorf("kubedisco: service shop/orders does not exist: %w", kubedisco.ErrServiceNotFound)
	conn, r := manualConn(t, emptyState(notFound), ServiceConfig)
	hc := healthpb.NewHealthClient(conn)

	_, err := call(context.Background(), hc)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("RPC to a Service that does not exist: %v", err)
	}
	noEndpoints := fmt.Errorf("kubedisco: service shop/orders has no usable endpoints: %w", kubedisco.ErrNoEndpoints)
	r.UpdateState(emptyState(noEndpoints))
	_, err = call(context.Background(), hc)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "no usable endpoints") {
		t.Fatalf("RPC to a Service without endpoints: %v", err)
	}

	// A wait-for-ready RPC waits for endpoints instead of failing.
	done := make(chan error, 1)
	go func() {
		_, err := call(context.Background(), hc, grpc.WaitForReady(true))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("wait-for-ready RPC ended before there were endpoints: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	r.UpdateState(manualState(ep{b.Addr, 100, 0}))
	if err := <-done; err != nil {
		t.Fatalf("wait-for-ready RPC: %v", err)
	}
}

func TestBalancerConfig(t *testing.T) {
	bb := balancerBuilder{}
	for raw, want := range map[string]float64{`{"panicThreshold":0}`: 0, `{"panicThreshold":1}`: 1, `{"panicThreshold":0.375}`: 0.375} {
		cfg, err := bb.ParseConfig([]byte(raw))
		if err != nil || *cfg.(*LBConfig).PanicThreshold != want {
			t.Errorf("ParseConfig(%s) = %v, %v; want panicThreshold %v", raw, cfg, err, want)
		}
	}
	for _, raw := range []string{``, `{}`} {
		if cfg, err := bb.ParseConfig([]byte(raw)); err != nil || cfg.(*LBConfig).PanicThreshold != nil {
			t.Errorf("ParseConfig(%s) = %v, %v; want the default", raw, cfg, err)
		}
	}
	// Percentages (the unit of earlier versions) are refused, not read as
	// fractions above 1.
	for _, raw := range []string{`{"panicThreshold":50}`, `{"panicThreshold":1.01}`, `{"panicThreshold":-0.1}`} {
		if _, err := bb.ParseConfig([]byte(raw)); err == nil || !strings.Contains(err.Error(), "fraction from 0 to 1") {
			t.Errorf("ParseConfig(%s): %v, want an error naming the unit", raw, err)
		}
	}
	for _, raw := range []string{`{"panicThreshold":"0.5"}`, `[]`} {
		if _, err := bb.ParseConfig([]byte(raw)); err == nil {
			t.Errorf("ParseConfig(%s): want an error", raw)
		}
	}
}

func TestOutlierConfig(t *testing.T) {
	bb := balancerBuilder{}
	cfg, err := bb.ParseConfig([]byte(`{"outlierDetection":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	s := cfg.(*LBConfig).outlier
	if s == nil || s.base != 30*time.Second || s.maxTime != 300*time.Second || s.interval != 10*time.Second ||
		s.consecutive != 5 || s.maxPercent != 50 || s.fpThreshold != 85 || !s.failure[codes.Unavailable] || s.failure[codes.NotFound] {
		t.Fatalf("defaults: %+v", s)
	}
	if cfg, _ := bb.ParseConfig([]byte(`{}`)); cfg.(*LBConfig).outlier != nil {
		t.Fatalf("no outlierDetection: ejection should be off")
	}
	for _, raw := range []string{
		`{"outlierDetection":{"baseEjectionTime":"soon"}}`,
		`{"outlierDetection":{"interval":"-1s"}}`,
		`{"outlierDetection":{"maxEjectionPercent":101}}`,
		`{"outlierDetection":{"failurePercentage":{"threshold":150}}}`,
		`{"outlierDetection":{"failureCodes":["NOPE"]}}`,
	} {
		if _, err := bb.ParseConfig([]byte(raw)); err == nil || !strings.Contains(err.Error(), "outlierDetection") {
			t.Errorf("ParseConfig(%s): %v, want an error naming outlierDetection", raw, err)
		}
	}
	// The exported service config parses as gRPC reads it.
	for _, sc := range []string{ServiceConfig, WeightedOnlyServiceConfig} {
		r := manual.NewBuilderWithScheme("kdcfg")
		if _, err := grpc.NewClient(r.Scheme()+":///x", grpc.WithResolvers(r), grpc.WithDefaultServiceConfig(sc),
			grpc.WithTransportCredentials(insecure.NewCredentials())); err != nil {
			t.Errorf("service config %s: %v", sc, err)
		}
	}
}
