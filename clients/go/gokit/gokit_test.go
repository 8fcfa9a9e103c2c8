package gokit_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"
	httptransport "github.com/go-kit/kit/transport/http"
	"github.com/go-kit/log"

	"github.com/kubedisco/kubedisco/clients/go/gokit"
	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
)

// server is a go-kit HTTP server whose endpoint answers with its address.
type server struct {
	ip   string
	port int
	addr string
	srv  *http.Server
}

func startServer(t *testing.T, ip string) *server {
	t.Helper()
	lis, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	who := func(context.Context, any) (any, error) { return addr, nil }
	handler := httptransport.NewServer(endpoint.Endpoint(who),
		func(context.Context, *http.Request) (any, error) { return nil, nil },
		func(_ context.Context, w http.ResponseWriter, resp any) error {
			_, err := io.WriteString(w, resp.(string))
			return err
		})
	s := &server{ip: ip, port: lis.Addr().(*net.TCPAddr).Port, addr: addr, srv: &http.Server{Handler: handler}}
	go func() { _ = s.srv.Serve(lis) }()
	t.Cleanup(func() { s.srv.Close() })
	return s
}

// factory makes a go-kit HTTP client endpoint for one instance.
func factory(instance string) (endpoint.Endpoint, io.Closer, error) {
	return httpFactory(instance, false)
}

// httpFactory makes a go-kit HTTP client endpoint for one instance, with
// opts; with strict, a 5xx answer is an error.
func httpFactory(instance string, strict bool, opts ...httptransport.ClientOption) (endpoint.Endpoint, io.Closer, error) {
	u, err := url.Parse("http://" + instance + "/who")
	if err != nil {
		return nil, nil, err
	}
	client := httptransport.NewClient(http.MethodGet, u,
		func(context.Context, *http.Request, any) error { return nil },
		func(_ context.Context, resp *http.Response) (any, error) {
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err == nil && strict && resp.StatusCode >= 500 {
				err = errors.New(resp.Status)
			}
			return string(b), err
		}, opts...)
	return client.Endpoint(), nil, nil
}

func manifest(servers []*server, notReady string) string {
	var slices []agenttest.Slice
	for i, s := range servers {
		slices = append(slices, agenttest.Slice{
			Name:      fmt.Sprintf("who-%d", i),
			Ports:     map[string]int{"http": s.port},
			Endpoints: []agenttest.SliceEndpoint{{IP: s.ip, NotReady: s.ip == notReady}},
		})
	}
	return agenttest.ServiceYAML("e2e", "who", []string{"http"}, slices...)
}

// TestGoKitThroughTheAgent: go-kit's Endpointer and round-robin balancer,
// fed by the Instancer, call go-kit HTTP servers; scale-up, readiness and
// scale-down reach them.
func TestGoKitThroughTheAgent(t *testing.T) {
	agent := agenttest.StartAgent(t)
	a, b := startServer(t, "127.0.32.2"), startServer(t, "127.0.32.3")
	agent.WriteManifest("who.yaml", manifest([]*server{a, b}, ""))
	agent.WaitService("e2e", "who", 10*time.Second, agenttest.HasIPs(a.ip, b.ip))

	instancer, err := gokit.NewInstancer(agent.Client, "who.e2e", "http", log.NewNopLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer instancer.Stop()
	endpointer := sd.NewEndpointer(instancer, factory, log.NewNopLogger())
	defer endpointer.Close()
	call := lb.Retry(3, 5*time.Second, lb.NewRoundRobin(endpointer))
	served := func(n int) (map[string]int, int) {
		return agenttest.CountCalls(n, func() (string, error) {
			resp, err := call(context.Background(), nil)
			if err != nil {
				return "", err
			}
			return resp.(string), nil
		})
	}
	if !agenttest.Until(10*time.Second, func() bool { c, _ := served(8); return c[a.addr] > 0 && c[b.addr] > 0 }) {
		t.Fatal("go-kit's balancer did not reach both servers within 10s")
	}
	counts, failed := served(2000)
	t.Logf("round robin over 2000 calls: %v, %d failed", counts, failed)
	if failed != 0 || counts[a.addr] != 1000 || counts[b.addr] != 1000 {
		t.Fatalf("counts %v, %d failed; want 1000 each", counts, failed)
	}

	c := startServer(t, "127.0.32.4")
	agent.WriteManifest("who.yaml", manifest([]*server{a, b, c}, ""))
	_, shown := agent.WaitService("e2e", "who", 10*time.Second, agenttest.HasIPs(a.ip, b.ip, c.ip))
	if !agenttest.Until(10*time.Second, func() bool { n, _ := served(8); return n[c.addr] > 0 }) {
		t.Fatal("the new server got no go-kit call within 10s of the agent listing it")
	}
	t.Logf("scale-up: first call on the new server within %s of the agent's API showing it", time.Since(shown).Round(time.Millisecond))

	agent.WriteManifest("who.yaml", manifest([]*server{a, b, c}, a.ip))
	_, shown = agent.WaitService("e2e", "who", 10*time.Second, agenttest.HasIPs(b.ip, c.ip))
	if !agenttest.Until(10*time.Second, func() bool { n, _ := served(100); return n[a.addr] == 0 }) {
		t.Fatal("the unready server still gets go-kit calls 10s after the agent dropped it")
	}
	t.Logf("readiness: the unready server stopped getting calls within %s of the agent's API dropping it", time.Since(shown).Round(time.Millisecond))

	agent.WriteManifest("who.yaml", manifest([]*server{c}, ""))
	agent.WaitService("e2e", "who", 10*time.Second, agenttest.HasIPs(c.ip))
	if !agenttest.Until(10*time.Second, func() bool { n, _ := served(100); return n[c.addr] == 100 }) {
		t.Fatal("after scaling down to one server, calls still go elsewhere")
	}
}

func TestInstancerReportsAMissingService(t *testing.T) {
	agent := agenttest.StartAgent(t)
	instancer, err := gokit.NewInstancer(agent.Client, "missing.e2e", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer instancer.Stop()
	ch := make(chan sd.Event, 4)
	instancer.Register(ch)
	select {
	case e := <-ch:
		if e.Err == nil || !strings.Contains(e.Err.Error(), "does not exist") {
			t.Fatalf("event %+v; want an error saying the Service does not exist", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
}
