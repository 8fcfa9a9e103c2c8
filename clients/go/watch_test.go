package kubedisco_test

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
)

// recorder collects what a Watch reports.
type recorder struct {
	mu     sync.Mutex
	states []*kubedisco.Service
	errs   []error
	signal chan struct{}
}

func newRecorder() *recorder { return &recorder{signal: make(chan struct{}, 1000)} }

func (r *recorder) options() kubedisco.WatchOptions {
	return kubedisco.WatchOptions{
		OnState: func(s *kubedisco.Service) {
			r.mu.Lock()
			r.states = append(r.states, s)
			r.mu.Unlock()
			r.signal <- struct{}{}
		},
		OnError: func(err error) {
			r.mu.Lock()
			r.errs = append(r.errs, err)
			r.mu.Unlock()
			r.signal <- struct{}{}
		},
		MinBackoff: 10 * time.Millisecond,
		MaxBackoff: 50 * time.Millisecond,
	}
}

// wait polls until cond holds on what was recorded, or fails after 5s.
func (r *recorder) wait(t *testing.T, what string, cond func(states []*kubedisco.Service, errs []error) bool) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		r.mu.Lock()
		ok := cond(r.states, r.errs)
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-r.signal:
		case <-deadline:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("timed out waiting for %s; states %d, errors %v", what, len(r.states), r.errs)
		}
	}
}

func (r *recorder) revisions() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []uint64
	for _, s := range r.states {
		out = append(out, s.Revision)
	}
	return out
}

func startWatch(t *testing.T, fake *agenttest.FakeAgent, rec *recorder, tweak func(*kubedisco.WatchOptions)) *kubedisco.Watch {
	t.Helper()
	c, err := kubedisco.NewClient(fake.URL)
	if err != nil {
		t.Fatal(err)
	}
	opts := rec.options()
	if tweak != nil {
		tweak(&opts)
	}
	w := c.Watch("shop", "orders", opts)
	t.Cleanup(w.Stop)
	return w
}

func state(rev uint64, addrs ...string) kubedisco.Service {
	s := agenttest.ServiceState("shop", "orders", addrs...)
	s.Revision = rev
	return s
}

func TestWatchReconnectsAndKeepsGoing(t *testing.T) {
	fake := agenttest.NewFakeAgent(t)
	rec := newRecorder()
	startWatch(t, fake, rec, nil)

	conn := fake.Next(5 * time.Second)
	if conn.Path != "/v1/watch/shop/orders" {
		t.Fatalf("watch path %q", conn.Path)
	}
	conn.SendState(state(1, "10.0.0.1:9000"))
	conn.Send(`{"type":"heartbeat"}` + "\n")
	conn.SendState(state(2, "10.0.0.1:9000", "10.0.0.2:9000"))
	rec.wait(t, "two states", func(s []*kubedisco.Service, _ []error) bool { return len(s) == 2 })

	// The agent shuts down: a clean end of stream. Then it is unreachable
	// for a while, then not synced yet, then back (with revisions that
	// started again from 1).
	fake.Reject(502, 503)
	conn.End()
	conn = fake.Next(5 * time.Second)
	rec.wait(t, "the errors of the outage", func(_ []*kubedisco.Service, e []error) bool { return len(e) == 3 })
	rec.mu.Lock()
	errs := rec.errs
	rec.mu.Unlock()
	var apiErr *kubedisco.APIError
	if !errors.Is(errs[0], kubedisco.ErrStreamEnded) || !errors.As(errs[1], &apiErr) || apiErr.StatusCode != 502 ||
		!errors.As(errs[2], &apiErr) || apiErr.StatusCode != 503 {
		t.Fatalf("errors %v", errs)
	}
	if got := rec.revisions(); len(got) != 2 {
		t.Fatalf("states during the outage: revisions %v", got)
	}
	conn.SendState(state(1, "10.0.0.3:9000"))
	rec.wait(t, "the new agent's state", func(s []*kubedisco.Service, _ []error) bool { return len(s) == 3 })
	if got := rec.states[2].Endpoints[0].IP.String(); got != "10.0.0.3" {
		t.Fatalf("state after reconnect has %s", got)
	}
	if got := fake.Requests(); got != 4 {
		t.Errorf("watch requests %d, want 4", got)
	}
}

