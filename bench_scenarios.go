// The scenarios of `c2cvia bench`. A scenario measures the relay and then
// direct with the same calls (bench_targets.go); adding one is a function
// and a line in benchScenarios.

package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// benchScenario measures one scenario at one client count: the relay, then
// direct, into one row.
type benchScenario struct {
	name string
	help string
	run  func(ctx context.Context, b *bench, clients int) (*benchResult, error)
}

// benchScenarios is the registry, in the order they run by default.
var benchScenarios = []benchScenario{
	{"exchange", "N SimClients pushreq and pullsmart their rid; SimServer workers pullreqsmart and pushres", benchExchange},
	{"idle", "--polls long polls held open; N clients call pullsmart wait=0 meanwhile; relay memory per poll", benchIdle},
	{"backlog", "--backlog requests queued; N SimServers pullreqsmart and pushres; start-up time on that file", benchBacklog},
	{"via", "N plain HTTP clients GET /via/NET/...; SimServer workers pullreqsmart and pushres", benchVia},
	{"broadcast", "N peers wait on peer pullsmart; one sender broadcasts; time until all N have each message", benchBroadcast},
}

func lookupBenchScenario(name string) (benchScenario, bool) {
	for _, s := range benchScenarios {
		if s.name == name {
			return s, true
		}
	}
	return benchScenario{}, false
}

func benchScenarioNames() []string {
	var names []string
	for _, s := range benchScenarios {
		names = append(names, s.name)
	}
	return names
}

func benchScenarioHelp() string {
	var sb strings.Builder
	for _, s := range benchScenarios {
		fmt.Fprintf(&sb, "  %-9s %s\n", s.name, s.help)
	}
	fmt.Fprintf(&sb, "  %-9s %s\n", "crash", "alone, not by default: SIGKILL a relay child process --kills times under load, then check nothing acknowledged was lost")
	return sb.String()
}

// benchExchange: N SimClients each push a request and wait for its
// response (pushreq, then pullsmart with the rid); SimServer workers lease
// up to --max at a time (pullreqsmart) and answer each (pushres). One op is
// one exchange, timed from pushreq sent to response in hand. Direct: the
// four calls in a row per exchange, each answered with the relay's bytes.
func benchExchange(ctx context.Context, b *bench, clients int) (*benchResult, error) {
	workers := b.opts.Workers
	if workers == 0 {
		workers = (clients + 3) / 4 // a SimServer worker per 4 SimClients
	}
	ex := exchangeCalls{net: b.net(), key: b.key, max: b.opts.Max}
	relay := b.target("relay", b.base, clients+workers)
	defer relay.close()
	tokens, err := b.logins(ctx, relay, ex.net, clients)
	if err != nil {
		return nil, err
	}
	// One exchange alone, recorded: direct answers with these replies. It
	// runs in a fresh net of its own, where nothing else is queued (--net
	// may hold requests from an earlier row or from others).
	own := exchangeCalls{net: "bench-" + randomID(6), key: b.key, max: b.opts.Max}
	calTokens, err := b.logins(ctx, relay, own.net, 1)
	if err != nil {
		return nil, err
	}
	relay.record()
	if err := own.inTurn(ctx, relay, calTokens[0]); err != nil {
		return nil, err
	}
	replies := relay.recorded()

	var c0 storeCounters
	if b.relay != nil {
		c0 = readStoreCounters(b.relay.st)
	}
	var done atomic.Int64
	phase, stopWorkers := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			if err := ex.simServer(phase, relay); err != nil && phase.Err() == nil {
				stopWorkers(fmt.Errorf("SimServer worker: %w", err))
			}
		})
	}
	rs, err := b.measure(phase, "exchange relay", clients, func(i int) opFunc {
		return func(ctx context.Context) error {
			err := ex.client(ctx, relay, tokens[i])
			if err == nil {
				done.Add(1)
			}
			return err
		}
	})
	stopWorkers(nil)
	wg.Wait()
	if err != nil {
		return nil, err
	}
	var c storeCounters
	if b.relay != nil {
		c = readStoreCounters(b.relay.st).minus(c0)
	}

	ds, err := b.measureDirect(ctx, "exchange direct", clients, replies, false, func(direct *benchTarget, i int) opFunc {
		return func(ctx context.Context) error { return ex.inTurn(ctx, direct, tokens[i]) }
	})
	if err != nil {
		return nil, err
	}
	res := newBenchResult("exchange", clients, rs, ds)
	res.set("workers", workers)
	res.set("max", ex.max)
	res.note("workers %d, max %d", workers, ex.max)
	if n := done.Load(); b.relay != nil && n > 0 && c.commits > 0 {
		res.set("commits_per_exchange", round2(float64(c.commits)/float64(n)))
		res.set("writes_per_commit", round2(float64(c.writes)/float64(c.commits)))
		res.note("%.2f commits/exchange, %.1f writes/commit", float64(c.commits)/float64(n), float64(c.writes)/float64(c.commits))
	}
	return res, nil
}

