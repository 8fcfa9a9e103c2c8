package agenttest

import (
	"sync"
	"sync/atomic"
)

// Load calls a function from several goroutines until stopped, as an app
// under steady traffic, so that a test can change something (kill a
// server, say) under it and count what the app saw.
type Load struct {
	ok, failed atomic.Int64
	stop       chan struct{}
	wg         sync.WaitGroup
	halt       func()

	mu       sync.Mutex
	failures []error
}

// StartLoad calls call from workers goroutines until Stop; a call's error
// is a failure.
func StartLoad(workers int, call func() error) *Load {
	l := &Load{stop: make(chan struct{})}
	for range workers {
		l.wg.Go(func() {
			for {
				select {
				case <-l.stop:
					return
				default:
				}
				if err := call(); err != nil {
					l.failed.Add(1)
					l.mu.Lock()
					l.failures = append(l.failures, err)
					l.mu.Unlock()
				} else {
					l.ok.Add(1)
				}
			}
		})
	}
	l.halt = sync.OnceFunc(func() { close(l.stop); l.wg.Wait() })
	return l
}

// Done returns how many calls have ended.
func (l *Load) Done() int64 { return l.ok.Load() + l.failed.Load() }

// Calls returns how many calls have succeeded and failed so far.
func (l *Load) Calls() (ok, failed int64) { return l.ok.Load(), l.failed.Load() }

// FirstErrors returns the first few errors the calls returned.
func (l *Load) FirstErrors() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.failures[:min(len(l.failures), 5)]...)
}

// Stop stops the calls, waits for those in flight, and returns every
// failure's message. It may be called again (deferred, say).
func (l *Load) Stop() []string {
	l.halt()
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, len(l.failures))
	for i, err := range l.failures {
		out[i] = err.Error()
	}
	return out
}
