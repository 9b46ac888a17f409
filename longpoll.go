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

// poller runs long polls and stops them all at shutdown.
type poller struct {
	hub     *hub
	maxWait time.Duration
	now     func() time.Time // the store's clock, to turn its deadlines into timers
	done    chan struct{}    // closed at shutdown: open polls answer at once
	once    sync.Once
	open    atomic.Int64 // long polls in progress
}

func newPoller(h *hub, maxWait time.Duration, now func() time.Time) *poller {
	return &poller{hub: h, maxWait: maxWait, now: now, done: make(chan struct{})}
}

// shutdown answers every open long poll and every later one at once.
func (lp *poller) shutdown() { lp.once.Do(func() { close(lp.done) }) }

// poll calls try until it reports done, for at most wait. try runs at once
// and again whenever key is notified or the time it names (the next moment
// its answer changes by itself, zero for none) arrives. poll reports false
// when wait ran out or the relay is shutting down, and the context's error
// when the client went away.
func (lp *poller) poll(ctx context.Context, key string, wait time.Duration,
	try func() (done bool, next time.Time, err error)) (bool, error) {
	lp.open.Add(1)
	defer lp.open.Add(-1)
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
		select {
		case <-wake:
		case <-timer.C:
		case <-ctx.Done():
			release()
			return false, ctx.Err()
		case <-lp.done:
			release()
			return false, nil
		}
		release()
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
