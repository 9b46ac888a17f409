// The hub wakes long polls. Waiters subscribe to a key (a net for SimServers,
// a token for SimClients, a net's peers for peer messages); a notify closes the key's channel, waking every
// waiter at once, with no database polling. Keys without waiters cost nothing.

package main

import (
	"sync"
	"time"
)

type hub struct {
	mu   sync.Mutex
	keys map[string]*hubKey
}

type hubKey struct {
	ch    chan struct{} // closed by notify, then replaced
	refs  int           // subscribed waiters
	timer *time.Timer   // a pending notifyAt
	at    time.Time
}

func newHub() *hub { return &hub{keys: map[string]*hubKey{}} }

// subscribe returns a channel that the next notify(key) closes, and a release
// func the waiter must call when done with it. Subscribe before looking at
// the store, so that a change committed in between is not missed.
func (h *hub) subscribe(key string) (<-chan struct{}, func()) {
	h.mu.Lock()
	k := h.keys[key]
	if k == nil {
		k = &hubKey{ch: make(chan struct{})}
		h.keys[key] = k
	}
	k.refs++
	ch := k.ch
	h.mu.Unlock()

	var once sync.Once
	return ch, func() {
		once.Do(func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			if k.refs--; k.refs == 0 {
				if k.timer != nil {
					k.timer.Stop()
				}
				delete(h.keys, key)
			}
		})
	}
}

// notify wakes every waiter on key.
func (h *hub) notify(key string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.notifyLocked(key)
}

func (h *hub) notifyLocked(key string) {
	if k := h.keys[key]; k != nil {
		close(k.ch)
		k.ch = make(chan struct{})
	}
}

// notifyAt wakes the waiters on key after d, unless an earlier wake is
// already set. Used for lease deadlines: a waiting SimServer must see a
// request come back when its lease runs out. Without waiters it does nothing:
// a later waiter reads the next deadline from the store itself.
func (h *hub) notifyAt(key string, d time.Duration) {
	h.mu.Lock()
	defer h.mu.Unlock()
	k := h.keys[key]
	if k == nil {
		return
	}
	at := time.Now().Add(d)
	if k.timer != nil && !k.at.After(at) {
		return
	}
	if k.timer != nil {
		k.timer.Stop()
	}
	k.at = at
	k.timer = time.AfterFunc(d, func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		if h.keys[key] == k {
			k.timer = nil
			h.notifyLocked(key)
		}
	})
}

// size returns the number of keys with waiters.
func (h *hub) size() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.keys)
}

func netKey(net string) string    { return "n:" + net }
func tokenKey(hash []byte) string { return "t:" + string(hash) }

// peerKey wakes the peers of a net waiting for messages: every message of
// the net notifies it, and each waiter reads the message cache (no SQL).
func peerKey(net string) string { return "p:" + net }
