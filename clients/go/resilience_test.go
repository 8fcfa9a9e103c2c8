package kubedisco_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
)

// flakyWeb is an HTTP server that can be told to answer 503 to everything
// (fail) or to 9 of every 10 requests (mostly), and be killed (its
// connections closed under requests in flight).
type flakyWeb struct {
	addr   string
	ip     string
	port   int
	zone   string
	fail   atomic.Bool
	mostly atomic.Bool
	hits   atomic.Int64
	delay  time.Duration
	srv    *http.Server
}

func startFlakyWeb(t *testing.T, ip string, delay time.Duration) *flakyWeb {
	t.Helper()
	lis, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	b := &flakyWeb{addr: lis.Addr().String(), ip: ip, port: lis.Addr().(*net.TCPAddr).Port, delay: delay}
	b.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := b.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		time.Sleep(b.delay)
		if b.fail.Load() || (b.mostly.Load() && n%10 != 0) {
			http.Error(w, "failing on purpose", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintf(w, "%s %s", b.addr, body)
	})}
	go func() { _ = b.srv.Serve(lis) }()
	t.Cleanup(func() { b.srv.Close() })
	return b
}

// webService serves the backends as the Service web.e2e (port "http") on
// a new agent, and returns a client whose Transport uses r.
func webService(t *testing.T, r *kubedisco.Resilience, bs ...*flakyWeb) *http.Client {
	t.Helper()
	return annotatedWebService(t, r, nil, bs...)
}

// annotatedWebService is webService with annotations on the Service.
func annotatedWebService(t *testing.T, r *kubedisco.Resilience, annotations map[string]string, bs ...*flakyWeb) *http.Client {
	t.Helper()
	return webServiceOn(t, agenttest.StartAgent(t), r, annotations, bs...)
}

// webServiceOn is annotatedWebService on a given agent; each backend's
// zone is its endpoint's.
func webServiceOn(t *testing.T, agent *agenttest.Agent, r *kubedisco.Resilience, annotations map[string]string, bs ...*flakyWeb) *http.Client {
	t.Helper()
	var slices []agenttest.Slice
	var ips []string
	for i, b := range bs {
		slices = append(slices, agenttest.Slice{
			Name:      fmt.Sprintf("web-%d", i),
			Ports:     map[string]int{"http": b.port},
			Endpoints: []agenttest.SliceEndpoint{{IP: b.ip, Zone: b.zone}},
		})
		ips = append(ips, b.ip)
	}
	agent.WriteManifest("web.yaml", agenttest.Annotate(agenttest.ServiceYAML("e2e", "web", []string{"http"}, slices...), annotations))
	agent.WaitService("e2e", "web", 10*time.Second, agenttest.HasIPs(ips...))
	return &http.Client{Transport: &kubedisco.Transport{Client: agent.Client, Port: "http", Resilience: r}}
}

const webURL = "http://web.e2e.svc/"

// getStatus makes one GET and returns its status (0 for a transport error).
func getStatus(client *http.Client) (int, error) {
	resp, err := client.Get(webURL)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, nil
}

