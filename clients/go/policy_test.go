package kubedisco_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
)

// TestServicePolicy: the base a framework adapter passes in, with the
// defaults where it says nothing and the Service's overrides over it; the
// retry budget of a new Service is its burst, then 20% of the requests.
func TestServicePolicy(t *testing.T) {
	agent := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/services/shop/orders" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"namespace":"shop","name":"orders","exists":true,"revision":1,"ports":[],"endpoints":[],
			"resilience":{"outlier":{"consecutiveFailures":2,"baseEjectionTime":"10s"},"retry":{"maxAttempts":1}}}`))
	}))
	defer agent.Close()
	client, err := kubedisco.NewClient(agent.URL)
	if err != nil {
		t.Fatal(err)
	}
	base := &kubedisco.Resilience{PerTryTimeout: time.Second, ConsecutiveFailures: 7}

	got := kubedisco.NewServicePolicy(client, "orders.shop", base).Current(context.Background())
	if got.ConsecutiveFailures != 2 || got.BaseEjectionTime != 10*time.Second || got.MaxAttempts != 1 ||
		got.PerTryTimeout != time.Second || got.MaxEjectionPercent != 50 {
		t.Fatalf("with overrides: %+v; want consecutive 2, ejection 10s, 1 attempt (the Service's), per-try 1s (the base's), 50%% (the default)", got)
	}
	if got := kubedisco.NewServicePolicy(nil, "orders.shop", base).Current(context.Background()); got.ConsecutiveFailures != 7 || got.MaxAttempts != 3 {
		t.Fatalf("without a client: %+v; want the base and the defaults", got)
	}

	p := kubedisco.NewServicePolicy(nil, "orders.shop", nil)
	r := p.Current(context.Background())
	retries := 0
	for range 100 {
		p.Deposit(&r)
		if p.Withdraw() {
			retries++
		}
	}
	// 0.2 is not exact in binary: five deposits come a hair short of one
	// retry, so the last one may fall just short.
	if retries < 10+20-1 || retries > 10+20 {
		t.Fatalf("a retry after each of 100 requests: %d allowed; want the burst of 10 and 20%% of them", retries)
	}
}
