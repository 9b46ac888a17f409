// Long polls and event streams: one waiting loop (poller.wait) for every
// call that waits. A wait subscribes to its hub signal, looks at the store,
// and sleeps in one select on the client's context, the relay's shutdown,
// the hub's wake-up and a timer of the injected clock.

package main

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
)

// pollKind names what a long poll waits for, for the metrics. Each kind is
// a label value: a handful, never a net, token or rid.
type pollKind string

const (
	pollClient pollKind = "client_pullsmart"    // pullres and pullsmart
	pollServer pollKind = "server_pullreqsmart" // pullreqsmart
	pollWatch  pollKind = "server_watch"        // watch: a SimServer's held requests
	pollVia    pollKind = "via"                 // a /via/ request waiting for its answer
	pollPeer   pollKind = "peer_pullsmart"      // peer messages by long poll
	pollStream pollKind = "peer_stream"         // peer messages as an event stream
)

// poller runs long polls and stops them all at shutdown.
type poller struct {
	hub     *hub
	clock   clockwork.Clock // the store's: poll deadlines and lease ends are read from it
	maxWait time.Duration
	done    chan struct{} // closed at shutdown: open polls answer at once
	once    sync.Once
	open    atomic.Int64 // long polls and streams in progress
	asleep  atomic.Int64 // waits parked in their select right now
	sleeps  atomic.Int64 // times a wait has parked: one more after each wake-up it sleeps through
	byKind  sync.Map     // pollKind -> *atomic.Int64: long polls in progress
}

func newPoller(h *hub, maxWait time.Duration, clk clockwork.Clock) *poller {
	lp := &poller{hub: h, maxWait: maxWait, clock: clk, done: make(chan struct{})}
	for _, k := range []pollKind{pollClient, pollServer, pollWatch, pollVia, pollPeer, pollStream} {
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

// tryFunc looks at the store for what a wait waits for: done when it is
// there, and next, the moment its answer changes by itself (an expiry, a
// lease running out; zero for none).
type tryFunc func() (done bool, next time.Time, err error)

// poll is a long poll of kind: it calls try until it reports done, for at
// most wait (from the injected clock), waking on signal. It reports false
// when wait ran out or the relay is shutting down, and the context's error
// when the client went away.
//
// A poll that may wait (wait > 0) in a call charged to a token takes one of
// the token's --max-polls-per-token slots first, or fails with 429
// too_many_polls before try runs.
func (lp *poller) poll(ctx context.Context, kind pollKind, signal string, wait time.Duration, try tryFunc) (bool, error) {
	return lp.pollOn(ctx, kind, signal, wait, try, true)
}

// pollMemory is poll for a try that reads memory only, never the store:
// it runs on the handler's goroutine (no stack to keep small), which
// spares a hand-off between goroutines at each wake-up.
func (lp *poller) pollMemory(ctx context.Context, kind pollKind, signal string, wait time.Duration, try tryFunc) (bool, error) {
	return lp.pollOn(ctx, kind, signal, wait, try, false)
}

// pollOn is poll; aside runs try on a goroutine of its own (tryAside).
func (lp *poller) pollOn(ctx context.Context, kind pollKind, signal string, wait time.Duration, try tryFunc, aside bool) (bool, error) {
	slot := callFrom(ctx)
	if wait <= 0 {
		slot = nil // a poll that cannot wait needs no slot
	}
	leave, err := lp.enter(slot, kind)
	if err != nil {
		return false, err
	}
	defer leave()
	return lp.waitOn(ctx, signal, lp.clock.Now().Add(wait), try, aside)
}

// wait is the waiting loop of every long poll and event stream. It runs try
// at once, and again whenever signal is notified or the next moment try
// named arrives, until try reports done or the deadline passes (false, nil).
// Shutdown ends it at once (false, nil); the client going away ends it with
// the context's error. Every time is read from the injected clock, so a
// test that moves the clock wakes the waits that are due.
//
// Time spent parked is kept out of the call's relay overhead.
func (lp *poller) wait(ctx context.Context, signal string, deadline time.Time, try tryFunc) (bool, error) {
	return lp.waitOn(ctx, signal, deadline, try, true)
}

// waitOn is wait; aside runs try on a goroutine of its own (tryAside).
func (lp *poller) waitOn(ctx context.Context, signal string, deadline time.Time, try tryFunc, aside bool) (bool, error) {
	c := callFrom(ctx)
	retries := 0 // tries in a row whose next moment had already passed
	for {
		wake, release := lp.hub.subscribe(signal)
		var done bool
		var next time.Time
		var err error
		var panicked any
		if aside {
			done, next, err, panicked = tryAside(try)
		} else {
			done, next, err = try()
		}
		if panicked != nil {
			release()
			panic(panicked) // on the handler's goroutine, for withRecover
		}
		if err != nil || done {
			release()
			return done, err
		}
		now := lp.clock.Now()
		if !deadline.After(now) {
			release()
			return false, nil
		}
		at := deadline
		if !next.IsZero() && next.Before(at) {
			if !next.After(now) && retries < 1 {
				// The clock passed next between try's read and here: look again.
				release()
				retries++
				continue
			}
			at = next
		}
		retries = 0
		timer := lp.clock.NewTimer(at.Sub(now))
		if !lp.clock.Now().Before(at) {
			// The clock moved while the timer was armed from the old now.
			timer.Stop()
			release()
			continue
		}
		parked := time.Now()
		lp.asleep.Add(1)
		lp.sleeps.Add(1)
		stop := false // err is nil here
		select {
		case <-wake:
		case <-timer.Chan():
		case <-ctx.Done():
			stop, err = true, ctx.Err()
		case <-lp.done:
			stop = true
		}
		lp.asleep.Add(-1)
		timer.Stop()
		release()
		if c != nil {
			c.parked.Add(int64(time.Since(parked))) // real time: the call's overhead is measured in it
		}
		if stop || lp.stopping() {
			return false, err
		}
	}
}

// tryAside runs try on a goroutine of its own and waits for it. try reads
// the store, deep in the SQLite engine; on the handler's goroutine, the stack
// grown for that would stay for as long as the poll waits (about 20 KiB per
// open poll rather than 12). A panic in try is returned, for the caller to
// go on with.
func tryAside(try tryFunc) (done bool, next time.Time, err error, panicked any) {
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		defer func() { panicked = recover() }()
		done, next, err = try()
	}()
	<-finished
	return done, next, err, panicked
}