// exchangeCalls are the four calls of an exchange in one net.
type exchangeCalls struct {
	net, key string
	max      int
}

// A small GET request and a JSON answer, as an API behind the relay sees.
const (
	benchPushReqBody = `{"sim_req":{"simEndpoint":"/items/7","simMethod":"GET","simQueryParams":{"q":"bench"}}}`
	benchSimResBody  = `{"simStatus":200,"simHeaders":{"Content-Type":"application/json"},"simBody":{"id":7,"name":"bench"}}`
)

// client is one SimClient exchange: pushreq, then pullsmart until answered.
func (ex exchangeCalls) client(ctx context.Context, t *benchTarget, token string) error {
	rid, err := pushReq(ctx, t, token)
	if err != nil {
		return err
	}
	return pullSmart(ctx, t, token, rid)
}

// simServer is one SimServer worker: lease up to max, answer each.
func (ex exchangeCalls) simServer(ctx context.Context, t *benchTarget) error {
	for ctx.Err() == nil {
		rids, err := pullReqSmart(ctx, t, ex.net, ex.key, 25, ex.max)
		if err != nil {
			return err
		}
		for _, rid := range rids {
			if err := pushRes(ctx, t, ex.net, ex.key, rid); err != nil {
				return err
			}
		}
	}
	return nil
}

// inTurn is one exchange by one caller: the four calls in a row.
func (ex exchangeCalls) inTurn(ctx context.Context, t *benchTarget, token string) error {
	rid, err := pushReq(ctx, t, token)
	if err != nil {
		return err
	}
	rids, err := pullReqSmart(ctx, t, ex.net, ex.key, 25, ex.max)
	if err != nil {
		return err
	}
	if len(rids) != 1 || rids[0] != rid {
		return fmt.Errorf("%s: pullreqsmart handed out %v, not the request just pushed (%s)", t.name, rids, rid)
	}
	if err := pushRes(ctx, t, ex.net, ex.key, rid); err != nil {
		return err
	}
	return pullSmart(ctx, t, token, rid)
}

// benchIdle: --polls long polls (pullsmart without rid, each its own
// token) are held open on raw connections that write their request and
// never read, so the client side costs next to nothing. Meanwhile N clients
// call pullsmart with wait=0 (one op each; it goes through the same poll
// path and answers 204). The relay's memory growth per held poll is taken
// in-process; against --url only the load runs.
func benchIdle(ctx context.Context, b *bench, clients int) (*benchResult, error) {
	n := b.opts.Polls
	// The in-process relay and direct take a descriptor per poll here; the
	// client side is in the holder process.
	if err := raiseFDLimit(uint64(n + 4*clients + 512)); err != nil {
		return nil, fmt.Errorf("%d polls: %w", n, err)
	}
	relay := b.target("relay", b.base, clients)
	defer relay.close()
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

	var gauge func() int64
	if b.relay != nil {
		gauge = b.relay.openPolls
	}
	rh, err := b.holdAndProbe(ctx, "idle relay", relay, polls, probes, gauge)
	if err != nil {
		return nil, err
	}
	direct, err := startDirect(b.log, replies, true)
	if err != nil {
		return nil, err
	}
	dt := b.target("direct", direct.url, clients)
	dh, err := b.holdAndProbe(ctx, "idle direct", dt, polls, probes, direct.held.Load)
	dt.close()
	direct.stop()
	if err != nil {
		return nil, err
	}

	res := newBenchResult("idle", clients, rh.stats, dh.stats)
	res.set("polls", n)
	res.set("open_s", round2(rh.open.Seconds()))
	perPoll := func(v int64) int64 { return v / int64(n) }
	if b.relay != nil {
		res.set("bytes_per_poll", perPoll(rh.mem.rss))
		res.set("heap_per_poll", perPoll(rh.mem.heap))
		res.set("open_polls_held", rh.held)
		res.set("open_polls_after", rh.after)
		res.note("%d polls: %s/poll RSS, %s heap+stacks", n, fmtBytes(perPoll(rh.mem.rss)), fmtBytes(perPoll(rh.mem.heap)))
		if rh.held < int64(n) {
			res.note("only %d polls still held after the load: the relay's --max-wait ended the others", rh.held)
		}
	} else {
		res.note("%d polls held; the relay's memory is not visible through --url", n)
	}
	res.set("direct_bytes_per_poll", perPoll(dh.mem.rss))
	res.set("direct_heap_per_poll", perPoll(dh.mem.heap))
	res.note("direct %s/poll RSS", fmtBytes(perPoll(dh.mem.rss)))
	res.note("opened in %.1fs", rh.open.Seconds())
	return res, nil
}

