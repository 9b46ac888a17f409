// The hub wakes waiting calls. A wait subscribes to a signal (a net's for
// its SimServers, a token's for its SimClient, a net's peers for peer
// messages); notify closes the signal's channel, waking every waiter at
// once, with no database polling. Signals without waiters cost nothing.

package main

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
)

type hub struct {
	clock   clockwork.Clock // notifyAt's: the store's clock
	mu      sync.Mutex
	signals map[string]*hubSignal

	// forward, when set, also carries each notify and notifyAt to the
	// other nodes of a shared store (pgbus.go): at is when the waiters
	// should wake, zero for now. The other nodes' wake-ups come back
	// through wake and wakeAt, which do not forward.
	forward atomic.Pointer[func(name string, at time.Time)]
}

type hubSignal struct {
	ch    chan struct{}   // closed by notify, then replaced
	refs  int             // subscribed waiters
	timer clockwork.Timer // a pending notifyAt
	at    time.Time
}

func newHub(clk clockwork.Clock) *hub { return &hub{clock: clk, signals: map[string]*hubSignal{}} }

// subscribe returns a channel that the next notify(name) closes, and a
// release func the waiter must call when done with it. Subscribe before
// looking at the store, so that a change committed in between is not missed.
func (h *hub) subscribe(name string) (<-chan struct{}, func()) {
	h.mu.Lock()
	s := h.signals[name]
	if s == nil {
		s = &hubSignal{ch: make(chan struct{})}
		h.signals[name] = s
	}
	s.refs++
	ch := s.ch
	h.mu.Unlock()

	var once sync.Once
	return ch, func() {
		once.Do(func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			if s.refs--; s.refs == 0 {
				if s.timer != nil {
					s.timer.Stop()
				}
				delete(h.signals, name)
			}
		})
	}
}

// notify wakes every waiter on the signal name, on every node.
func (h *hub) notify(name string) {
	h.wake(name)
	if f := h.forward.Load(); f != nil {
		(*f)(name, time.Time{})
	}
}

// wake wakes every waiter on the signal name on this node.
func (h *hub) wake(name string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.notifyLocked(name)
}

// wakeAll wakes every waiter on this node, whatever it waits for: after a
// node missed the others' wake-ups (its listening connection was lost),
// every wait looks at the store again.
func (h *hub) wakeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for name := range h.signals {
		h.notifyLocked(name)
	}
}

func (h *hub) notifyLocked(name string) {
	if s := h.signals[name]; s != nil {
		close(s.ch)
		s.ch = make(chan struct{})
	}
}

// notifyAt wakes the waiters on name after d of the hub's clock, unless an
// earlier wake is already set. Used for lease deadlines: a waiting SimServer
// must see a request come back when its lease runs out. Without waiters it
// does nothing: a later waiter reads the next deadline from the store itself.
func (h *hub) notifyAt(name string, d time.Duration) {
	if f := h.forward.Load(); f != nil {
		(*f)(name, h.clock.Now().Add(d))
	}
	h.wakeAt(name, d)
}

// wakeAt is notifyAt on this node only.
func (h *hub) wakeAt(name string, d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	s := h.signals[name]
	if s == nil {
		return
	}
	at := h.clock.Now().Add(d)
	if s.timer != nil && !s.at.After(at) {
		return
	}
	if s.timer != nil {
		s.timer.Stop()
	}
	s.at = at
	s.timer = h.clock.AfterFunc(d, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.signals[name] == s {
			s.timer = nil
			h.notifyLocked(name)
		}
	})
}

// size returns the number of signals with waiters.
func (h *hub) size() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.signals)
}

// netSignal wakes the SimServers waiting on a net: a request was queued.
func netSignal(net string) string { return "n:" + net }

// tokenSignal wakes the calls of one token: its answer came, a part of a
// streamed answer was committed, or one of its requests was cancelled.
func tokenSignal(hash []byte) string { return "t:" + string(hash) }

// watchSignal wakes the watch calls of a net's SimServers: a request of
// the net that a SimServer may hold was withdrawn.
func watchSignal(net string) string { return "w:" + net }

// peerSignal wakes the peers of a net waiting for messages: every message
// of the net notifies it, and each waiter reads the message cache (no SQL).
func peerSignal(net string) string { return "p:" + net }
