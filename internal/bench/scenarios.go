// The scenarios of `c2cvia bench` and their registry, with the exchange and
// the backlog. A scenario measures the relay and then direct with the same
// calls (targets.go); adding one is a function and a line in scenarios.
// The idle scenario is in idle.go, via and broadcast in fanout.go.

package bench

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// scenario measures one scenario at one client count: the relay, then
// direct, into one row.
type scenario struct {
	name string
	help string
	run  func(ctx context.Context, b *bench, clients int) (*result, error)
}

// scenarios is the registry, in the order they run by default.
var scenarios = []scenario{
	{"exchange", "N SimClients pushreq and pullsmart their rid; SimServer workers pullreqsmart and pushres", exchange},
	{"idle", "--polls long polls held open; N clients call pullsmart wait=0 meanwhile; relay memory per poll", idle},
	{"backlog", "--backlog requests queued; N SimServers pullreqsmart and pushres; start-up time on that file", backlog},
	{"via", "N plain HTTP clients GET /via/NET/...; SimServer workers pullreqsmart and pushres", via},
	{"broadcast", "N peers wait on peer pullsmart; one sender broadcasts; time until all N have each message", broadcast},
}

func lookupScenario(name string) (scenario, bool) {
	for _, s := range scenarios {
		if s.name == name {
			return s, true
		}
	}
	return scenario{}, false
}

func scenarioNames() []string {
	var names []string
	for _, s := range scenarios {
		names = append(names, s.name)
	}
	return names
}

func scenarioHelp() string {
	var sb strings.Builder
	for _, s := range scenarios {
		fmt.Fprintf(&sb, "  %-9s %s\n", s.name, s.help)
	}
	fmt.Fprintf(&sb, "  %-9s %s\n", "crash", "alone, not by default: SIGKILL a relay child process --kills times under load, then check nothing acknowledged was lost")
	return sb.String()
}