// idleProbePath is the probe of the idle scenario: a pullsmart that answers
// at once (204: nothing to pull).
const idleProbePath = "/api/v1/client/pullsmart?wait=0"

// holdStats is what holding the idle polls gave.
type holdStats struct {
	stats loadStats
	open  time.Duration // until every poll was held (or sent, with no gauge)
	mem   memSample     // the process's growth while they were held
	held  int64         // polls still held after the load
	after int64         // polls open once they were closed
}

// holdAndProbe has a child process open a long poll for each of polls,
// waits until gauge (when known) counts them all, takes this process's
// memory growth, runs the probe load, then has the child close the polls and
// waits for gauge to be 0. With the polls' client side in another process,
// the growth is the relay's alone, and each process needs one descriptor
// per poll, not two.
func (b *bench) holdAndProbe(ctx context.Context, label string, t *benchTarget, polls, probes []string, gauge func() int64) (holdStats, error) {
	var h holdStats
	wait := func(want int64, within time.Duration, what string) error {
		if gauge == nil {
			return nil
		}
		deadline := time.Now().Add(within)
		for gauge() != want {
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: %d long polls open after %s, want %d: %s", label, gauge(), within, want, what)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(5 * time.Millisecond):
			}
		}
		return nil
	}
	if err := wait(0, 30*time.Second, "the previous load's polls did not end"); err != nil {
		return h, err
	}
	before := readMem()
	start := time.Now()
	holder, err := b.holdPolls(ctx, label+" open", t.base, polls)
	if err != nil {
		return h, err
	}
	defer holder.release()
	if err := wait(int64(len(polls)), time.Minute, "not every poll was taken up"); err != nil {
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
	if gauge != nil {
		// A probe cut at the end of the time may still be in the relay.
		deadline := time.Now().Add(10 * time.Second)
		for gauge() > int64(len(polls)) && time.Now().Before(deadline) && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
		h.held = gauge()
	}
	if err := holder.release(); err != nil {
		return h, fmt.Errorf("%s: the process holding the polls: %w", label, err)
	}
	err = wait(0, 30*time.Second, "closed polls were not all noticed")
	if gauge != nil {
		h.after = gauge()
	}
	return h, err
}

