// The bound on request bodies held at once, relay-wide (--max-inflight-body):
// a call takes its body's length from one budget once its first 64 KiB
// have arrived, and gives them back when the call ends, so that many
// connections sending large bodies at once cannot take the relay's
// memory, and a sender that stalls holds only what it sent.

package main

import (
	"context"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
)

// bodyWait is how long a call waits for its share of the budget before it
// is refused with 503 server_busy: 1 s. A body that a fast client sends is
// read in milliseconds, so a share that does not free within a second is
// held by slow senders, and waiting longer would only hold the connection.
const bodyWait = time.Second

// addrShareDiv sets what one client address may hold of the budget: a
// sixteenth (16 MiB of the default 256 MiB, sixteen of the largest bodies
// at once), so that one address sending slowly cannot take all of it.
const addrShareDiv = 16

// bodyBudget is --max-inflight-body: bytes of request bodies that calls in
// progress may hold, in all and per client address (addrKey).
type bodyBudget struct {
	sem       *semaphore.Weighted
	size      int64
	addrShare int64
	wait      time.Duration // bodyWait; tests shorten it

	mu     sync.Mutex
	byAddr map[netip.Addr]int64 // address -> bytes held; only addresses holding some

	refused atomic.Int64 // calls answered server_busy, for the metrics
	reading atomic.Int64 // calls reading a body under the budget now
}

// newBodyBudget returns a budget of size bytes, or nil for none (size 0).
// largest is the largest body a call may send: an address may always
// hold one.
func newBodyBudget(size, largest int64) *bodyBudget {
	if size <= 0 {
		return nil
	}
	return &bodyBudget{sem: semaphore.NewWeighted(size), size: size, wait: bodyWait,
		addrShare: max(size/addrShareDiv, largest), byAddr: map[netip.Addr]int64{}}
}

// bodyHold is the bytes of the budget held by one call: they grow as its
// body arrives (grow; readGrowing says when).
type bodyHold struct {
	b        *bodyBudget
	ctx      context.Context
	addr     netip.Addr
	n        int64
	released bool
}

// holdStep is how much of its body a call reads before it holds its whole
// length: 64 KiB. Bodies of at most this length are not held at all.
const holdStep = 64 << 10

// grow holds n more bytes for h's call, waiting up to b.wait for them. An
// address already holding its share is refused at once. It fails with
// errServerBusy, or the context's error when the client went away. Safe
// on nil (no budget).
func (h *bodyHold) grow(n int64) error {
	if h == nil || n == 0 {
		return nil
	}
	b := h.b
	b.mu.Lock()
	if b.byAddr[h.addr]+n > b.addrShare {
		b.mu.Unlock()
		b.refused.Add(1)
		return errServerBusy
	}
	b.byAddr[h.addr] += n
	b.mu.Unlock()
	wctx, cancel := context.WithTimeout(h.ctx, b.wait)
	defer cancel()
	if err := b.sem.Acquire(wctx, n); err != nil {
		b.giveAddr(h.addr, n)
		if h.ctx.Err() != nil {
			return h.ctx.Err()
		}
		b.refused.Add(1)
		return errServerBusy
	}
	h.n += n
	return nil
}

// giveAddr gives n bytes back to addr's share.
func (b *bodyBudget) giveAddr(addr netip.Addr, n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.byAddr[addr] -= n; b.byAddr[addr] <= 0 {
		delete(b.byAddr, addr)
	}
}

// keep shrinks the hold to n bytes, once the body is read and shorter
// than was held for it (a body sent without a length).
func (h *bodyHold) keep(n int64) {
	if h == nil || n >= h.n {
		return
	}
	h.b.sem.Release(h.n - n)
	h.b.giveAddr(h.addr, h.n-n)
	h.n = n
}

// release gives the hold back; safe on nil and more than once.
func (h *bodyHold) release() {
	if h == nil || h.released {
		return
	}
	h.released = true
	h.b.reading.Add(-1)
	if h.n > 0 {
		h.b.sem.Release(h.n)
		h.b.giveAddr(h.addr, h.n)
		h.n = 0
	}
}

// refusals returns the calls answered server_busy; 0 for no budget.
func (b *bodyBudget) refusals() int64 {
	if b == nil {
		return 0
	}
	return b.refused.Load()
}

// held returns the bytes held now, in all.
func (b *bodyBudget) held() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	var n int64
	for _, v := range b.byAddr {
		n += v
	}
	return n
}

type bodyBudgetKey struct{}

// withBodyBudget gives the calls of next the budget b (nil: none), which
// readBody takes from.
func withBodyBudget(b *bodyBudget, next http.Handler) http.Handler {
	if b == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), bodyBudgetKey{}, b)))
	})
}

// holdBody starts the hold of r's body on r's budget: it holds nothing
// yet, and grows as the body is read (readHeld). No budget, no body, or a
// body of at most holdStep by its Content-Length: a nil hold, which holds
// nothing.
func holdBody(r *http.Request, limit int64) (*bodyHold, error) {
	b, _ := r.Context().Value(bodyBudgetKey{}).(*bodyBudget)
	if b == nil || r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 || r.ContentLength > limit {
		return nil, nil // nothing to read, or 413 without reading it
	}
	if r.ContentLength > 0 && r.ContentLength <= holdStep {
		// A small body is not held: the calls a SimServer and its
		// SimClients make all the time are never refused for bodies others
		// hold. What small bodies take is bounded by the connection caps.
		return nil, nil
	}
	addr, ok := callClient(r, nil)
	if ok {
		addr = addrKey(addr)
	}
	b.reading.Add(1)
	return &bodyHold{b: b, ctx: r.Context(), addr: addr}, nil
}
