package agenttest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
)

// FakeAgent serves a scripted /v1/watch stream: each watch connection is
// handed to the test (Next), which decides what goes down it.
type FakeAgent struct {
	*httptest.Server
	t     testing.TB
	conns chan *FakeConn

	mu       sync.Mutex
	statuses []int
	requests int
}

// FakeConn is one watch connection of a FakeAgent.
type FakeConn struct {
	// Path is the request's path.
	Path string
	out  chan string
	end  chan struct{}
	once sync.Once
	// Gone is closed when the client has gone away or End was called.
	Gone chan struct{}
}

// NewFakeAgent starts a FakeAgent, closed when the test ends.
func NewFakeAgent(t testing.TB) *FakeAgent {
	f := &FakeAgent{t: t, conns: make(chan *FakeConn, 16)}
	f.Server = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.Close)
	return f
}

// Reject makes the next watch requests answer these statuses (with a JSON
// error) instead of a stream, one status per request.
func (f *FakeAgent) Reject(statuses ...int) {
	f.mu.Lock()
	f.statuses = append(f.statuses, statuses...)
	f.mu.Unlock()
}

// Requests is the number of watch requests so far.
func (f *FakeAgent) Requests() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.requests
}

// Next returns the next watch connection, failing the test after timeout.
func (f *FakeAgent) Next(timeout time.Duration) *FakeConn {
	f.t.Helper()
	select {
	case c := <-f.conns:
		return c
	case <-time.After(timeout):
		f.t.Fatalf("no watch connection within %s", timeout)
		return nil
	}
}

// NoConnWithin fails the test if a watch connection arrives within d.
func (f *FakeAgent) NoConnWithin(d time.Duration) {
	f.t.Helper()
	select {
	case <-f.conns:
		f.t.Fatalf("unexpected watch connection")
	case <-time.After(d):
	}
}

func (f *FakeAgent) serve(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.requests++
	status := 0
	if len(f.statuses) > 0 {
		status, f.statuses = f.statuses[0], f.statuses[1:]
	}
	f.mu.Unlock()
	if status != 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprintf(w, `{"error":"fake agent says %d"}`, status)
		return
	}
	c := &FakeConn{Path: r.URL.Path, out: make(chan string), end: make(chan struct{}), Gone: make(chan struct{})}
	defer close(c.Gone)
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	f.conns <- c
	for {
		select {
		case line := <-c.out:
			if _, err := fmt.Fprint(w, line); err != nil {
				return
			}
			w.(http.Flusher).Flush()
		case <-c.end:
			return
		case <-r.Context().Done():
			return
		}
	}
}

// Send writes raw text (include the newline) down the stream.
func (c *FakeConn) Send(text string) {
	select {
	case c.out <- text:
	case <-c.Gone:
	}
}

// SendState sends svc as a state line.
func (c *FakeConn) SendState(svc kubedisco.Service) {
	b, err := json.Marshal(map[string]any{"type": "state", "service": svc})
	if err != nil {
		panic(err)
	}
	c.Send(string(b) + "\n")
}

// End ends the stream cleanly, as an agent that shuts down does.
func (c *FakeConn) End() {
	c.once.Do(func() { close(c.end) })
	<-c.Gone
}

// WaitGone fails the test unless the client drops the connection within
// timeout.
func (c *FakeConn) WaitGone(t testing.TB, timeout time.Duration) {
	t.Helper()
	select {
	case <-c.Gone:
	case <-time.After(timeout):
		t.Fatalf("client kept the connection for %s", timeout)
	}
}

// ServiceState builds a Service state with one port "grpc" per endpoint:
// each of addrs is "ip:port".
func ServiceState(namespace, name string, addrs ...string) kubedisco.Service {
	svc := kubedisco.Service{Namespace: namespace, Name: name, Exists: true, Revision: 1, Headless: true,
		Ports: []kubedisco.ServicePort{{Name: "grpc", Port: 9000, Protocol: "TCP"}}, Endpoints: []kubedisco.Endpoint{}}
	for _, a := range addrs {
		var e kubedisco.Endpoint
		ap := netip.MustParseAddrPort(a)
		e.IP, e.Ready, e.Serving, e.Weight = ap.Addr(), true, true, 100
		e.Ports = []kubedisco.EndpointPort{{Name: "grpc", Port: ap.Port(), Protocol: "TCP"}}
		svc.Endpoints = append(svc.Endpoints, e)
	}
	return svc
}