// exchange: N SimClients each push a request and wait for its
// response (pushreq, then pullsmart with the rid); SimServer workers lease
// up to --max at a time (pullreqsmart) and answer each (pushres). One op is
// one exchange, timed from pushreq sent to response in hand. Direct: the
// four calls in a row per exchange, each answered with the relay's bytes.
func exchange(ctx context.Context, b *bench, clients int) (*result, error) {
	workers := b.opts.Workers
	if workers == 0 {
		workers = (clients + 3) / 4 // a SimServer worker per 4 SimClients
	}
	ex := exchangeCalls{net: b.net(), key: b.key, max: b.opts.Max, separate: b.opts.Answers == "pushres"}
	relay := newTarget("relay", b.base, clients)
	defer relay.close()
	servers := newTarget("relay", b.serverBase(), workers) // another node on PostgreSQL with two
	defer servers.close()
	tokens, err := b.logins(ctx, relay, ex.net, clients)
	if err != nil {
		return nil, err
	}
	// One exchange alone, recorded: direct answers with these replies. It
	// runs in a fresh net of its own, where nothing else is queued (--net
	// may hold requests from an earlier row or from others).
	own := exchangeCalls{net: b.ownNet(), key: b.key, max: b.opts.Max}
	calTokens, err := b.logins(ctx, relay, own.net, 1)
	if err != nil {
		return nil, err
	}
	relay.record()
	if err := own.inTurn(ctx, relay, calTokens[0]); err != nil {
		return nil, err
	}
	replies := relay.recorded()

	// The relay's group commits, from its /metrics; in-process only, where
	// the bench is the relay's one user.
	var counters []*target // one per node
	var c0 storeCounters
	if b.relay != nil {
		for _, n := range b.nodes {
			t := newTarget("relay", n.URL(), 1)
			defer t.close()
			counters = append(counters, t)
		}
		if c0, err = readAllCommits(ctx, counters); err != nil {
			return nil, err
		}
	}
	var done atomic.Int64
	phase, stopWorkers := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			if err := ex.simServer(phase, servers); err != nil && phase.Err() == nil {
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
	if counters != nil {
		if c, err = readAllCommits(ctx, counters); err != nil {
			return nil, err
		}
		c = c.minus(c0)
	}

	ds, err := b.measureDirect(ctx, "exchange direct", clients, replies, false, func(direct *target, i int) opFunc {
		return func(ctx context.Context) error { return ex.inTurn(ctx, direct, tokens[i]) }
	})
	if err != nil {
		return nil, err
	}
	res := newResult("exchange", clients, rs, ds)
	res.set("workers", workers)
	res.set("max", ex.max)
	res.set("answers", b.opts.Answers)
	res.note("workers %d, max %d, answers by %s", workers, ex.max, b.opts.Answers)
	if n := done.Load(); counters != nil && n > 0 && c.commits > 0 {
		res.set("commits_per_exchange", round2(float64(c.commits)/float64(n)))
		res.set("writes_per_commit", round2(float64(c.writes)/float64(c.commits)))
		res.note("%.2f commits/exchange, %.1f writes/commit", float64(c.commits)/float64(n), float64(c.writes)/float64(c.commits))
	}
	return res, nil
}

// exchangeCalls are the four calls of an exchange in one net. separate:
// the SimServer workers answer with a pushres each, not with their next
// pullreqsmart.
type exchangeCalls struct {
	net, key string
	max      int
	separate bool
}

// A small GET request and a JSON answer, as an API behind the relay sees.
const (
	pushReqBody = `{"sim_req":{"simEndpoint":"/items/7","simMethod":"GET","simQueryParams":{"q":"bench"}}}`
	simResBody  = `{"simStatus":200,"simHeaders":{"Content-Type":"application/json"},"simBody":{"id":7,"name":"bench"}}`
)

// client is one SimClient exchange: pushreq, then pullsmart until answered.
func (ex exchangeCalls) client(ctx context.Context, t *target, token string) error {
	rid, err := pushReq(ctx, t, token)
	if err != nil {
		return err
	}
	return pullSmart(ctx, t, token, rid)
}

// simServer is one SimServer worker: lease up to max, answer each, with
// the next pullreqsmart (docs/API.md, "Answering and polling in one
// call") or, when separate, with a pushres each.
func (ex exchangeCalls) simServer(ctx context.Context, t *target) error {
	var ready []string
	for ctx.Err() == nil {
		rids, err := pullReqSmart(ctx, t, ex.net, ex.key, 25, ex.max, ready...)
		if err != nil {
			return err
		}
		if !ex.separate {
			ready = rids
			continue
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
func (ex exchangeCalls) inTurn(ctx context.Context, t *target, token string) error {
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

// backlog: --backlog requests are queued in a store of their own
// (Relays.Backlog: one bulk insert per 100,000 rows, in the store's
// schema), then a relay is started on that file and timed until /healthz
// answers 200. N SimServers
// each take one request at a time (pullreqsmart max=1, wait=0) and answer it
// (pushres); one op is both calls. It needs the store: not with --url.
func backlog(ctx context.Context, b *bench, clients int) (*result, error) {
	if b.relay == nil {
		return &result{Skipped: "needs the store itself (bulk load, start-up time); run it without --url"}, nil
	}
	bl, err := b.backlogStore(ctx)
	if err != nil {
		return nil, err
	}
	r, ready, err := b.waitReady(ctx, bl.path)
	if err != nil {
		return nil, err
	}
	defer func() {
		if r != nil {
			_ = r.Stop()
		}
	}()
	relay := newTarget("relay", r.URL(), clients)
	defer relay.close()
	take := func(t *target) opFunc {
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
	err = r.Stop()
	r = nil
	if err != nil {
		return nil, err
	}
	ds, err := b.measureDirect(ctx, "backlog direct", clients, replies, false, func(direct *target, _ int) opFunc {
		return take(direct)
	})
	if err != nil {
		return nil, err
	}
	res := newResult("backlog", clients, rs, ds)
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
	bl := backlogFile{path: filepath.Join(b.tmp, "backlog.db")}
	start := time.Now()
	bar := b.bar("backlog queue", int64(b.opts.Backlog))
	err := b.relays.Backlog(ctx, bl.path, b.opts.Sync, backlogNet, b.opts.Backlog, func(queued int) { _ = bar.Set(queued) })
	_ = bar.Finish()
	if err != nil {
		return bl, fmt.Errorf("queue the backlog: %w", err)
	}
	bl.fill = time.Since(start)
	b.state["backlog"] = bl
	return bl, nil
}

// measureDirect starts direct with the relay's replies and measures the
// same load against it.
func (b *bench) measureDirect(ctx context.Context, label string, clients int, replies map[string]reply, hold bool,
	newOp func(direct *target, i int) opFunc) (loadStats, error) {
	direct, err := b.startDirect(replies, hold)
	if err != nil {
		return loadStats{}, err
	}
	defer direct.stop()
	t := newTarget("direct", direct.url, clients)
	defer t.close()
	return b.measure(ctx, label, clients, func(i int) opFunc { return newOp(t, i) })
}
