package kubedisco_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	kubedisco "github.com/kubedisco/kubedisco/clients/go"
	"github.com/kubedisco/kubedisco/clients/go/internal/agenttest"
)

// TestErrorCodesOfARealAgent: the codes a real agent sends before its first
// sync and at its watch-stream cap reach users as the sentinels they mean.
func TestErrorCodesOfARealAgent(t *testing.T) {
	ctx := context.Background()
	unsynced := agenttest.StartUnsyncedAgent(t)
	if _, err := unsynced.Client.Lookup(ctx, "web.e2e"); !errors.Is(err, kubedisco.ErrNotSynced) {
		t.Errorf("Lookup before the first sync: %v, want ErrNotSynced", err)
	}
	_, err := unsynced.Client.Pick(ctx, "web.e2e", "http")
	var apiErr *kubedisco.APIError
	if !errors.Is(err, kubedisco.ErrNotSynced) || errors.Is(err, kubedisco.ErrServiceNotFound) ||
		!errors.As(err, &apiErr) || apiErr.Code != kubedisco.CodeNotSynced || apiErr.RetryAfter <= 0 {
		t.Errorf("Pick before the first sync: %#v, want ErrNotSynced with a Retry-After", err)
	}

	agent := agenttest.StartAgent(t, "--max-watch-streams", "1")
	agent.WriteManifest("web.yaml", agenttest.ServiceYAML("e2e", "web", []string{"http"},
		agenttest.Slice{Name: "web-1", Ports: map[string]int{"http": 8080},
			Endpoints: []agenttest.SliceEndpoint{{IP: "127.0.30.2"}}}))
	agent.WaitService("e2e", "web", 10*time.Second, agenttest.HasIPs("127.0.30.2"))
	holder := newRecorder()
	held := agent.Client.Watch("e2e", "web", holder.options())
	defer held.Stop()
	holder.wait(t, "the first watch's state", func(s []*kubedisco.Service, _ []error) bool { return len(s) > 0 })

	// The second watch is over the cap: an overload it retries, never "no
	// usable endpoints" for a Service that has one.
	refused := newRecorder()
	w := agent.Client.Watch("e2e", "web", refused.options())
	defer w.Stop()
	refused.wait(t, "two refusals", func(_ []*kubedisco.Service, e []error) bool { return len(e) >= 2 })
	refused.mu.Lock()
	errs, states := refused.errs, len(refused.states)
	refused.mu.Unlock()
	for _, err := range errs {
		if !errors.Is(err, kubedisco.ErrOverloaded) || errors.Is(err, kubedisco.ErrNoEndpoints) ||
			!errors.As(err, &apiErr) || apiErr.StatusCode != 503 || apiErr.Code != kubedisco.CodeTooManyWatchStreams {
			t.Errorf("watch over --max-watch-streams: %#v, want ErrOverloaded (too_many_watch_streams)", err)
		}
	}
	if states != 0 {
		t.Errorf("the refused watch got %d states", states)
	}
}

// TestErrorCodes: every code the agent sends means one thing, whatever the
// status and the message say; the message is only for people.
func TestErrorCodes(t *testing.T) {
	sentinels := []error{kubedisco.ErrServiceNotFound, kubedisco.ErrNoEndpoints, kubedisco.ErrNoSuchPort,
		kubedisco.ErrNotSynced, kubedisco.ErrOverloaded, kubedisco.ErrUnavailable, kubedisco.ErrBadRequest}
	for _, c := range []struct {
		status int
		body   string
		code   string
		want   error // nil: an APIError that matches no sentinel
	}{
		{404, `{"error":"service shop/x is not served","code":"service_not_found","exists":false}`, kubedisco.CodeServiceNotFound, kubedisco.ErrServiceNotFound},
		{503, `{"error":"service shop/x has no usable endpoint for port \"http\"","code":"no_endpoints"}`, kubedisco.CodeNoEndpoints, kubedisco.ErrNoEndpoints},
		{400, `{"error":"no port named grpc","code":"no_such_port"}`, kubedisco.CodeNoSuchPort, kubedisco.ErrNoSuchPort},
		{503, `{"error":"the agent has not completed its first sync yet; retry shortly","code":"not_synced"}`, kubedisco.CodeNotSynced, kubedisco.ErrNotSynced},
		// A 503 whose message names no sync and no endpoints: an overload,
		// not "no usable endpoints" (which status guessing made of it).
		{503, `{"error":"too many watch streams (1024 open); retry later","code":"too_many_watch_streams"}`, kubedisco.CodeTooManyWatchStreams, kubedisco.ErrOverloaded},
		{503, `{"error":"too many connections to the agent; retry shortly","code":"too_many_connections"}`, kubedisco.CodeTooManyConnections, kubedisco.ErrOverloaded},
		{431, `{"error":"the request head is larger than 16384 bytes","code":"header_too_large"}`, kubedisco.CodeHeaderTooLarge, nil},
		{503, `{"error":"a limit of a newer agent","code":"too_many_something"}`, "too_many_something", kubedisco.ErrUnavailable},
		{503, `<html>proxy says no</html>`, "", kubedisco.ErrUnavailable},
		// A bad parameter whose message mentions a port is still a bad
		// request, not "no such port".
		{400, `{"error":"invalid port parameter: want a port name","code":"bad_request"}`, kubedisco.CodeBadRequest, kubedisco.ErrBadRequest},
		// "no such route" is a 404 but not a missing Service.
		{404, `{"error":"no such route: GET /v1/pick/shop/x","code":"not_found"}`, kubedisco.CodeNotFound, nil},
		{405, `{"error":"only GET and HEAD","code":"method_not_allowed"}`, kubedisco.CodeMethodNotAllowed, nil},
		{413, `{"error":"request bodies are not allowed","code":"body_not_allowed"}`, kubedisco.CodeBodyNotAllowed, nil},
		{500, `{"error":"internal","code":"error"}`, "error", nil},
		{431, ``, "", nil},
	} {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if c.status == http.StatusServiceUnavailable {
				w.Header().Set("Retry-After", "1")
			}
			w.WriteHeader(c.status)
			fmt.Fprint(w, c.body)
		}))
		client, err := kubedisco.NewClient(srv.URL)
		if err != nil {
			t.Fatal(err)
		}
		_, err = client.Pick(context.Background(), "x.shop", "http")
		srv.Close()
		var apiErr *kubedisco.APIError
		if !errors.As(err, &apiErr) || apiErr.StatusCode != c.status || apiErr.Code != c.code || apiErr.Message == "" {
			t.Errorf("%d %s: %#v, want an APIError with code %q", c.status, c.body, err, c.code)
			continue
		}
		for _, sentinel := range sentinels {
			if got := errors.Is(err, sentinel); got != (sentinel == c.want) {
				t.Errorf("%d %s: errors.Is(%v) = %t", c.status, c.body, sentinel, got)
			}
		}
		if wantRetry := c.status == http.StatusServiceUnavailable; (apiErr.RetryAfter == time.Second) != wantRetry {
			t.Errorf("%d %s: RetryAfter %s", c.status, c.body, apiErr.RetryAfter)
		}
		if c.code != "" && !strings.Contains(err.Error(), c.code) {
			t.Errorf("%d %s: the error text %q does not name the code", c.status, c.body, err)
		}
	}
}