// failedGets makes n GETs from workers goroutines and returns how many did
// not end in 200, and the first such outcome.
func failedGets(client *http.Client, n, workers int) (int, string) {
	var mu sync.Mutex
	failed, first := 0, ""
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range n / workers {
				code, err := getStatus(client)
				if code != http.StatusOK {
					mu.Lock()
					failed++
					if first == "" {
						first = fmt.Sprintf("status %d, error %v", code, err)
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	return failed, first
}

func hits(bs ...*flakyWeb) []int64 {
	out := make([]int64, len(bs))
	for i, b := range bs {
		out[i] = b.hits.Load()
	}
	return out
}

func TestTransportEjectsAFailingEndpoint(t *testing.T) {
	var bs []*flakyWeb
	for _, ip := range []string{"127.0.20.2", "127.0.20.3", "127.0.20.4", "127.0.20.5"} {
		bs = append(bs, startFlakyWeb(t, ip, 0))
	}
	// No retries, so that every 503 reaches the test: what ejection
	// alone does is what is measured.
	client := webService(t, &kubedisco.Resilience{MaxAttempts: 1, BaseEjectionTime: 3 * time.Second}, bs...)
	bad := bs[0]
	bad.fail.Store(true)
	ejected := false
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
		before := bad.hits.Load()
		failedGets(client, 100, 1)
		if bad.hits.Load() == before {
			ejected = true
			break
		}
	}
	if !ejected {
		t.Fatalf("the endpoint answering 503 still gets requests 10s later (hits %v)", hits(bs...))
	}
	const n = 2000
	failed, first := failedGets(client, n, 4)
	t.Logf("after the ejection %d of %d GETs failed (%s); hits %v", failed, n, first, hits(bs...))
	if failed > n/100 {
		t.Fatalf("%d of %d GETs failed after the ejection; want at most 1%%", failed, n)
	}
	bad.fail.Store(false)
	before := bad.hits.Load()
	for deadline := time.Now().Add(20 * time.Second); bad.hits.Load() == before; {
		if time.Now().After(deadline) {
			t.Fatalf("the healed endpoint got no request 20s later (ejection time 3s)")
		}
		failedGets(client, 10, 1)
	}
}

func TestTransportEjectionIsBounded(t *testing.T) {
	var bs []*flakyWeb
	for _, ip := range []string{"127.0.21.2", "127.0.21.3", "127.0.21.4", "127.0.21.5"} {
		bs = append(bs, startFlakyWeb(t, ip, 0))
	}
	client := webService(t, &kubedisco.Resilience{MaxAttempts: 1, BaseEjectionTime: 300 * time.Second}, bs...)
	for _, b := range bs[:3] {
		b.fail.Store(true)
	}
	failedGets(client, 400, 1)
	before := hits(bs...)
	failedGets(client, 400, 1)
	after := hits(bs...)
	reached := 0
	for i := range bs {
		if after[i] > before[i] {
			reached++
		}
	}
	t.Logf("3 of 4 failing: hits before %v, after 400 more GETs %v", before, after)
	if reached != 2 {
		t.Fatalf("%d endpoints got requests; want 2 (at most half of 4 ejected)", reached)
	}
}

func TestTransportRetriesIdempotentRequestsAcrossAKill(t *testing.T) {
	var bs []*flakyWeb
	for _, ip := range []string{"127.0.22.2", "127.0.22.3", "127.0.22.4"} {
		bs = append(bs, startFlakyWeb(t, ip, 20*time.Millisecond))
	}
	client := webService(t, nil, bs...) // the defaults
	victim := bs[0]
	get := func() error {
		if code, err := getStatus(client); code != http.StatusOK {
			return fmt.Errorf("status %d, error %v", code, err)
		}
		return nil
	}
	// Close closes its connections under the requests in flight.
	agenttest.KillUnderLoad(t, "Transport GETs", 8, get, func() bool { return victim.hits.Load() >= 8 }, func() { victim.srv.Close() })

	// Not idempotent: a POST is sent once, and its 503 is the answer.
	bs[1].fail.Store(true)
	bs[2].fail.Store(true)
	before := hits(bs...)
	resp, err := client.Post(webURL, "text/plain", strings.NewReader("order"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	after := hits(bs...)
	if sent := after[1] + after[2] - before[1] - before[2]; resp.StatusCode != http.StatusServiceUnavailable || sent != 1 {
		t.Fatalf("POST without Idempotency-Key: status %d, sent %d times; want 503, once", resp.StatusCode, sent)
	}
	// With an Idempotency-Key it is retried, with its body, on the other.
	bs[1].fail.Store(false)
	var body string
	for range 2 { // either endpoint first
		req, _ := http.NewRequest(http.MethodPost, webURL, strings.NewReader("order"))
		req.Header.Set("Idempotency-Key", "k1")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST with Idempotency-Key: status %d (%s); want it retried to the healthy endpoint", resp.StatusCode, b)
		}
		body = string(b)
	}
	if want := bs[1].addr + " order"; body != want {
		t.Fatalf("retried POST answered %q, want %q (the body sent again)", body, want)
	}
}

func TestTransportRetryBudget(t *testing.T) {
	a, b := startFlakyWeb(t, "127.0.23.2", 0), startFlakyWeb(t, "127.0.23.3", 0)
	client := webService(t, &kubedisco.Resilience{MaxAttempts: 3}, a, b)
	a.fail.Store(true)
	b.fail.Store(true)
	const n = 200
	failed, _ := failedGets(client, n, 1)
	sent := a.hits.Load() + b.hits.Load()
	t.Logf("everything failing: %d GETs, %d failed, %d requests sent (%d extra; budget 10 + 20%%)", n, failed, sent, sent-n)
	if failed != n {
		t.Fatalf("%d of %d failed; every endpoint answers 503", failed, n)
	}
	if sent > n+10+n/5 || sent <= n {
		t.Fatalf("%d requests for %d GETs; want some retries, at most 10 + 20%% extra", sent, n)
	}
}

// poll waits until cond holds, failing the test after timeout.
func poll(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(timeout); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestTransportAppliesServiceAnnotations: with retry-max-attempts "1" and
// outlier-consecutive-failures "0" on the Service, the default Transport
// neither retries nor ejects: each GET that reaches the endpoint answering
// 503 fails, and it keeps getting its share. (With the defaults, the GETs
// are retried on the other endpoint and none fails.)
func TestTransportAppliesServiceAnnotations(t *testing.T) {
	good, bad := startFlakyWeb(t, "127.0.24.2", 0), startFlakyWeb(t, "127.0.24.3", 0)
	bad.fail.Store(true)
	client := annotatedWebService(t, nil, map[string]string{
		"kubedisco.io/retry-max-attempts":           "1",
		"kubedisco.io/outlier-consecutive-failures": "0",
	}, good, bad)
	const n = 200
	failed, first := failedGets(client, n, 1)
	t.Logf("%d of %d GETs failed (%s); per endpoint %v", failed, n, first, hits(good, bad))
	if got := bad.hits.Load(); int64(failed) != got || got < n/4 {
		t.Fatalf("%d GETs failed and %d reached the failing endpoint; want every one that reached it failed (no retries) and it kept about half (no ejection)", failed, got)
	}
}
