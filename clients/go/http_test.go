package kubedisco_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
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

	// Transport: every request to a .svc name is resolved; the agent's
	// round-robin is exact, so 400 requests split 100 / 300.
	light.hits.Store(0)
	heavy.hits.Store(0)
	client := &http.Client{Transport: &kubedisco.Transport{Client: c, Port: "http"}}
	for i := range 400 {
		host := []string{"web.e2e.svc", "web.e2e.svc.cluster.local"}[i%2]
		body := get(t, client, "http://"+host+"/hello")
		if !strings.HasSuffix(body, " "+host) {
			t.Fatalf("backend saw Host %q, want %s", body, host)
		}
	}
	if light.hits.Load() != 100 || heavy.hits.Load() != 300 {
		t.Errorf("Transport: %d / %d requests, want 100 / 300 (weights 1:3)", light.hits.Load(), heavy.hits.Load())
	}
	// Hosts that are not Services go straight through.
	if body := get(t, client, "http://"+light.addr+"/"); !strings.HasPrefix(body, light.addr) {
		t.Errorf("Transport to an address: %q", body)
	}
	if _, err := client.Get("http://missing.e2e.svc/"); !errors.Is(err, kubedisco.ErrServiceNotFound) {
		t.Errorf("Transport to a missing Service: %v", err)
	}
	// A short name is an ordinary host by default (Base gets it as it is;
	// this Base answers itself, so nothing asks the machine's DNS), and a
	// Service with MatchNamespaces.
	var passedOn []string
	answering := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		passedOn = append(passedOn, r.URL.Host)
		return &http.Response{StatusCode: http.StatusNoContent, Body: http.NoBody, Request: r}, nil
	})
	short := &http.Client{Transport: &kubedisco.Transport{Client: c, Port: "http", Base: answering}}
	if resp, err := short.Get("http://web.e2e:9/"); err != nil || resp.StatusCode != http.StatusNoContent ||
		len(passedOn) != 1 || passedOn[0] != "web.e2e:9" {
		t.Errorf("a short name by default: %v, Base got %v; want it passed on unchanged", err, passedOn)
	}
	shortNames := &http.Client{Transport: &kubedisco.Transport{Client: c, Port: "http", Match: kubedisco.MatchNamespaces("e2e")}}
	if body := get(t, shortNames, "http://web.e2e/"); !strings.HasSuffix(body, " web.e2e") {
		t.Errorf("a short name with MatchNamespaces: %q", body)
	}

	// Dialer: the port name may come from the address.
	d := &kubedisco.Dialer{Client: c}
	conn, err := d.DialContext(ctx, "tcp", "web.e2e.svc:http")
	if err != nil {
		t.Fatalf("Dialer: %v", err)
	}
	remote := conn.RemoteAddr().String()
	conn.Close()
	if remote != light.addr && remote != heavy.addr {
		t.Errorf("Dialer connected to %s", remote)
	}
	// ...or from Port, in an http.Transport (which dials "web.e2e.svc:80").
	light.hits.Store(0)
	heavy.hits.Store(0)
	dialed := &http.Client{Transport: &http.Transport{
		DialContext:       (&kubedisco.Dialer{Client: c, Port: "http"}).DialContext,
		DisableKeepAlives: true,
	}}
	for range 40 {
		get(t, dialed, "http://web.e2e.svc/")
	}
	if light.hits.Load() != 10 || heavy.hits.Load() != 30 {
		t.Errorf("Dialer in an http.Transport: %d / %d requests, want 10 / 30", light.hits.Load(), heavy.hits.Load())
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// countingAgent is a stand-in agent that counts the requests it gets and
// refuses them all.
func countingAgent(t *testing.T) (*kubedisco.Client, *atomic.Int64) {
	t.Helper()
	var asked atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
		fmt.Fprint(w, `{"error":"a stand-in agent","code":"unavailable"}`)
	}))
	t.Cleanup(srv.Close)
	c, err := kubedisco.NewClient(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return c, &asked
}

// TestZeroTransportReachesOrdinaryHosts: a zero Transport as an http.Client's
// only transport sends requests to hosts that are not .svc names, two-label
// ones like example.com included, to http.DefaultTransport unchanged, and
// never asks an agent about them.
func TestZeroTransportReachesOrdinaryHosts(t *testing.T) {
	web := startWeb(t, "127.0.0.1")
	client := &http.Client{Transport: &kubedisco.Transport{}}
	localhost := fmt.Sprintf("localhost:%d", web.port)
	if body := get(t, client, "http://"+localhost+"/"); body != web.addr+" "+localhost {
		t.Errorf("GET http://%s/ through a zero Transport: %q", localhost, body)
	}

	// Names that would need the machine's DNS: http.DefaultTransport is,
	// for this test, one whose dialer connects every address to the local
	// server and records what it was asked to dial.
	var dialed []string
	saved := http.DefaultTransport
	t.Cleanup(func() { http.DefaultTransport = saved })
	http.DefaultTransport = &http.Transport{
		DialContext: func(ctx context.Context, network, address string) (net.Conn, error) {
			dialed = append(dialed, address)
			return (&net.Dialer{}).DialContext(ctx, network, web.addr)
		},
		DisableKeepAlives: true,
	}
	for _, host := range []string{"example.com", "orders.shop", "www.example.com"} {
		if body := get(t, client, "http://"+host+"/"); body != web.addr+" "+host {
			t.Errorf("GET http://%s/ through a zero Transport: %q, want the request as sent", host, body)
		}
	}
	if want := []string{"example.com:80", "orders.shop:80", "www.example.com:80"}; !slices.Equal(dialed, want) {
		t.Errorf("the default transport dialed %v, want %v", dialed, want)
	}
}

// TestDialerDialsOrdinaryHostsAsTheyAre: a Dialer asks the agent only about
// .svc names; other addresses go to its net.Dialer unchanged.
func TestDialerDialsOrdinaryHostsAsTheyAre(t *testing.T) {
	web := startWeb(t, "127.0.0.1")
	agent, asked := countingAgent(t)
	d := &kubedisco.Dialer{Client: agent, Dialer: &net.Dialer{Resolver: &net.Resolver{
		PreferGo: true,
		// No DNS traffic leaves the test: a name not in /etc/hosts ends here.
		Dial: func(ctx context.Context, network, address string) (net.Conn, error) {
			return nil, errors.New("no DNS in this test")
		},
	}}}
	conn, err := d.DialContext(context.Background(), "tcp", fmt.Sprintf("localhost:%d", web.port))
	if err != nil {
		t.Fatalf("Dialer to localhost: %v", err)
	}
	conn.Close()
	_, err = d.DialContext(context.Background(), "tcp", "example.com:80")
	var dnsErr *net.DNSError
	if !errors.As(err, &dnsErr) || dnsErr.Name != "example.com" {
		t.Errorf("Dialer to example.com:80: %v, want a lookup of example.com by its net.Dialer", err)
	}
	if _, err := d.DialContext(context.Background(), "tcp", "orders.shop.svc:80"); !errors.Is(err, kubedisco.ErrUnavailable) {
		t.Errorf("Dialer to orders.shop.svc:80: %v, want the stand-in agent's answer", err)
	}
	if n := asked.Load(); n != 1 {
		t.Errorf("the agent was asked %d times, want once (for orders.shop.svc only)", n)
	}
}
