// The watch: while handlers run, Serve keeps one watch call open at the
// relay for their requests, and ends a handler's context as soon as the
// relay names its request as needing no more work: withdrawn by its caller,
// expired, its stream aborted (docs/API.md, "Cancellation").

package client

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"
)

const (
	// watchAfter is how long a handler runs before its request joins the
	// watch. Most answers come sooner, and each request that joins restarts
	// the call, which costs a connection (an HTTP/1.1 call cut short
	// cannot be reused). 250 ms keeps a withdrawal's delay under a second.
	watchAfter = 250 * time.Millisecond
	// watchSettle gathers the requests that join within 50 ms into one
	// restart.
	watchSettle = 50 * time.Millisecond
	// maxWatch is the relay's limit on rids per watch call; more are
	// watched with more calls at once.
	maxWatch = 1000
)

// errWithdrawn is the cause of a handler's context when the watch names
// its request.
var errWithdrawn = &Error{Status: http.StatusGone, Code: "cancelled",
	Message: "the relay withdrew the request: its caller went away, or it expired"}

type watcher struct {
	s       *server
	mu      sync.Mutex
	held    map[string]*watched // by rid: the requests whose handlers run
	changed chan struct{}       // 1-buffered: a request joined the watch
}

// watched is one running handler's request.
type watched struct {
	cancel context.CancelCauseFunc // ends the handler's context
	due    bool                    // it has run watchAfter: it is watched
}

func newWatcher(s *server) *watcher {
	return &watcher{s: s, held: map[string]*watched{}, changed: make(chan struct{}, 1)}
}

// add watches rid, whose handler's context cancel ends, from watchAfter on;
// remove stops that, and once it returns cancel is never called for rid.
func (w *watcher) add(rid string, cancel context.CancelCauseFunc) (remove func()) {
	h := &watched{cancel: cancel}
	w.mu.Lock()
	w.held[rid] = h
	w.mu.Unlock()
	t := time.AfterFunc(watchAfter, func() {
		w.mu.Lock()
		h.due = true
		w.mu.Unlock()
		select {
		case w.changed <- struct{}{}:
		default:
		}
	})
	return func() {
		t.Stop()
		w.mu.Lock()
		if w.held[rid] == h {
			delete(w.held, rid)
		}
		w.mu.Unlock()
	}
}

// due is the rids to watch.
func (w *watcher) due() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	var rids []string
	for rid, h := range w.held {
		if h.due {
			rids = append(rids, rid)
		}
	}
	return rids
}

// withdraw ends the contexts of the handlers of rids.
func (w *watcher) withdraw(rids []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, rid := range rids {
		if h := w.held[rid]; h != nil {
			h.cancel(errWithdrawn)
			delete(w.held, rid)
		}
	}
}

// run keeps the watch open until ctx ends: a call for the due rids,
// restarted when more become due. Network errors and 5xx are retried with
// backoff; a relay that refuses the watch (one without it answers 404)
// leaves the handlers to learn of a withdrawal from the 410 of their next
// post or lease renewal.
func (w *watcher) run(ctx context.Context) {
	bo := w.s.o.backoff()
	for {
		rids := w.due()
		if len(rids) == 0 {
			select {
			case <-w.changed:
				w.settle(ctx)
				continue
			case <-ctx.Done():
				return
			}
		}
		began := time.Now()
		cancelled, restart, retryAfter, err := w.watch(ctx, rids)
		w.withdraw(cancelled)
		switch {
		case ctx.Err() != nil:
			return
		case restart:
			w.settle(ctx)
		case err != nil && !transient(ctx, err):
			w.s.o.log(slog.LevelWarn, "watching requests: refused; handlers learn of a withdrawal when they post", err, "net", w.s.net)
			<-ctx.Done()
			return
		case err != nil:
			w.s.o.log(slog.LevelWarn, "watching requests: retrying", err, "net", w.s.net)
			if !sleep(ctx, bo.next(retryAfter)) {
				return
			}
		case len(cancelled) == 0 && time.Since(began) < time.Second:
			// A relay that answers at once with nothing is not waited on
			// in a tight loop.
			if !sleep(ctx, bo.next(0)) {
				return
			}
		default:
			bo.reset()
		}
	}
}

// settle waits watchSettle for more requests to join before a restart.
func (w *watcher) settle(ctx context.Context) {
	sleep(ctx, watchSettle)
	select {
	case <-w.changed:
	default:
	}
}

// watch makes one watch call per maxWatch rids and returns when the first
// one answers (with what all the answered ones name), or with restart when
// more rids became due, or when ctx ends. The calls still open are cut
// short: a watch writes nothing, so that is always safe.
func (w *watcher) watch(ctx context.Context, rids []string) (cancelled []string, restart bool, retryAfter time.Duration, err error) {
	type result struct {
		cancelled  []string
		retryAfter time.Duration
		err        error
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan result, (len(rids)+maxWatch-1)/maxWatch)
	calls := 0
	for chunk := range slices.Chunk(rids, maxWatch) {
		calls++
		go func() {
			var out struct {
				Cancelled []string `json:"cancelled"`
			}
			body := map[string]any{"net": w.s.net, "rids": chunk, "wait": seconds(w.s.o.wait)}
			_, retryAfter, err := w.s.call(cctx, "/api/v1/server/watch", w.s.key, body, &out)
			results <- result{out.Cancelled, retryAfter, err}
		}()
	}
	select {
	case r := <-results:
		calls--
		cancelled, retryAfter, err = r.cancelled, r.retryAfter, r.err
	case <-w.changed:
		restart = true
	case <-ctx.Done():
	}
	cancel()
	for range calls {
		if r := <-results; r.err == nil {
			cancelled = append(cancelled, r.cancelled...)
		}
	}
	return cancelled, restart, retryAfter, err
}
