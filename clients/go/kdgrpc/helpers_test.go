package kdgrpc

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
)

// backend is a real grpc-go server (the health service) on ip:<free port>.
type backend struct {
	Addr string
	srv  *grpc.Server
}

func startBackend(t *testing.T, ip string) *backend {
	t.Helper()
	lis, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatalf("backend on %s: %v", ip, err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	return &backend{Addr: lis.Addr().String(), srv: srv}
}

// Port is the backend's port.
func (b *backend) Port() int { return b.tcpAddr().Port }

// IP is the backend's address.
func (b *backend) IP() string { return b.tcpAddr().IP.String() }

func (b *backend) tcpAddr() *net.TCPAddr {
	a, err := net.ResolveTCPAddr("tcp", b.Addr)
	if err != nil {
		panic(err)
	}
	return a
}

// deadAddr is an address on ip where nothing listens (connections are
// refused).
func deadAddr(t *testing.T, ip string) string {
	t.Helper()
	lis, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

// dial opens a channel to target with the kubedisco_weighted balancer.
func dial(t *testing.T, target string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	opts = append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultServiceConfig(ServiceConfig),
	}, opts...)
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		t.Fatalf("grpc.NewClient(%s): %v", target, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// call makes one RPC and returns the address of the backend that served it.
func call(ctx context.Context, hc healthpb.HealthClient, opts ...grpc.CallOption) (string, error) {
	var p peer.Peer
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := hc.Check(ctx, &healthpb.HealthCheckRequest{}, append(opts, grpc.Peer(&p))...); err != nil {
		return "", err
	}
	return p.Addr.String(), nil
}

// rpcs makes n RPCs from workers goroutines and counts them by backend.
func rpcs(t *testing.T, conn *grpc.ClientConn, n, workers int) (counts map[string]int, failures int, firstErr error) {
	t.Helper()
	hc := healthpb.NewHealthClient(conn)
	var mu sync.Mutex
	counts = map[string]int{}
	var wg sync.WaitGroup
	per := n / workers
	for w := range workers {
		todo := per
		if w == 0 {
			todo += n - per*workers
		}
		wg.Go(func() {
			for range todo {
				addr, err := call(context.Background(), hc)
				mu.Lock()
				if err != nil {
					failures++
					if firstErr == nil {
						firstErr = err
					}
				} else {
					counts[addr]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return counts, failures, firstErr
}

// waitServed makes RPCs until each of addrs has served one, failing the
// test after timeout.
func waitServed(t *testing.T, conn *grpc.ClientConn, timeout time.Duration, addrs ...string) {
	t.Helper()
	hc := healthpb.NewHealthClient(conn)
	seen := map[string]bool{}
	deadline := time.Now().Add(timeout)
	var lastErr error
	for time.Now().Before(deadline) {
		addr, err := call(context.Background(), hc)
		if err != nil {
			lastErr = err
			continue
		}
		seen[addr] = true
		done := true
		for _, a := range addrs {
			done = done && seen[a]
		}
		if done {
			return
		}
	}
	t.Fatalf("not every backend of %v served within %s (served: %v, last error: %v)", addrs, timeout, seen, lastErr)
}

// traffic makes RPCs in the background and records, per backend, when it
// served and at which position in the sequence of RPCs.
type traffic struct {
	mu       sync.Mutex
	seq      int64
	byAddr   map[string]*hits
	failures []string
	stop     chan struct{}
	wg       sync.WaitGroup
}

type hits struct {
	count       int
	first, last time.Time
	lastSeq     int64
}

func startTraffic(t *testing.T, conn *grpc.ClientConn, workers int) *traffic {
	hc := healthpb.NewHealthClient(conn)
	tr := &traffic{byAddr: map[string]*hits{}, stop: make(chan struct{})}
	for range workers {
		tr.wg.Go(func() {
			for {
				select {
				case <-tr.stop:
					return
				default:
				}
				addr, err := call(context.Background(), hc)
				now := time.Now()
				tr.mu.Lock()
				tr.seq++
				if err != nil {
					tr.failures = append(tr.failures, fmt.Sprintf("%s: %v", now.Format("15:04:05.000"), err))
				} else {
					h := tr.byAddr[addr]
					if h == nil {
						h = &hits{first: now}
						tr.byAddr[addr] = h
					}
					h.count++
					h.last, h.lastSeq = now, tr.seq
				}
				tr.mu.Unlock()
			}
		})
	}
	t.Cleanup(tr.halt)
	return tr
}

// halt stops the RPCs and waits for the ones in flight.
func (tr *traffic) halt() {
	select {
	case <-tr.stop:
	default:
		close(tr.stop)
	}
	tr.wg.Wait()
}

// until polls cond (under the lock) until it holds; false after timeout.
func (tr *traffic) until(timeout time.Duration, cond func(tr *traffic) bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		tr.mu.Lock()
		ok := cond(tr)
		tr.mu.Unlock()
		if ok {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// get returns a copy of addr's record (zero when it never served).
func (tr *traffic) get(addr string) hits {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if h := tr.byAddr[addr]; h != nil {
		return *h
	}
	return hits{}
}

func (tr *traffic) String() string {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var parts []string
	for a, h := range tr.byAddr {
		parts = append(parts, fmt.Sprintf("%s=%d", a, h.count))
	}
	sort.Strings(parts)
	return fmt.Sprintf("%d RPCs: %s; %d failed", tr.seq, strings.Join(parts, " "), len(tr.failures))
}

// snapshotSeq returns how many RPCs have completed so far.
func (tr *traffic) snapshotSeq() int64 {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.seq
}
