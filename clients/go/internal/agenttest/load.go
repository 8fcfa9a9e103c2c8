package agenttest

import (
	"sync"
	"sync/atomic"
)

// Load calls a function from several goroutines until stopped, as an
// app under steady traffic, so that a test can kill a server under it.
type Load struct {
	done     atomic.Int64
	mu       sync.Mutex
	failures []string
	stop     chan struct{}
	wg       sync.WaitGroup
	halt     func()
}

// StartLoad calls call from workers goroutines until Stop; a call's
// error is a failure.
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
				err := call()
				l.done.Add(1)
				if err != nil {
					l.mu.Lock()
					l.failures = append(l.failures, err.Error())
					l.mu.Unlock()
				}
			}
		})
	}
	l.halt = sync.OnceFunc(func() { close(l.stop); l.wg.Wait() })
	return l
}

// Done returns how many calls have ended.
func (l *Load) Done() int64 { return l.done.Load() }

// Stop stops the calls, waits for those in flight, and returns the
// failures. It may be called again (deferred, say).
func (l *Load) Stop() []string {
	l.halt()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.failures
}
