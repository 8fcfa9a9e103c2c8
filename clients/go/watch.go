package kubedisco

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"
)

// maxLine bounds one line of a watch stream (one full Service state).
const maxLine = 64 << 20

// Defaults of WatchOptions.
const (
	DefaultMinBackoff       = 100 * time.Millisecond
	DefaultMaxBackoff       = 3 * time.Second
	DefaultHeartbeatTimeout = 45 * time.Second
)

// ErrStreamEnded is reported when the agent ends a watch stream (it does
// so when it shuts down); the watch reconnects.
var ErrStreamEnded = errors.New("kubedisco: the agent ended the watch stream")

// MalformedError is reported when a watch stream carries data that is not a
// valid state: the connection is dropped (without applying anything from
// it) and the watch reconnects, with growing backoff.
type MalformedError struct {
	// Reason says what was wrong.
	Reason string
}

// Error implements error.
func (e *MalformedError) Error() string {
	return "kubedisco: malformed watch stream data: " + e.Reason
}

// WatchOptions configures Client.Watch.
type WatchOptions struct {
	// OnState is called with every state the agent sends: the full state
	// when a connection opens (also after each reconnect), then the full
	// state after each change. Calls are serialised, from one goroutine.
	OnState func(*Service)
	// OnError is called when a connection fails, breaks or carries
	// malformed data; the watch then reconnects by itself. It is called from
	// the same goroutine as OnState. Optional.
	OnError func(error)
	// MinBackoff and MaxBackoff bound the wait between reconnects: it
	// starts at MinBackoff, doubles after each failure up to MaxBackoff,
	// and each wait is jittered to between half and all of it. A connection
	// that delivers a valid state resets it. Defaults 100ms and 3s.
	MinBackoff, MaxBackoff time.Duration
	// HeartbeatTimeout is how long a connection may carry nothing (the agent
	// sends a heartbeat every 15s) before it is taken for dead and
	// replaced. Default 45s.
	HeartbeatTimeout time.Duration
}

// Watch follows one Service on the agent, across disconnects and agent
// restarts, until Stop.
type Watch struct {
	client    *Client
	namespace string
	name      string
	opts      WatchOptions
	retry     chan struct{}
	cancel    context.CancelFunc
	done      chan struct{}
}

// Watch starts following the Service namespace/name: it opens the agent's
// watch stream (GET /v1/watch/{namespace}/{name}) and calls opts.OnState
// with each state, reconnecting with jittered backoff whenever the stream
// breaks. It never calls OnState with anything but a complete, valid state
// from the agent: across an agent restart the last state simply stays the
// last one until the new agent sends its own.
func (c *Client) Watch(namespace, name string, opts WatchOptions) *Watch {
	if opts.MinBackoff <= 0 {
		opts.MinBackoff = DefaultMinBackoff
	}
	if opts.MaxBackoff < opts.MinBackoff {
		opts.MaxBackoff = max(DefaultMaxBackoff, opts.MinBackoff)
	}
	if opts.HeartbeatTimeout <= 0 {
		opts.HeartbeatTimeout = DefaultHeartbeatTimeout
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &Watch{
		client:    c,
		namespace: namespace,
		name:      name,
		opts:      opts,
		retry:     make(chan struct{}, 1),
		cancel:    cancel,
		done:      make(chan struct{}),
	}
	go w.run(ctx)
	return w
}

// RetryNow ends a wait between reconnects early (but not sooner than
// MinBackoff after the previous attempt). It does nothing while connected.
func (w *Watch) RetryNow() {
	select {
	case w.retry <- struct{}{}:
	default:
	}
}

// Stop ends the watch and waits until no callback is running or will run.
func (w *Watch) Stop() {
	w.cancel()
	<-w.done
}

func (w *Watch) run(ctx context.Context) {
	defer close(w.done)
	backoff := w.opts.MinBackoff
	for {
		// A retry asked for while connected is stale.
		select {
		case <-w.retry:
		default:
		}
		attempt := time.Now()
		gotState, err := w.stream(ctx)
		if ctx.Err() != nil {
			return
		}
		if err == nil {
			err = ErrStreamEnded
		}
		if w.opts.OnError != nil {
			w.opts.OnError(err)
		}
		var malformed *MalformedError
		if gotState && !errors.As(err, &malformed) {
			backoff = w.opts.MinBackoff
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		backoff = min(2*backoff, w.opts.MaxBackoff)
		if !w.sleep(ctx, wait, attempt) {
			return
		}
	}
}

// sleep waits d, or less when RetryNow is called; false when ctx ends.
func (w *Watch) sleep(ctx context.Context, d time.Duration, attempt time.Time) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-timer.C:
			return true
		case <-w.retry:
			early := time.Until(attempt.Add(w.opts.MinBackoff))
			if early <= 0 {
				return true
			}
			timer.Reset(min(early, d))
		}
	}
}

