package kubedisco

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"
)

// tieredAgent answers the Service web.shop with a1, a2 (weight 100) in
// tier 0 and b1 (weight 100), b3 (weight 300) in tier 1, all on port http.
func tieredAgent(t *testing.T) *Client {
	t.Helper()
	ep := func(ip string, weight, priority uint32) Endpoint {
		return Endpoint{IP: netip.MustParseAddr(ip), Ports: []EndpointPort{{Name: "http", Port: 80}},
			Ready: true, Serving: true, Weight: weight, Priority: priority}
	}
	svc := Service{Namespace: "shop", Name: "web", Exists: true, Revision: 1,
		Ports: []ServicePort{{Name: "http", Port: 80, Protocol: "TCP"}},
		Endpoints: []Endpoint{
			ep("10.0.0.1", 100, 0), ep("10.0.0.2", 100, 0),
			ep("10.0.1.1", 100, 1), ep("10.0.1.3", 300, 1),
		}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/services/shop/web":
			_ = json.NewEncoder(w).Encode(svc)
		case "/v1/pick/shop/web": // the agent's pick: the preferred tier only
			_ = json.NewEncoder(w).Encode(map[string]string{"address": "10.0.0.1:80"})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	c, err := NewClient(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func eject(s *outlierState, addrs ...string) {
	until := time.Now().Add(time.Hour)
	for _, a := range addrs {
		s.byAddr[a] = &httpEndpoint{ejectedUntil: until, multiplier: 1}
	}
	s.lastEnd = until
}

// picks counts where n picks go.
func picks(t *testing.T, tr *Transport, c *Client, s *outlierState, tried []string, n int) map[string]int {
	t.Helper()
	out := map[string]int{}
	for range n {
		addr, err := tr.pick(context.Background(), c, "web.shop.svc", s, tried)
		if err != nil {
			t.Fatal(err)
		}
		out[addr]++
	}
	return out
}

func TestPickSpillsOverWhenATierIsEjected(t *testing.T) {
	c := tieredAgent(t)
	tr := &Transport{Client: c, Port: "http"}

	s := newOutlierState()
	eject(s, "10.0.0.1:80", "10.0.0.2:80")
	got := picks(t, tr, c, s, nil, 4000)
	t.Logf("tier 0 ejected: %v", got)
	if got["10.0.0.1:80"]+got["10.0.0.2:80"] != 0 || got["10.0.1.3:80"] < 2*got["10.0.1.1:80"] {
		t.Fatalf("tier 0 ejected: picks %v; want all in tier 1, by weight 1:3", got)
	}

	s = newOutlierState()
	eject(s, "10.0.0.1:80")
	got = picks(t, tr, c, s, nil, 1000)
	if got["10.0.0.2:80"] != 1000 {
		t.Fatalf("one of tier 0 ejected: picks %v; want all on the other (half the tier's weight left)", got)
	}

	// A retry avoids the endpoints tried, spilling over the same way.
	got = picks(t, tr, c, newOutlierState(), []string{"10.0.0.1:80", "10.0.0.2:80"}, 1000)
	if got["10.0.0.1:80"]+got["10.0.0.2:80"] != 0 {
		t.Fatalf("tier 0 tried: retries went %v; want tier 1", got)
	}

	// Nothing ejected, first attempt: the agent's pick.
	got = picks(t, tr, c, newOutlierState(), nil, 10)
	if got["10.0.0.1:80"] != 10 {
		t.Fatalf("nothing ejected: picks %v; want the agent's", got)
	}
}

func TestPickPanicRule(t *testing.T) {
	c := tieredAgent(t)
	tr := &Transport{Client: c, Port: "http"}
	all := []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.1.1:80", "10.0.1.3:80"}

	// Everything ejected (the endpoints changed under the bounded share):
	// better an ejected endpoint than none, and an untried one first.
	s := newOutlierState()
	eject(s, all...)
	got := picks(t, tr, c, s, all[:3], 100)
	if got["10.0.1.3:80"] != 100 {
		t.Fatalf("all ejected, three tried: picks %v; want the untried one", got)
	}
	got = picks(t, tr, c, s, all, 100)
	if got["10.0.0.1:80"]+got["10.0.0.2:80"] != 100 {
		t.Fatalf("all ejected and tried: picks %v; want the preferred tier", got)
	}
}