func TestWatchDropsMalformedStreams(t *testing.T) {
	good := `{"type":"state","service":{"namespace":"shop","name":"orders","exists":true,"revision":9,"ports":[],"endpoints":[]}}`
	bad := map[string]string{
		"not JSON":               "this is not json\n",
		"truncated JSON":         `{"type":"state","service":{"namespace":"shop"` + "\n",
		"no type":                `{"service":{}}` + "\n",
		"state without service":  `{"type":"state"}` + "\n",
		"null service":           `{"type":"state","service":null}` + "\n",
		"another Service":        strings.Replace(good, `"orders"`, `"payments"`, 1) + "\n",
		"bad ip":                 strings.Replace(good, `"endpoints":[]`, `"endpoints":[{"ip":"10.0.0.300","ports":[]}]`, 1) + "\n",
		"missing ip":             strings.Replace(good, `"endpoints":[]`, `"endpoints":[{"ports":[]}]`, 1) + "\n",
		"port 0":                 strings.Replace(good, `"endpoints":[]`, `"endpoints":[{"ip":"10.0.0.1","ports":[{"name":"grpc","port":0}]}]`, 1) + "\n",
		"port out of range":      strings.Replace(good, `"endpoints":[]`, `"endpoints":[{"ip":"10.0.0.1","ports":[{"name":"grpc","port":70000}]}]`, 1) + "\n",
		"negative weight":        strings.Replace(good, `"endpoints":[]`, `"endpoints":[{"ip":"10.0.0.1","weight":-1}]`, 1) + "\n",
		"weight as text":         strings.Replace(good, `"endpoints":[]`, `"endpoints":[{"ip":"10.0.0.1","weight":"100"}]`, 1) + "\n",
		"endpoints not a list":   strings.Replace(good, `"endpoints":[]`, `"endpoints":{}`, 1) + "\n",
		"absent with endpoints":  strings.Replace(strings.Replace(good, `"exists":true`, `"exists":false`, 1), `"endpoints":[]`, `"endpoints":[{"ip":"10.0.0.1"}]`, 1) + "\n",
		"cut off mid-line (EOF)": `{"type":"state","serv`,
	}
	for name, line := range bad {
		t.Run(name, func(t *testing.T) {
			fake := agenttest.NewFakeAgent(t)
			rec := newRecorder()
			startWatch(t, fake, rec, nil)
			conn := fake.Next(5 * time.Second)
			conn.SendState(state(1, "10.0.0.1:9000"))
			rec.wait(t, "the first state", func(s []*kubedisco.Service, _ []error) bool { return len(s) == 1 })
			// Lines of unknown types and heartbeats are ignored, not errors.
			conn.Send(`{"type":"something-new","x":1}` + "\n" + `{"type":"heartbeat"}` + "\n\n")
			conn.Send(line)
			if strings.HasSuffix(line, "\n") {
				conn.WaitGone(t, 5*time.Second)
			} else {
				conn.End()
			}
			conn2 := fake.Next(5 * time.Second)
			rec.wait(t, "a malformed-data error", func(_ []*kubedisco.Service, e []error) bool { return len(e) == 1 })
			var malformed *kubedisco.MalformedError
			if !errors.As(rec.errs[0], &malformed) {
				t.Fatalf("error %v, want a MalformedError", rec.errs[0])
			}
			conn2.SendState(state(2, "10.0.0.2:9000"))
			rec.wait(t, "the state after reconnecting", func(s []*kubedisco.Service, _ []error) bool { return len(s) == 2 })
			if got := rec.revisions(); got[0] != 1 || got[1] != 2 {
				t.Fatalf("revisions %v: something from the malformed stream was applied", got)
			}
		})
	}
}

func TestWatchReplacesASilentConnection(t *testing.T) {
	fake := agenttest.NewFakeAgent(t)
	rec := newRecorder()
	startWatch(t, fake, rec, func(o *kubedisco.WatchOptions) { o.HeartbeatTimeout = 300 * time.Millisecond })
	conn := fake.Next(5 * time.Second)
	conn.SendState(state(1, "10.0.0.1:9000"))

	// Heartbeats keep the connection alive well past the timeout...
	ticker := time.NewTicker(50 * time.Millisecond)
	for range 20 {
		<-ticker.C
		conn.Send(`{"type":"heartbeat"}` + "\n")
	}
	ticker.Stop()
	select {
	case <-conn.Gone:
		t.Fatal("the connection was dropped although heartbeats came")
	default:
	}
	// ...silence does not.
	conn.WaitGone(t, 5*time.Second)
	fake.Next(5 * time.Second).SendState(state(2, "10.0.0.1:9000"))
	rec.wait(t, "the state after reconnecting", func(s []*kubedisco.Service, _ []error) bool { return len(s) == 2 })
	if !strings.Contains(rec.errs[0].Error(), "no data from the agent") {
		t.Errorf("error %v, want one about silence", rec.errs[0])
	}
}

func TestWatchRetryNowCutsTheBackoffShort(t *testing.T) {
	fake := agenttest.NewFakeAgent(t)
	rec := newRecorder()
	fake.Reject(500, 500, 500, 500, 500, 500, 500, 500, 500)
	w := startWatch(t, fake, rec, func(o *kubedisco.WatchOptions) {
		o.MinBackoff, o.MaxBackoff = 10*time.Millisecond, time.Hour
	})
	// Nine failures: the next wait is 1.28s to 2.56s.
	rec.wait(t, "nine failures", func(_ []*kubedisco.Service, e []error) bool { return len(e) == 9 })
	start := time.Now()
	w.RetryNow()
	fake.Next(5 * time.Second)
	if waited := time.Since(start); waited > time.Second {
		t.Errorf("RetryNow: reconnected after %s", waited)
	}
}

func TestWatchStopEndsTheStream(t *testing.T) {
	fake := agenttest.NewFakeAgent(t)
	rec := newRecorder()
	w := startWatch(t, fake, rec, nil)
	conn := fake.Next(5 * time.Second)
	conn.SendState(state(1))
	rec.wait(t, "the first state", func(s []*kubedisco.Service, _ []error) bool { return len(s) == 1 })
	w.Stop()
	conn.WaitGone(t, 5*time.Second)
	fake.NoConnWithin(100 * time.Millisecond)
	if len(rec.errs) != 0 {
		t.Errorf("errors after Stop: %v", rec.errs)
	}
}