// stream runs one connection: it returns whether a valid state came, and
// why the connection ended (nil for a clean end of stream).
func (w *Watch) stream(ctx context.Context) (gotState bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var silent atomic.Bool
	watchdog := time.AfterFunc(w.opts.HeartbeatTimeout, func() {
		silent.Store(true)
		cancel()
	})
	defer watchdog.Stop()
	deadErr := func(err error) error {
		if silent.Load() {
			return fmt.Errorf("kubedisco: no data from the agent at %s for %s: %w", w.client.base, w.opts.HeartbeatTimeout, err)
		}
		return fmt.Errorf("kubedisco: agent at %s: %w", w.client.base, err)
	}

	path := "/v1/watch/" + url.PathEscape(w.namespace) + "/" + url.PathEscape(w.name) + "?format=ndjson"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.client.base+path, nil)
	if err != nil {
		return false, fmt.Errorf("kubedisco: %w", err)
	}
	req.Header.Set("Accept", "application/x-ndjson")
	resp, err := w.client.http.Do(req)
	if err != nil {
		return false, deadErr(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, readAPIError(resp)
	}

	reader := bufio.NewReaderSize(resp.Body, 64<<10)
	for {
		line, err := readLine(reader)
		if err != nil {
			if errors.Is(err, io.EOF) && ctx.Err() == nil {
				if len(bytes.TrimSpace(line)) > 0 {
					return gotState, &MalformedError{Reason: "stream ended inside a line"}
				}
				return gotState, nil
			}
			var malformed *MalformedError
			if errors.As(err, &malformed) {
				return gotState, err
			}
			return gotState, deadErr(err)
		}
		watchdog.Reset(w.opts.HeartbeatTimeout)
		svc, err := decodeLine(line, w.namespace, w.name)
		if err != nil {
			return gotState, err
		}
		if svc != nil {
			w.opts.OnState(svc)
			gotState = true
		}
	}
}

// readLine reads one line (without its newline), at most maxLine long.
func readLine(r *bufio.Reader) ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxLine {
			return nil, &MalformedError{Reason: fmt.Sprintf("a line longer than %d bytes", maxLine)}
		}
		switch {
		case err == nil:
			return line[:len(line)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		default:
			return line, err
		}
	}
}

// decodeLine decodes one NDJSON line: a state (returned), a heartbeat or an
// unknown type (nil, nil: ignored, for forward compatibility), or garbage
// (a *MalformedError).
func decodeLine(line []byte, namespace, name string) (*Service, error) {
	line = bytes.TrimSpace(line)
	if len(line) == 0 {
		return nil, nil
	}
	var msg struct {
		Type    string          `json:"type"`
		Service json.RawMessage `json:"service"`
	}
	if err := json.Unmarshal(line, &msg); err != nil {
		return nil, &MalformedError{Reason: fmt.Sprintf("%v in %q", err, truncate(line))}
	}
	switch msg.Type {
	case "state":
	case "":
		return nil, &MalformedError{Reason: fmt.Sprintf("a line without a type: %q", truncate(line))}
	default:
		return nil, nil
	}
	if len(msg.Service) == 0 || bytes.Equal(msg.Service, []byte("null")) {
		return nil, &MalformedError{Reason: "a state without a service"}
	}
	var svc Service
	if err := json.Unmarshal(msg.Service, &svc); err != nil {
		return nil, &MalformedError{Reason: fmt.Sprintf("state: %v", err)}
	}
	if err := svc.validate(namespace, name); err != nil {
		return nil, &MalformedError{Reason: "state: " + err.Error()}
	}
	return &svc, nil
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}