// benchBacklog: --backlog requests are queued in a store of their own
// (one bulk insert per 100,000 rows, in the store's schema), then a relay is
// started on that file and timed until /healthz answers 200. N SimServers
// each take one request at a time (pullreqsmart max=1, wait=0) and answer it
// (pushres); one op is both calls. It needs the store: not with --url.
func benchBacklog(ctx context.Context, b *bench, clients int) (*benchResult, error) {
	if b.relay == nil {
		return &benchResult{Skipped: "needs the store itself (bulk load, start-up time); run it without --url"}, nil
	}
	bl, err := b.backlogStore(ctx)
	if err != nil {
		return nil, err
	}
	r, ready, err := waitReady(ctx, b.log, benchRelayConfig(bl.path, b.opts.Sync))
	if err != nil {
		return nil, err
	}
	defer func() {
		if r != nil {
			r.stop()
		}
	}()
	relay := b.target("relay", r.url, clients)
	defer relay.close()
	take := func(t *benchTarget) opFunc {
		return func(ctx context.Context) error {
			rids, err := pullReqSmart(ctx, t, backlogNet, b.key, 0, 1)
			if err != nil {
				return err
			}
			if len(rids) == 0 {
				return errDrained
			}
			return pushRes(ctx, t, backlogNet, b.key, rids[0])
		}
	}
	relay.record()
	if err := take(relay)(ctx); err != nil {
		return nil, err
	}
	replies := relay.recorded()
	rs, err := b.measure(ctx, "backlog relay", clients, func(int) opFunc { return take(relay) })
	if err != nil {
		return nil, err
	}
	relay.close()
	err = r.stop()
	r = nil
	if err != nil {
		return nil, err
	}
	ds, err := b.measureDirect(ctx, "backlog direct", clients, replies, false, func(direct *benchTarget, _ int) opFunc {
		return take(direct)
	})
	if err != nil {
		return nil, err
	}
	res := newBenchResult("backlog", clients, rs, ds)
	res.set("backlog", b.opts.Backlog)
	res.set("ready_ms", round2(float64(ready)/float64(time.Millisecond)))
	res.set("fill_s", round2(bl.fill.Seconds()))
	res.note("%d queued; ready in %s (open store, listen, /healthz 200)", b.opts.Backlog, fmtMS(float64(ready)/float64(time.Millisecond)))
	return res, nil
}

// backlogNet is the net the backlog is queued in.
const backlogNet = "backlog"

type backlogFile struct {
	path string
	fill time.Duration
}

// backlogStore makes the backlog's store once per run; later rows reuse it
// (each takes a few thousand of its requests).
func (b *bench) backlogStore(ctx context.Context) (backlogFile, error) {
	if bl, ok := b.state["backlog"].(backlogFile); ok {
		return bl, nil
	}
	bl := backlogFile{path: b.tmp + "/backlog.db"}
	start := time.Now()
	opts := defaultConfig().storeOptions()
	opts.Sync = b.opts.Sync
	st, err := openStore(ctx, bl.path, opts)
	if err != nil {
		return bl, err
	}
	defer st.Close()
	_, tok, err := st.createToken(ctx, backlogNet)
	if err != nil {
		return bl, err
	}
	// Random 128-bit rids, as pushreq makes them, so the rid index is as
	// scattered as a real one.
	const chunk = 100_000
	bar := b.bar("backlog queue", int64(b.opts.Backlog))
	defer bar.Finish()
	simReq := `{"simBody":null,"simEndpoint":"/items/7","simHeaders":{},"simMethod":"GET","simQueryParams":{"q":"bench"},"simRouteParams":{}}`
	for done := 0; done < b.opts.Backlog; done += chunk {
		n := min(chunk, b.opts.Backlog-done)
		now := st.nowMS()
		err := st.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
				INSERT INTO requests (rid, net, token_hash, from_peer, status, sim_req, created_at, expires_at)
				SELECT lower(hex(randomblob(16))), ?, ?, ?, 'queued', ?, ?, ? FROM n`,
				n, backlogNet, tok.Hash, tok.PeerID, simReq, now, now+time.Hour.Milliseconds())
			return err
		})
		if err != nil {
			return bl, err
		}
		_ = bar.Add(n)
	}
	if err := st.Close(); err != nil {
		return bl, err
	}
	bl.fill = time.Since(start)
	b.state["backlog"] = bl
	return bl, nil
}

// measureDirect starts direct with the relay's replies and measures the
// same load against it.
func (b *bench) measureDirect(ctx context.Context, label string, clients int, replies map[string]benchReply, hold bool,
	newOp func(direct *benchTarget, i int) opFunc) (loadStats, error) {
	direct, err := startDirect(b.log, replies, hold)
	if err != nil {
		return loadStats{}, err
	}
	defer direct.stop()
	t := b.target("direct", direct.url, clients)
	defer t.close()
	return b.measure(ctx, label, clients, func(i int) opFunc { return newOp(t, i) })
}

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }
