// Long polls: one loop for every waiting call. A poll subscribes to its hub
// key, looks at the store, and sleeps in one select on the client's context,
// the relay's shutdown, the hub's wake-up and a timer.

package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// pollKind names what a long poll waits for, for the metrics. Each kind is
// a label value: a handful, never a net, token or rid.
type pollKind string

const (
	pollClient pollKind = "client_pullsmart"    // pullres and pullsmart
	pollServer pollKind = "server_pullreqsmart" // pullreqsmart
	pollVia    pollKind = "via"                 // a /via/ request waiting for its answer
	pollPeer   pollKind = "peer_pullsmart"      // peer messages by long poll
	pollStream pollKind = "peer_stream"         // peer messages as an event stream
)

// poller runs long polls and stops them all at shutdown.
type poller struct {
	hub     *hub
	maxWait time.Duration
	now     func() time.Time // the store's clock, to turn its deadlines into timers
	done    chan struct{}    // closed at shutdown: open polls answer at once
	once    sync.Once
	open    atomic.Int64 // long polls in progress
	byKind  sync.Map     // pollKind -> *atomic.Int64: long polls in progress
}

func newPoller(h *hub, maxWait time.Duration, now func() time.Time) *poller {
	lp := &poller{hub: h, maxWait: maxWait, now: now, done: make(chan struct{})}
	for _, k := range []pollKind{pollClient, pollServer, pollVia, pollPeer, pollStream} {
		lp.kind(k) // known kinds show as 0 before their first poll
	}
	return lp
}

func (lp *poller) kind(k pollKind) *atomic.Int64 {
	if n, ok := lp.byKind.Load(k); ok {
		return n.(*atomic.Int64)
	}
	n, _ := lp.byKind.LoadOrStore(k, new(atomic.Int64))
	return n.(*atomic.Int64)
}

// openByKind calls fn with the long polls in progress of every kind seen.
func (lp *poller) openByKind(fn func(k pollKind, n int64)) {
	lp.byKind.Range(func(k, n any) bool {
		fn(k.(pollKind), n.(*atomic.Int64).Load())
		return true
	})
}

// shutdown answers every open long poll and every later one at once.
func (lp *poller) shutdown() { lp.once.Do(func() { close(lp.done) }) }

// enter counts a long poll of kind as open and takes one of its token's
// poll slots (--max-polls-per-token) when the call has one; leave undoes
// both.
func (lp *poller) enter(c *call, kind pollKind) (leave func(), err error) {
	release := func() {}
	if c != nil {
		if release, err = c.lim.takePollSlot(c.token); err != nil {
			return nil, err
		}
	}
	n := lp.kind(kind)
	n.Add(1)
	lp.open.Add(1)
	return func() { lp.open.Add(-1); n.Add(-1); release() }, nil
}

// stopping reports whether the relay is shutting down.
func (lp *poller) stopping() bool {
	select {
	case <-lp.done:
		return true
	default:
		return false
	}
}

// poll calls try until it reports done, for at most wait. try runs at once
// and again whenever key is notified or the time it names (the next moment
// its answer changes by itself, zero for none) arrives. poll reports false
// when wait ran out or the relay is shutting down, and the context's error
// when the client went away.
//
// A poll that may wait (wait > 0) in a call charged to a token takes one of
// the token's --max-polls-per-token slots first, or fails with 429
// too_many_polls before try runs. Time spent parked is kept out of the
// call's relay overhead.
func (lp *poller) poll(ctx context.Context, kind pollKind, key string, wait time.Duration,
	try func() (done bool, next time.Time, err error)) (bool, error) {
	c := callFrom(ctx)
	slot := c
	if wait <= 0 {
		slot = nil // a poll that cannot wait needs no slot
	}
	leave, err := lp.enter(slot, kind)
	if err != nil {
		return false, err
	}
	defer leave()
	deadline := time.Now().Add(wait)
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		wake, release := lp.hub.subscribe(key)
		done, next, err, panicked := tryAside(try)
		if panicked != nil {
			release()
			panic(panicked) // on the handler's goroutine, for withRecover
		}
		if err != nil || done {
			release()
			return done, err
		}
		d := time.Until(deadline)
		if !next.IsZero() {
			d = min(d, max(next.Sub(lp.now()), time.Millisecond))
		}
		if d <= 0 {
			release()
			return false, nil
		}
		if timer == nil {
			timer = time.NewTimer(d)
		} else {
			timer.Reset(d)
		}
		parked := time.Now()
		stop := false // err is nil here
		select {
		case <-wake:
		case <-timer.C:
		case <-ctx.Done():
			stop, err = true, ctx.Err()
		case <-lp.done:
			stop = true
		}
		if c != nil {
			c.parked.Add(int64(time.Since(parked)))
		}
		release()
		if stop {
			return false, err
		}
		select {
		case <-lp.done:
			return false, nil
		default:
		}
	}
}

// tryAside runs try on a goroutine of its own and waits for it. try reads
// the store, deep in the SQLite engine; on the handler's goroutine, the stack
// grown for that would stay for as long as the poll waits (about 20 KiB per
// open poll rather than 12). A panic in try is returned, for the caller to
// go on with.
func tryAside(try func() (bool, time.Time, error)) (done bool, next time.Time, err error, panicked any) {
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		defer func() { panicked = recover() }()
		done, next, err = try()
	}()
	<-finished
	return done, next, err, panicked
}
