// The idle scenario: --polls long polls held open by a child process
// (holder.go) while N clients call meanwhile; the relay's memory per held
// poll, and what the held polls cost everything else.

package bench

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// idle: --polls long polls (pullsmart without rid, each its own
// token) are held open on raw connections that write their request and
// never read, so the client side costs next to nothing. Meanwhile N clients
// call pullsmart with wait=0 (one op each; it goes through the same poll
// path and answers 204). The relay's memory growth per held poll is taken
// in-process only (it is this process's growth); the relay's count of open
// polls comes from its /metrics, also at --url when it serves them.
func idle(ctx context.Context, b *bench, clients int) (*result, error) {
	n := b.opts.Polls
	// The in-process relay and direct take a descriptor per poll here; the
	// client side is in the holder process.
	if err := raiseFDLimit(uint64(n + 4*clients + 512)); err != nil {
		return nil, fmt.Errorf("%d polls: %w", n, err)
	}
	relay := newTarget("relay", b.base, clients)
	defer relay.close()
	// The relay's gauge, first: at --url it counts from here, when the
	// previous row's polls are long gone and this one's not yet begun.
	mt := newTarget("relay", b.base, 1) // reads /metrics; its connection stays open, in both memory readings
	defer mt.close()
	gauge, err := b.relayPolls(ctx, mt)
	if err != nil {
		return nil, err
	}
	tokens, err := b.logins(ctx, relay, b.net(), n+clients)
	if err != nil {
		return nil, err
	}
	polls, probes := tokens[:n], tokens[n:]
	relay.record()
	if _, err := relay.call(ctx, http.MethodGet, idleProbePath, probes[0], nil, http.StatusNoContent); err != nil {
		return nil, err
	}
	replies := relay.recorded()

	rh, err := b.holdAndProbe(ctx, "idle relay", relay, polls, probes, gauge, b.relay != nil)
	if err != nil {
		return nil, err
	}
	direct, err := b.startDirect(replies, true)
	if err != nil {
		return nil, err
	}
	dt := newTarget("direct", direct.url, clients)
	dh, err := b.holdAndProbe(ctx, "idle direct", dt, polls, probes, direct.polls, true)
	dt.close()
	direct.stop()
	if err != nil {
		return nil, err
	}

	res := newResult("idle", clients, rh.stats, dh.stats)
	res.set("polls", n)
	res.set("open_s", round2(rh.open.Seconds()))
	perPoll := func(v int64) int64 { return v / int64(n) }
	if b.relay != nil {
		res.set("bytes_per_poll", perPoll(rh.mem.rss))
		res.set("heap_per_poll", perPoll(rh.mem.heap))
		res.note("%d polls: %s/poll RSS, %s heap+stacks", n, fmtBytes(perPoll(rh.mem.rss)), fmtBytes(perPoll(rh.mem.heap)))
	} else {
		res.note("%d polls held; the relay's memory is not visible through --url", n)
	}
	if gauge != nil {
		res.set("open_polls_held", rh.held)
		res.set("open_polls_after", rh.after)
		if rh.held < int64(n) {
			res.note("only %d polls still held after the load: the relay's --max-wait ended the others", rh.held)
		}
	}
	res.set("direct_bytes_per_poll", perPoll(dh.mem.rss))
	res.set("direct_heap_per_poll", perPoll(dh.mem.heap))
	res.note("direct %s/poll RSS", fmtBytes(perPoll(dh.mem.rss)))
	res.note("opened in %.1fs", rh.open.Seconds())
	return res, nil
}

// relayPolls is the gauge of the relay's open long polls, from its
// /metrics through t. In-process the bench is the relay's one user and the
// gauge counts every poll; a relay at --url may hold polls of others, so
// there it counts the rise over what is open now, and is nil when the
// relay serves no metrics.
func (b *bench) relayPolls(ctx context.Context, t *target) (gauge, error) {
	g, err := pollGauge(ctx, t)
	switch {
	case b.relay != nil:
		return g, err
	case errors.Is(err, errNoMetrics):
		return nil, nil
	case err != nil:
		return nil, err
	}
	return g.rise(ctx)
}

// idleProbePath is the probe of the idle scenario: a pullsmart that answers
// at once (204: nothing to pull).
const idleProbePath = "/api/v1/client/pullsmart?wait=0"

// holdStats is what holding the idle polls gave.
type holdStats struct {
	stats loadStats
	open  time.Duration // until every poll was held (or sent, with no gauge)
	mem   memSample     // the process's growth while they were held
	held  int64         // polls still held after the load, by the gauge
	after int64         // polls open once they were closed, by the gauge
}

// holdAndProbe has a child process open a long poll for each of polls,
// waits until gauge (when known) counts them all, takes this process's
// memory growth, runs the probe load, then has the child close the polls and
// waits for gauge to come down to 0. With the polls' client side in another
// process, the growth is the relay's alone, and each process needs one
// descriptor per poll, not two. Without exact (a relay at --url, where
// others' polls come and go) a count that is not reached in 5 s is taken
// as it is rather than failing the row.
func (b *bench) holdAndProbe(ctx context.Context, label string, t *target, polls, probes []string, g gauge, exact bool) (holdStats, error) {
	var h holdStats
	n := int64(len(polls))
	// wait waits until the gauge reads what ok accepts, for up to within.
	wait := func(ok func(open int64) bool, want string, within time.Duration, what string) error {
		if g == nil {
			return nil
		}
		if !exact {
			within = min(within, 5*time.Second)
		}
		deadline := time.Now().Add(within)
		for {
			open, err := g(ctx)
			if err != nil || ok(open) {
				return err
			}
			if time.Now().After(deadline) {
				if !exact {
					return nil
				}
				return fmt.Errorf("%s: %d long polls open after %s, want %s: %s", label, open, within, want, what)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	none := func(open int64) bool { return open <= 0 }
	if err := wait(none, "0", 30*time.Second, "the previous load's polls did not end"); err != nil {
		return h, err
	}
	before := readMem()
	start := time.Now()
	holder, err := b.holdPolls(ctx, label+" open", t.base, polls)
	if err != nil {
		return h, err
	}
	defer holder.release()
	if err := wait(func(open int64) bool { return open >= n }, fmt.Sprint(n), time.Minute, "not every poll was taken up"); err != nil {
		return h, err
	}
	h.open = time.Since(start)
	after := readMem()
	h.mem = memSample{rss: after.rss - before.rss, heap: after.heap - before.heap}

	h.stats, err = b.measure(ctx, label, len(probes), func(i int) opFunc {
		return func(ctx context.Context) error {
			_, err := t.call(ctx, http.MethodGet, idleProbePath, probes[i], nil, http.StatusNoContent)
			return err
		}
	})
	if err != nil {
		return h, err
	}
	t.close() // the probes' connections, so that only the polls are left
	if g != nil {
		// A probe cut at the end of the time may still be in the relay.
		_ = wait(func(open int64) bool { return open <= n }, fmt.Sprint(n), 10*time.Second, "")
		if h.held, err = g(ctx); err != nil {
			return h, err
		}
	}
	if err := holder.release(); err != nil {
		return h, fmt.Errorf("%s: the process holding the polls: %w", label, err)
	}
	if err := wait(none, "0", 30*time.Second, "closed polls were not all noticed"); err != nil {
		return h, err
	}
	if g != nil {
		h.after, err = g(ctx)
	}
	return h, err
}
