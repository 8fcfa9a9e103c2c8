package gokit_test

import (
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	"github.com/go-kit/kit/sd"
	"github.com/go-kit/kit/sd/lb"

	"github.com/kubedisco/kubedisco/clients/go/gokit"
)

// sequence is a balancer handing out endpoints in a fixed order, as a
// round robin shared with other callers may: "bad" again right after a
// call failed on it.
type sequence struct {
	mu    sync.Mutex
	order []endpoint.Endpoint
	next  int
}

func (s *sequence) Endpoint() (endpoint.Endpoint, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ep := s.order[s.next%len(s.order)]
	s.next++
	return ep, nil
}

// instances makes endpoints through f for two in-memory instances: "bad"
// fails every call, "good" answers; calls counts the calls each got.
func instances(t *testing.T, f func(sd.Factory) sd.Factory) (bad, good endpoint.Endpoint, calls map[string]int) {
	t.Helper()
	var mu sync.Mutex
	calls = map[string]int{}
	factory := f(func(instance string) (endpoint.Endpoint, io.Closer, error) {
		return func(context.Context, any) (any, error) {
			mu.Lock()
			calls[instance]++
			mu.Unlock()
			if instance == "bad" {
				return nil, errors.New("bad failed")
			}
			return instance, nil
		}, nil, nil
	})
	bad, _, _ = factory("bad")
	good, _, _ = factory("good")
	return bad, good, calls
}

func TestRetryGoesToAnotherInstance(t *testing.T) {
	bad, good, calls := instances(t, gokit.Track)
	b := &sequence{order: []endpoint.Endpoint{bad, bad, bad, good}}

	// lb.Retry takes the balancer's next endpoint: bad again, twice.
	if _, err := lb.Retry(3, time.Second, b)(context.Background(), nil); err == nil {
		t.Fatal("lb.Retry over bad, bad, bad succeeded; the test's premise is wrong")
	}
	b.next = 0
	for k := range calls {
		delete(calls, k)
	}
	const n = 100
	for range n {
		resp, err := gokit.Retry(2, time.Second, b)(context.Background(), nil)
		if err != nil || resp != "good" {
			t.Fatalf("gokit.Retry(2) over bad, bad, bad, good: %v, %v; want the second attempt on good", resp, err)
		}
	}
	if calls["bad"] > n || calls["good"] != n {
		t.Fatalf("calls %v for %d Retry calls; want bad tried at most once per call", calls, n)
	}
}

func TestRetryWithOneInstanceTriesItAgain(t *testing.T) {
	bad, _, calls := instances(t, gokit.Track)
	_, err := gokit.Retry(3, time.Second, &sequence{order: []endpoint.Endpoint{bad}})(context.Background(), nil)
	var re lb.RetryError
	if !errors.As(err, &re) || len(re.RawErrors) != 3 || calls["bad"] != 3 {
		t.Fatalf("Retry(3) with one failing instance: %v, %d calls; want 3 attempts on it, a RetryError", err, calls["bad"])
	}
}

// TestRetryOfUntrackedEndpoints: endpoints of a plain factory do not know
// their instance; Retry then retries as lb.Retry does.
func TestRetryOfUntrackedEndpoints(t *testing.T) {
	plain := func(f sd.Factory) sd.Factory { return f }
	bad, good, calls := instances(t, plain)
	resp, err := gokit.Retry(3, time.Second, &sequence{order: []endpoint.Endpoint{bad, bad, good}})(context.Background(), nil)
	if err != nil || resp != "good" || calls["bad"] != 2 {
		t.Fatalf("untracked: %v, %v, calls %v; want bad twice, then good", resp, err, calls)
	}
}
