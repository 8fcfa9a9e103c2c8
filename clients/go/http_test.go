package kubedisco_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
)

// webBackend is a real HTTP server on ip:<free port> that answers with its
// own address and the Host header it got.
type webBackend struct {
	addr string
	ip   string
	port int
	hits atomic.Int64
}

func startWeb(t *testing.T, ip string) *webBackend {
	t.Helper()
	lis, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	b := &webBackend{addr: lis.Addr().String(), ip: ip, port: lis.Addr().(*net.TCPAddr).Port}
	srv := &httptest.Server{Listener: lis, Config: &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		fmt.Fprintf(w, "%s %s", b.addr, r.Host)
	})}}
	srv.Start()
	t.Cleanup(srv.Close)
	return b
}

func get(t *testing.T, client *http.Client, url string) string {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// TestHelpersAgainstTheAgent: Lookup, Pick, Transport and Dialer against a
// real agent and real HTTP servers.
func TestHelpersAgainstTheAgent(t *testing.T) {
	agent := agenttest.StartAgent(t)
	light, heavy := startWeb(t, "127.0.20.2"), startWeb(t, "127.0.20.3")
	agent.WriteManifest("web.yaml", agenttest.ServiceYAML("e2e", "web", []string{"http"},
		agenttest.Slice{Name: "web-light", Weight: "1", Ports: map[string]int{"http": light.port},
			Endpoints: []agenttest.SliceEndpoint{{IP: light.ip, Zone: "zone-a"}}},
		agenttest.Slice{Name: "web-heavy", Weight: "3", Ports: map[string]int{"http": heavy.port},
			Endpoints: []agenttest.SliceEndpoint{{IP: heavy.ip, Zone: "zone-b"}}},
	))
	agent.WriteManifest("empty.yaml", agenttest.ServiceYAML("e2e", "empty", []string{"http"}))
	agent.WaitService("e2e", "web", 10*time.Second, agenttest.HasIPs(light.ip, heavy.ip))
	agent.WaitService("e2e", "empty", 10*time.Second, func(s *kubedisco.Service) bool { return s.Exists })
	ctx := context.Background()
	c := agent.Client

	eps, err := c.Lookup(ctx, "web.e2e")
	if err != nil || len(eps) != 2 {
		t.Fatalf("Lookup: %v, %v", eps, err)
	}
	for _, e := range eps {
		addr, _ := e.Address("http")
		switch {
		case addr == light.addr && e.Weight == 1 && e.Zone == "zone-a":
		case addr == heavy.addr && e.Weight == 3 && e.Zone == "zone-b":
		default:
			t.Errorf("Lookup: unexpected endpoint %+v", e)
		}
	}
	if eps, err := c.Lookup(ctx, "empty.e2e.svc.cluster.local"); err != nil || len(eps) != 0 {
		t.Errorf("Lookup of a Service without endpoints: %v, %v", eps, err)
	}
	if _, err := c.Lookup(ctx, "missing.e2e"); !errors.Is(err, kubedisco.ErrServiceNotFound) {
		t.Errorf("Lookup of a missing Service: %v", err)
	}
	if _, err := c.Pick(ctx, "empty.e2e", "http"); !errors.Is(err, kubedisco.ErrNoEndpoints) {
		t.Errorf("Pick on a Service without endpoints: %v", err)
	}
	if _, err := c.Pick(ctx, "web.e2e", "grpc"); !errors.Is(err, kubedisco.ErrNoSuchPort) {
		t.Errorf("Pick of a missing port: %v", err)
	}

	// The package-level helpers read KUBEDISCO_ADDR (once, on first use).
	t.Setenv(kubedisco.EnvAddr, agent.HTTPAddr)
	if addr, err := kubedisco.Pick(ctx, "web.e2e", "http"); err != nil || (addr != light.addr && addr != heavy.addr) {
		t.Errorf("kubedisco.Pick: %q, %v", addr, err)
	}
	if eps, err := kubedisco.Lookup(ctx, "web.e2e"); err != nil || len(eps) != 2 {
		t.Errorf("kubedisco.Lookup: %v, %v", eps, err)
	}

	// Transport: every request is resolved; the agent's round-robin is
	// exact, so 400 requests split 100 / 300.
	light.hits.Store(0)
	heavy.hits.Store(0)
	client := &http.Client{Transport: &kubedisco.Transport{Client: c, Port: "http"}}
	for range 400 {
		body := get(t, client, "http://web.e2e/hello")
		if !strings.HasSuffix(body, " web.e2e") {
			t.Fatalf("backend saw Host %q, want web.e2e", body)
		}
	}
	if light.hits.Load() != 100 || heavy.hits.Load() != 300 {
		t.Errorf("Transport: %d / %d requests, want 100 / 300 (weights 1:3)", light.hits.Load(), heavy.hits.Load())
	}
	// Hosts that are not Services go straight through.
	if body := get(t, client, "http://"+light.addr+"/"); !strings.HasPrefix(body, light.addr) {
		t.Errorf("Transport to an address: %q", body)
	}
	if _, err := client.Get("http://missing.e2e/"); !errors.Is(err, kubedisco.ErrServiceNotFound) {
		t.Errorf("Transport to a missing Service: %v", err)
	}

	// Dialer: the port name may come from the address.
	d := &kubedisco.Dialer{Client: c}
	conn, err := d.DialContext(ctx, "tcp", "web.e2e:http")
	if err != nil {
		t.Fatalf("Dialer: %v", err)
	}
	remote := conn.RemoteAddr().String()
	conn.Close()
	if remote != light.addr && remote != heavy.addr {
		t.Errorf("Dialer connected to %s", remote)
	}
	// ...or from Port, in an http.Transport (which dials "web.e2e:80").
	light.hits.Store(0)
	heavy.hits.Store(0)
	dialed := &http.Client{Transport: &http.Transport{
		DialContext:       (&kubedisco.Dialer{Client: c, Port: "http"}).DialContext,
		DisableKeepAlives: true,
	}}
	for range 40 {
		get(t, dialed, "http://web.e2e/")
	}
	if light.hits.Load() != 10 || heavy.hits.Load() != 30 {
		t.Errorf("Dialer in an http.Transport: %d / %d requests, want 10 / 30", light.hits.Load(), heavy.hits.Load())
	}
}
