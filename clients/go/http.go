package kubedisco

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"sync"
)

// Transport is an http.RoundTripper that resolves Service hosts
// ("http://orders.shop.svc/...", "http://orders.shop.svc.cluster.local/...")
// per request: each request asks the agent for one endpoint (its weighted
// pick) and is sent there by Base. Requests to other hosts, "example.com"
// or a two-label "orders.shop" among them, go to Base unchanged, so a zero
// Transport can serve as an http.Client's only transport. Match (e.g.
// MatchNamespaces("shop")) takes more names for Services.
//
// The request's Host header stays the Service name. The port comes from
// Port, not from the URL (a URL port is ignored for Service hosts). For
// HTTPS, Base's TLS config must name the server (ServerName), since the
// connection is to an address; or use Dialer with an http.Transport.
//
// Failing endpoints are avoided (see Resilience, on by default): connection
// errors and 502/503/504 answers count against an endpoint; 5 in a row, or
// more than 85% of at least 20 requests in a 10s interval, eject it for 30s
// (longer each time, at most half of the Service's endpoints at once), and
// idempotent requests are retried on another endpoint, up to 3 tries,
// within a budget of 20% extra requests. While nothing is ejected a
// request goes where the agent's weighted pick says; while something is,
// and for retries, the Transport shares the traffic out itself by the
// gRPC balancer's tier rule, ejected and tried endpoints counting as not
// ready, so that a zone whose endpoints are all ejected hands its traffic
// to the next tier. A Transport must not be copied after first use.
type Transport struct {
	// Base sends the requests; http.DefaultTransport when nil.
	Base http.RoundTripper
	// Client is the agent to ask; DefaultClient() when nil.
	Client *Client
	// Port is the name of the Service port to use; empty means the
	// Service's only port.
	Port string
	// Match says which hosts are Services; IsServiceHost (names with
	// .svc) when nil.
	Match func(host string) bool
	// Resilience configures ejection and retries; nil means the defaults,
	// &Resilience{Off: true} turns them off.
	Resilience *Resilience

	resOnce sync.Once
	res     *Resilience
	mu      sync.Mutex
	states  map[string]*outlierState // by Service
}

// RoundTrip implements http.RoundTripper.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	host := req.URL.Hostname()
	if !matches(t.Match, host) {
		return base.RoundTrip(req)
	}
	client, err := clientOrDefault(t.Client)
	if r := t.resilience(); err == nil && !r.Off {
		return t.roundTripResilient(req, base, client, host, r)
	}
	if err == nil {
		var addr string
		if addr, err = client.Pick(req.Context(), host, t.Port); err == nil {
			out := req.Clone(req.Context())
			if out.Host == "" {
				out.Host = req.URL.Host
			}
			out.URL.Host = addr
			return base.RoundTrip(out)
		}
	}
	if req.Body != nil {
		_ = req.Body.Close()
	}
	return nil, err
}

// Dialer dials Service addresses ("orders.shop.svc:http", or
// "orders.shop.svc:80" from an http.Transport) at one endpoint the agent
// picks, per dial; other addresses ("example.com:443", "orders.shop:80"
// unless Match takes it) are dialed as they are. Use its DialContext in an
// http.Transport, a database driver, or anything else that dials.
//
// The port is the address's port when it is a name; otherwise Port (a
// numeric port is ignored for Services; empty Port means the Service's
// only port).
type Dialer struct {
	// Client is the agent to ask; DefaultClient() when nil.
	Client *Client
	// Port is the name of the Service port to use when the address does
	// not name one.
	Port string
	// Dialer makes the connections; a zero net.Dialer when nil.
	Dialer *net.Dialer
	// Match says which hosts are Services; IsServiceHost (names with
	// .svc) when nil.
	Match func(host string) bool
}

// DialContext dials address on network, resolving Service hosts by the
// agent.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	dialer := d.Dialer
	if dialer == nil {
		dialer = &net.Dialer{}
	}
	host, port, err := net.SplitHostPort(address)
	if err != nil || !matches(d.Match, host) {
		return dialer.DialContext(ctx, network, address)
	}
	portName := d.Port
	if _, err := strconv.Atoi(port); err != nil {
		portName = port
	}
	client, err := clientOrDefault(d.Client)
	if err != nil {
		return nil, err
	}
	addr, err := client.Pick(ctx, host, portName)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	return dialer.DialContext(ctx, network, addr)
}

func matches(match func(string) bool, host string) bool {
	if match == nil {
		return IsServiceHost(host)
	}
	return match(host)
}

func clientOrDefault(c *Client) (*Client, error) {
	if c != nil {
		return c, nil
	}
	return DefaultClient()
}
