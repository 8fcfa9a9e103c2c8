package agenttest

import (
	"sync"
	"sync/atomic"
)

// Load makes calls from a few goroutines until it is ended, for tests
// that change something under traffic and count what the app saw.
type Load struct {
	ok, failed atomic.Int64
	stop       chan struct{}
	wg         sync.WaitGroup

	mu   sync.Mutex
	errs []error
}

// StartLoad starts workers goroutines calling call in a loop.
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
					if len(l.errs) < 5 {
						l.errs = append(l.errs, err)
					}
					l.mu.Unlock()
				} else {
					l.ok.Add(1)
				}
			}
		})
	}
	return l
}

// Calls returns how many calls have succeeded and failed so far.
func (l *Load) Calls() (ok, failed int64) { return l.ok.Load(), l.failed.Load() }

// FirstErrors returns the first few errors the calls returned.
func (l *Load) FirstErrors() []error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]error(nil), l.errs...)
}

// End stops the calls and waits for the ones under way.
func (l *Load) End() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	l.wg.Wait()
}
