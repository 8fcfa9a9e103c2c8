package kubedisco_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
)

func TestParseServiceName(t *testing.T) {
	good := map[string]kubedisco.ServiceName{
		"orders.shop":                   {Namespace: "shop", Name: "orders"},
		"orders.shop.":                  {Namespace: "shop", Name: "orders"},
		"orders.shop.svc":               {Namespace: "shop", Name: "orders"},
		"orders.shop.svc.cluster.local": {Namespace: "shop", Name: "orders"},
		"a-1.b-2":                       {Namespace: "b-2", Name: "a-1"},
	}
	for in, want := range good {
		got, err := kubedisco.ParseServiceName(in)
		if err != nil || got != want {
			t.Errorf("ParseServiceName(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "orders", "orders.", ".shop", "Orders.shop", "orders.shop.cluster.local",
		"orders_x.shop", "-a.shop", "orders.shop:grpc", strings.Repeat("a", 64) + ".shop"} {
		if got, err := kubedisco.ParseServiceName(in); err == nil {
			t.Errorf("ParseServiceName(%q) = %v, want an error", in, got)
		}
	}
}

func TestServiceHostMatchers(t *testing.T) {
	inShop := kubedisco.MatchNamespaces("shop")
	for host, want := range map[string][2]bool{ // IsServiceHost, MatchNamespaces("shop")
		"orders.shop.svc":                {true, true},
		"orders.shop.svc.":               {true, true},
		"orders.shop.svc.cluster.local":  {true, true},
		"orders.other.svc.cluster.local": {true, true},
		"orders.shop":                    {false, true},
		"orders.other":                   {false, false},
		"example.com":                    {false, false},
		"www.example.com":                {false, false},
		"orders.shop.cluster.local":      {false, false},
		"localhost":                      {false, false},
		"127.0.0.1":                      {false, false},
		"::1":                            {false, false},
		"[::1]":                          {false, false},
		"Orders.shop.svc":                {false, false},
		"":                               {false, false},
	} {
		if got := kubedisco.IsServiceHost(host); got != want[0] {
			t.Errorf("IsServiceHost(%q) = %t, want %t", host, got, want[0])
		}
		if got := inShop(host); got != want[1] {
			t.Errorf("MatchNamespaces(shop)(%q) = %t, want %t", host, got, want[1])
		}
	}
}

func TestNewClientAddresses(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:8053":         "http://127.0.0.1:8053",
		"http://127.0.0.1:8053/": "http://127.0.0.1:8053",
		"https://agent:8443":     "https://agent:8443",
		"[::1]:8053":             "http://[::1]:8053",
		"http://agent/prefix/":   "http://agent/prefix",
	} {
		c, err := kubedisco.NewClient(in)
		if err != nil || c.Addr() != want {
			t.Errorf("NewClient(%q): addr %v, %v; want %s", in, c, err, want)
			continue
		}
	}
	for _, in := range []string{"", "ftp://agent:21", "http://", "http://agent:8053?x=1"} {
		if _, err := kubedisco.NewClient(in); err == nil {
			t.Errorf("NewClient(%q): want an error", in)
		}
	}
	t.Setenv(kubedisco.EnvAddr, "")
	if got := kubedisco.AddrFromEnv(); got != kubedisco.DefaultAddr {
		t.Errorf("AddrFromEnv with KUBEDISCO_ADDR unset = %q", got)
	}
	t.Setenv(kubedisco.EnvAddr, "10.0.0.1:8053")
	if got := kubedisco.AddrFromEnv(); got != "10.0.0.1:8053" {
		t.Errorf("AddrFromEnv = %q", got)
	}
}

// fakeAPI answers the non-streaming routes from a table of path → (status, body).
func fakeAPI(t *testing.T, routes map[string]string) *kubedisco.Client {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		answer, ok := routes[r.URL.RequestURI()]
		if !ok {
			t.Errorf("unexpected request %s", r.URL.RequestURI())
			answer = `404 {"error":"no such route: GET ` + r.URL.Path + `"}`
		}
		var status int
		var body string
		if _, err := fmt.Sscanf(answer, "%d", &status); err != nil {
			t.Fatalf("bad route answer %q", answer)
		}
		body = strings.TrimSpace(answer[3:])
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	c, err := kubedisco.NewClient(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const ordersJSON = `{"namespace":"shop","name":"orders","exists":true,"revision":7,"headless":true,
 "ports":[{"name":"grpc","port":9090,"protocol":"TCP","targetPort":"grpc"},{"name":"http","port":8080,"protocol":"TCP"}],
 "endpoints":[{"ip":"10.244.1.11","ports":[{"name":"grpc","port":9090,"protocol":"TCP"},{"name":"http","port":8080,"protocol":"TCP"}],
   "ready":true,"serving":true,"terminating":false,"zone":"zone-a","node":"node-a","hostname":"orders-0",
   "targetRef":{"kind":"Pod","namespace":"shop","name":"orders-0"},"weight":100,"priority":0},
  {"ip":"fd00::2","ports":[{"name":"grpc","port":9090,"protocol":"TCP"}],"ready":true,"serving":true,"terminating":false,
   "zone":null,"node":null,"hostname":null,"targetRef":null,"weight":300,"priority":1,"futureField":{"x":1}}],
 "terminatingFallback":false,"stale":false}`

func TestLookupAndPick(t *testing.T) {
	c := fakeAPI(t, map[string]string{
		"/v1/services/shop/orders":       "200 " + ordersJSON,
		"/v1/services/shop/empty":        `200 {"namespace":"shop","name":"empty","exists":true,"revision":3,"ports":[],"endpoints":[]}`,
		"/v1/services/shop/gone":         `404 {"error":"service shop/gone is not served","code":"service_not_found","exists":false}`,
		"/v1/services/shop/early":        `503 {"error":"the agent has not completed its first sync yet; retry shortly","code":"not_synced"}`,
		"/v1/services/shop/liar":         `200 {"namespace":"shop","name":"other","exists":true,"endpoints":[]}`,
		"/v1/pick/shop/orders?port=grpc": `200 {"namespace":"shop","name":"orders","address":"[fd00::2]:9090","ip":"fd00::2","port":9090,"portName":"grpc"}`,
		"/v1/pick/shop/orders":           `400 {"error":"service shop/orders has several ports; choose one with ?port= (grpc, http)","code":"no_such_port"}`,
		"/v1/pick/shop/gone?port=grpc":   `404 {"error":"service shop/gone is not served","code":"service_not_found"}`,
		"/v1/pick/shop/empty?port=grpc":  `503 {"error":"service shop/empty has no usable endpoint for port \"grpc\"","code":"no_endpoints"}`,
	})
	ctx := context.Background()

	eps, err := c.Lookup(ctx, "orders.shop")
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 2 || eps[0].IP.String() != "10.244.1.11" || eps[1].Weight != 300 || eps[1].Priority != 1 ||
		eps[0].TargetRef == nil || eps[0].TargetRef.Name != "orders-0" || eps[0].Zone != "zone-a" || eps[1].Zone != "" {
		t.Fatalf("Lookup: %+v", eps)
	}
	if addr, ok := eps[1].Address("grpc"); !ok || addr != "[fd00::2]:9090" {
		t.Errorf("Address(grpc) = %q, %t", addr, ok)
	}
	if _, ok := eps[1].Address("http"); ok {
		t.Errorf("endpoint without an http port has an http address")
	}
	if eps, err := c.Lookup(ctx, "empty.shop"); err != nil || eps == nil || len(eps) != 0 {
		t.Errorf("Lookup of a Service without endpoints = %v, %v; want an empty list", eps, err)
	}
	if _, err := c.Lookup(ctx, "gone.shop"); !errors.Is(err, kubedisco.ErrServiceNotFound) {
		t.Errorf("Lookup of an unknown Service: %v, want ErrServiceNotFound", err)
	}
	if _, err := c.Lookup(ctx, "early.shop"); !errors.Is(err, kubedisco.ErrNotSynced) {
		t.Errorf("Lookup before sync: %v, want ErrNotSynced", err)
	}
	if _, err := c.Lookup(ctx, "liar.shop"); err == nil || !strings.Contains(err.Error(), "malformed") {
		t.Errorf("Lookup answered for another Service: %v, want a malformed-answer error", err)
	}
	if _, err := c.Lookup(ctx, "no-namespace"); err == nil {
		t.Errorf("Lookup of a bad name: want an error")
	}

	if addr, err := c.Pick(ctx, "orders.shop", "grpc"); err != nil || addr != "[fd00::2]:9090" {
		t.Errorf("Pick = %q, %v", addr, err)
	}
	if _, err := c.Pick(ctx, "orders.shop", ""); !errors.Is(err, kubedisco.ErrNoSuchPort) {
		t.Errorf("Pick without a port on a two-port Service: %v, want ErrNoSuchPort", err)
	}
	if _, err := c.Pick(ctx, "gone.shop", "grpc"); !errors.Is(err, kubedisco.ErrServiceNotFound) {
		t.Errorf("Pick of an unknown Service: %v, want ErrServiceNotFound", err)
	}
	_, err = c.Pick(ctx, "empty.shop", "grpc")
	var apiErr *kubedisco.APIError
	if !errors.Is(err, kubedisco.ErrNoEndpoints) || !errors.As(err, &apiErr) || apiErr.StatusCode != 503 {
		t.Errorf("Pick with no endpoints: %v, want ErrNoEndpoints from a 503", err)
	}
}

func TestResolvePort(t *testing.T) {
	two := kubedisco.Service{Namespace: "shop", Name: "orders", Exists: true,
		Ports: []kubedisco.ServicePort{{Name: "grpc"}, {Name: "http"}}}
	if p, err := two.ResolvePort("http"); err != nil || p != "http" {
		t.Errorf("ResolvePort(http) = %q, %v", p, err)
	}
	if _, err := two.ResolvePort(""); !errors.Is(err, kubedisco.ErrNoSuchPort) || !strings.Contains(err.Error(), "several ports") {
		t.Errorf("ResolvePort('') on two ports: %v", err)
	}
	if _, err := two.ResolvePort("metrics"); !errors.Is(err, kubedisco.ErrNoSuchPort) || !strings.Contains(err.Error(), "grpc, http") {
		t.Errorf("ResolvePort(metrics): %v", err)
	}
	one := kubedisco.Service{Ports: []kubedisco.ServicePort{{Name: ""}}}
	if p, err := one.ResolvePort(""); err != nil || p != "" {
		t.Errorf("ResolvePort('') on one unnamed port = %q, %v", p, err)
	}
	if _, err := (&kubedisco.Service{}).ResolvePort(""); !errors.Is(err, kubedisco.ErrNoSuchPort) {
		t.Errorf("ResolvePort on a Service without ports: %v", err)
	}
}
