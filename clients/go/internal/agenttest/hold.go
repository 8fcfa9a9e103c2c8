package agenttest

import "sync"

// Hold keeps the calls that reach a test server, up to a number, from
// answering until it is freed: they are in flight when the test kills the
// server.
type Hold struct {
	mu      sync.Mutex
	left    int
	held    int
	release chan struct{}
	freed   bool
}

// NewHold returns a Hold that holds nothing until armed.
func NewHold() *Hold { return &Hold{release: make(chan struct{})} }

// Arm makes the next n calls that Enter wait until Free.
func (h *Hold) Arm(n int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.left = n
}

// Enter is what a server's handler calls first.
func (h *Hold) Enter() {
	h.mu.Lock()
	if h.left == 0 || h.freed {
		h.mu.Unlock()
		return
	}
	h.left--
	h.held++
	h.mu.Unlock()
	<-h.release
}

// Held returns how many calls have been held.
func (h *Hold) Held() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.held
}

// Free lets the held calls go on, and holds no more. It may be called
// more than once.
func (h *Hold) Free() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.freed {
		h.freed = true
		close(h.release)
	}
}
