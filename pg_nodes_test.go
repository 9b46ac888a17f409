package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newTestNodes starts n relays on one new schema of the PostgreSQL server
// (C2CVIA_TEST_POSTGRES), sharing one fake clock, as nodes behind a load
// balancer share a database. Without the server the test is skipped, but
// in CI (CI=true), where .ci/run starts one, it fails.
func newTestNodes(t *testing.T, n int, change ...func(*config)) []*testRelay {
	t.Helper()
	url := needPostgres(t)
	db := newTestSchema(t, url)
	clock := clockwork.NewFakeClockAt(testEpoch)
	nodes := make([]*testRelay, n)
	for i := range nodes {
		cfg := testConfig(db)
		for _, c := range change {
			c(&cfg)
		}
		require.NoError(t, cfg.check(nil))
		rel, err := startRelay(context.Background(), cfg, clock, io.Discard, io.Discard)
		require.NoError(t, err)
		t.Cleanup(func() { require.NoError(t, rel.stop()) })
		nodes[i] = &testRelay{t: t, URL: rel.url(), DBPath: db, store: rel.store, srv: rel.srv, clock: clock, cfg: cfg, rel: rel}
	}
	return nodes
}

// needPostgres returns the test server's URL, or skips the test without
// one; in CI a missing server fails it.
func needPostgres(t *testing.T) string {
	t.Helper()
	url := os.Getenv(testPostgresEnv)
	if url == "" {
		if os.Getenv("CI") == "true" {
			t.Fatal(testPostgresEnv + " is not set: .ci/run starts a PostgreSQL server for these tests")
		}
		t.Skip("needs a PostgreSQL server: set " + testPostgresEnv)
	}
	return url
}

// TestNodesExchange: a request pushed on node A is leased by a SimServer
// polling node B, answered on B, and pulled by its SimClient on A; each
// long poll is woken by the other node's write, within 100 ms.
func TestNodesExchange(t *testing.T) {
	nodes := newTestNodes(t, 2)
	a, b := nodes[0], nodes[1]
	const net, key = "exchange", "key-0123456789abcdef"
	tok, _ := a.login(net)
	b.pullReqs(net, key, nil) // claims the net

	var serverWake, clientWake []time.Duration
	for i := range 30 {
		// The SimServer waits on B before the request exists.
		asleep := b.srv.poller.asleep.Load()
		polled := async(func() reply {
			return b.get("/api/v1/server/pullreqsmart", url.Values{"net": {net}, "key": {key}, "wait": {"20"}})
		})
		b.waitAsleep(asleep + 1)
		pushed := time.Now()
		rid := a.push(tok, map[string]any{"simMethod": "GET", "simEndpoint": fmt.Sprintf("/n/%d", i)})
		rep := within(t, 5*time.Second, polled, "B's poll, woken by A's push")
		serverWake = append(serverWake, time.Since(pushed))
		require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
		var got struct{ Requests []leased }
		require.NoError(t, json.Unmarshal(rep.Body, &got))
		require.Len(t, got.Requests, 1)
		require.Equal(t, rid, got.Requests[0].RID)

		// The SimClient waits on A before the answer exists.
		asleep = a.srv.poller.asleep.Load()
		pulled := async(func() reply {
			return a.postJSON("/api/v1/client/pullsmart", tok, map[string]any{"rid": rid, "wait": 20})
		})
		a.waitAsleep(asleep + 1)
		answered := time.Now()
		res := b.answer(net, key, rid, map[string]any{"simStatus": 200, "simBody": fmt.Sprint("answer ", i)})
		require.Equal(t, http.StatusOK, res.Status, string(res.Body))
		rep = within(t, 5*time.Second, pulled, "A's pullsmart, woken by B's answer")
		clientWake = append(clientWake, time.Since(answered))
		require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
		assert.Contains(t, string(rep.Body), fmt.Sprint("answer ", i))
	}
	for _, w := range []struct {
		name string
		d    []time.Duration
	}{{"SimServer on B woken by a push on A", serverWake}, {"SimClient on A woken by an answer on B", clientWake}} {
		p50, p99 := percentile(w.d, 50), percentile(w.d, 99)
		t.Logf("%s: p50 %v, p99 %v over %d", w.name, p50, p99, len(w.d))
		assert.Less(t, p50, 100*time.Millisecond, w.name)
	}
}

// percentile is the p-th percentile of ds (nearest rank).
func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := (p*len(s)+99)/100 - 1
	return s[max(0, min(i, len(s)-1))]
}

// TestNodesVia: a /via/ caller on A gets the answer that a SimServer
// polling B posted.
func TestNodesVia(t *testing.T) {
	nodes := newTestNodes(t, 2)
	a, b := nodes[0], nodes[1]
	const net, key = "gateway", "key-0123456789abcdef"
	b.pullReqs(net, key, nil)
	for i := range 5 {
		asleep := b.srv.poller.asleep.Load()
		polled := async(func() reply {
			return b.get("/api/v1/server/pullreqsmart", url.Values{"net": {net}, "key": {key}, "wait": {"20"}})
		})
		b.waitAsleep(asleep + 1)
		called := async(func() reply {
			req, err := http.NewRequest(http.MethodGet, a.URL+"/via/"+net+fmt.Sprintf("/hello/%d", i), nil)
			require.NoError(t, err)
			return a.do(req)
		})
		rep := within(t, 5*time.Second, polled, "B's poll")
		var got struct{ Requests []leased }
		require.NoError(t, json.Unmarshal(rep.Body, &got))
		require.Len(t, got.Requests, 1)
		assert.Contains(t, string(got.Requests[0].SimReq), fmt.Sprintf("/hello/%d", i))
		res := b.answer(net, key, got.Requests[0].RID, map[string]any{"simStatus": 201, "simBody": fmt.Sprint("hi ", i)})
		require.Equal(t, http.StatusOK, res.Status, string(res.Body))
		rep = within(t, 5*time.Second, called, "the /via/ caller on A")
		assert.Equal(t, http.StatusCreated, rep.Status)
		assert.Equal(t, fmt.Sprint("hi ", i), string(rep.Body))
	}
}

// TestNodesNoDoubleDelivery: 16 SimServers, 8 on each node, lease from one
// net at once and never hold the same rid at the same time; a lease that
// lapses brings its request back, attempt counted up, on either node.
func TestNodesNoDoubleDelivery(t *testing.T) {
	nodes := newTestNodes(t, 2)
	const net, key = "busy", "key-0123456789abcdef"
	nodes[0].pullReqs(net, key, nil)
	tok, _ := nodes[0].login(net)
	const total = 400
	for i := range total {
		nodes[i%2].push(tok, map[string]any{"simMethod": "GET", "simEndpoint": fmt.Sprint("/r/", i)})
	}
	var mu sync.Mutex
	holding := map[string]bool{}
	seen := map[string]int{}
	var doubles atomic.Int64
	var wg sync.WaitGroup
	for w := range 16 {
		node := nodes[w%2]
		wg.Go(func() {
			for {
				list := node.pullReqs(net, key, url.Values{"max": {"3"}})
				if len(list) == 0 {
					return
				}
				mu.Lock()
				for _, l := range list {
					if holding[l.RID] {
						doubles.Add(1)
					}
					holding[l.RID] = true
					seen[l.RID]++
				}
				mu.Unlock()
				for _, l := range list {
					mu.Lock()
					delete(holding, l.RID)
					mu.Unlock()
					res := node.answer(net, key, l.RID, map[string]any{"simStatus": 200})
					assert.Equal(t, http.StatusOK, res.Status, string(res.Body))
				}
			}
		})
	}
	wg.Wait()
	assert.Zero(t, doubles.Load(), "a rid held by two SimServers at once")
	assert.Len(t, seen, total)
	for rid, n := range seen {
		assert.Equal(t, 1, n, "rid %s handed out %d times", rid, n)
	}

	// A lapsed lease on A comes back on B with its attempt counted up.
	rid := nodes[0].push(tok, map[string]any{"simMethod": "GET", "simEndpoint": "/lapse"})
	first := nodes[0].pullReqs(net, key, url.Values{"lease": {"10"}})
	require.Len(t, first, 1)
	require.Equal(t, rid, first[0].RID)
	require.Equal(t, 1, first[0].Attempt)
	assert.Empty(t, nodes[1].pullReqs(net, key, nil), "leased on A: not on B while the lease runs")
	nodes[0].advance(11 * time.Second)
	again := nodes[1].pullReqs(net, key, nil)
	require.Len(t, again, 1)
	assert.Equal(t, rid, again[0].RID)
	assert.Equal(t, 2, again[0].Attempt)
}

// TestNodesLapsedLeaseWakesOtherNode: a SimServer waiting on B is woken
// when a lease taken on A runs out.
func TestNodesLapsedLeaseWakesOtherNode(t *testing.T) {
	nodes := newTestNodes(t, 2)
	a, b := nodes[0], nodes[1]
	const net, key = "lapse", "key-0123456789abcdef"
	a.pullReqs(net, key, nil)
	tok, _ := a.login(net)
	rid := a.push(tok, map[string]any{"simMethod": "GET", "simEndpoint": "/x"})
	require.Len(t, a.pullReqs(net, key, url.Values{"lease": {"10"}}), 1)
	asleep := b.srv.poller.asleep.Load()
	polled := async(func() reply {
		return b.get("/api/v1/server/pullreqsmart", url.Values{"net": {net}, "key": {key}, "wait": {"25"}})
	})
	b.waitAsleep(asleep + 1)
	a.advance(11 * time.Second)
	rep := within(t, 5*time.Second, polled, "B's poll when A's lease ran out")
	assert.Contains(t, string(rep.Body), rid)
}

// TestNodesPeers: senders on A and B, and a reader that alternates between
// the nodes, see every message once, in order, with no gap: over pullsmart
// and over the event stream.
func TestNodesPeers(t *testing.T) {
	nodes := newTestNodes(t, 2)
	const net = "peers"
	reader, readerID := nodes[0].login(net)
	senders := []string{}
	for i := range 4 {
		tok, _ := nodes[i%2].login(net)
		senders = append(senders, tok)
	}
	const each = 50
	var wg sync.WaitGroup
	for i, tok := range senders {
		node := nodes[i%2]
		wg.Go(func() {
			for j := range each {
				rep := node.postJSON("/api/v1/peer/send", tok, map[string]any{"to": readerID, "data": map[string]any{"s": i, "n": j}})
				assert.Equal(t, http.StatusCreated, rep.Status, string(rep.Body))
			}
		})
	}
	type msg struct {
		ID   int64
		Data struct{ S, N int }
	}
	var got []msg
	since := int64(0)
	for turn := 0; len(got) < len(senders)*each; turn++ {
		require.Less(t, turn, 10_000, "messages missing: got %d", len(got))
		rep := nodes[turn%2].postJSON("/api/v1/peer/pullsmart", reader, map[string]any{"since": since, "wait": 0})
		require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
		var page struct {
			Messages []msg
			Next     int64
		}
		require.NoError(t, json.Unmarshal(rep.Body, &page))
		got = append(got, page.Messages...)
		if len(page.Messages) > 0 {
			since = page.Messages[len(page.Messages)-1].ID
		}
	}
	wg.Wait()
	last := map[int]int{}
	for i, m := range got {
		if i > 0 {
			require.Greater(t, m.ID, got[i-1].ID, "ids in order")
		}
		require.Equal(t, last[m.Data.S], m.Data.N, "sender %d's messages in order, none missing or repeated", m.Data.S)
		last[m.Data.S]++
	}

	// The event stream on B reads the same messages from the start.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, nodes[1].URL+"/api/v1/peer/stream?since=0&token="+reader, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+reader)
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var streamed []int64
	buf := make([]byte, 64<<10)
	var text strings.Builder
	for len(streamed) < len(got) {
		n, err := resp.Body.Read(buf)
		require.NoError(t, err, "the stream ended after %d messages", len(streamed))
		text.Write(buf[:n])
		streamed = streamed[:0]
		for line := range strings.SplitSeq(text.String(), "\n") {
			if id, ok := strings.CutPrefix(line, "id: "); ok {
				var v int64
				fmt.Sscan(id, &v)
				streamed = append(streamed, v)
			}
		}
	}
	ids := make([]int64, len(got))
	for i, m := range got {
		ids[i] = m.ID
	}
	assert.Equal(t, ids, streamed[:len(ids)])
}

// TestNodesQuotas: --max-queue, --max-peers and --max-net-store count
// every node's rows. (One address's share of a queue, --via-addr-share,
// is counted per node: off here.)
func TestNodesQuotas(t *testing.T) {
	nodes := newTestNodes(t, 2, func(c *config) { c.MaxQueue, c.MaxPeers, c.ViaAddrShare = 5, 3, 0 })
	const net = "quota"
	var wg sync.WaitGroup
	var logins, full atomic.Int64
	for i := range 8 {
		wg.Go(func() {
			rep := nodes[i%2].get("/api/v1/client/login", url.Values{"net": {net}})
			switch rep.Status {
			case http.StatusOK:
				logins.Add(1)
			default:
				full.Add(1)
			}
		})
	}
	wg.Wait()
	var n int
	require.NoError(t, nodes[0].store.r.QueryRow(`SELECT count(*) FROM tokens WHERE net = ?`, net).Scan(&n))
	assert.Equal(t, 3, n, "logins stored across both nodes")
	assert.Equal(t, int64(3), logins.Load(), "--max-peers 3 across both nodes")
	assert.Equal(t, int64(5), full.Load())

	tok, _ := nodes[0].login("queue")
	var accepted, refused atomic.Int64
	for i := range 12 {
		wg.Go(func() {
			rep := nodes[i%2].postJSON("/api/v1/client/pushreq", tok, map[string]any{"sim_req": map[string]any{"simMethod": "GET", "simEndpoint": "/q"}})
			switch {
			case rep.Status == http.StatusCreated:
				accepted.Add(1)
			case rep.Status == http.StatusTooManyRequests && rep.errorCode() == "queue_full":
				refused.Add(1)
			default:
				t.Errorf("push: %d %s", rep.Status, rep.Body)
			}
		})
	}
	wg.Wait()
	assert.Equal(t, int64(5), accepted.Load(), "--max-queue 5 across both nodes")
	assert.Equal(t, int64(7), refused.Load())
}

// TestNodesOneJanitor: one node at a time runs the janitor's purge; when
// it stops, another takes over.
func TestNodesOneJanitor(t *testing.T) {
	nodes := newTestNodes(t, 3)
	ctx := context.Background()
	turns := 0
	var holder *testRelay
	for _, n := range nodes {
		if n.store.janitorTurn(ctx) {
			turns++
			holder = n
		}
	}
	require.Equal(t, 1, turns, "nodes whose janitor runs")
	assert.True(t, holder.store.janitorTurn(ctx), "the holder keeps its turn")
	require.NoError(t, holder.rel.stop())
	others := 0
	for _, n := range nodes {
		if n != holder && n.store.janitorTurn(ctx) {
			others++
		}
	}
	assert.Equal(t, 1, others, "another node takes the janitor over")
}

// TestNodesListenerReconnects: a node whose listening connection is
// terminated listens again and wakes its waiters, which read the store: a
// request pushed on A while B was deaf still reaches B's SimServer long
// before its wait ends.
func TestNodesListenerReconnects(t *testing.T) {
	nodes := newTestNodes(t, 2)
	a, b := nodes[0], nodes[1]
	const net, key = "deaf", "key-0123456789abcdef"
	b.pullReqs(net, key, nil)
	tok, _ := a.login(net)

	asleep := b.srv.poller.asleep.Load()
	polled := async(func() reply {
		return b.get("/api/v1/server/pullreqsmart", url.Values{"net": {net}, "key": {key}, "wait": {"25"}})
	})
	b.waitAsleep(asleep + 1)
	bus := b.rel.bus
	before := bus.reconnects.Load()
	var killed int
	require.NoError(t, a.store.r.QueryRow(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE application_name = ? AND pid <> pg_backend_pid()`, listenAppName).Scan(&killed))
	require.Positive(t, killed)
	waitFor(t, 10*time.Second, func() bool { return !bus.listening.Load() || bus.reconnects.Load() > before },
		"B to notice its listening connection is gone")
	rid := a.push(tok, map[string]any{"simMethod": "GET", "simEndpoint": "/while-deaf"})
	rep := within(t, 10*time.Second, polled, "B's poll, after B listens again")
	assert.Contains(t, string(rep.Body), rid)
	waitFor(t, 10*time.Second, func() bool { return bus.reconnects.Load() > before && bus.listening.Load() },
		"B to listen again")
}

// TestNodesMigrateOnce: nodes starting at once on an empty database
// migrate it once.
func TestNodesMigrateOnce(t *testing.T) {
	url := newTestSchema(t, needPostgres(t))
	var wg sync.WaitGroup
	stores := make([]*store, 4)
	errs := make([]error, 4)
	for i := range stores {
		wg.Go(func() { stores[i], errs[i] = openStore(context.Background(), url, testStoreOptions(nil)) })
	}
	wg.Wait()
	for i, st := range stores {
		require.NoError(t, errs[i])
		defer st.Close()
	}
	var rows, version int
	require.NoError(t, stores[0].r.QueryRow(`SELECT count(*), max(version) FROM c2cvia_schema`).Scan(&rows, &version))
	assert.Equal(t, 1, rows)
	assert.Equal(t, len(pgMigrations), version)
}

// TestNodesStorageBudget: --max-net-store counts the bytes every node
// stored: pushes on both nodes at once never take the net past it.
func TestNodesStorageBudget(t *testing.T) {
	const budget = 1 << 20
	nodes := newTestNodes(t, 2, func(c *config) {
		c.MaxNetStore, c.MaxUnservedStore, c.MaxAddrStore, c.MaxQueue, c.ViaAddrShare = budget, 0, 0, 0, 0
	})
	const net, key = "bytes", "key-0123456789abcdef"
	nodes[0].pullReqs(net, key, nil)
	tok, _ := nodes[0].login(net)
	body := strings.Repeat("x", 100<<10)
	var wg sync.WaitGroup
	var accepted, refused atomic.Int64
	for i := range 24 {
		wg.Go(func() {
			rep := nodes[i%2].postJSON("/api/v1/client/pushreq", tok, map[string]any{
				"sim_req": map[string]any{"simMethod": "POST", "simEndpoint": "/b", "simBody": body}})
			switch {
			case rep.Status == http.StatusCreated:
				accepted.Add(1)
			case rep.Status == http.StatusInsufficientStorage && rep.errorCode() == "net_store_full":
				refused.Add(1)
			default:
				t.Errorf("push: %d %s", rep.Status, rep.Body)
			}
		})
	}
	wg.Wait()
	var used int64
	require.NoError(t, nodes[1].store.r.QueryRow(`SELECT bytes FROM net_usage WHERE net = ?`, net).Scan(&used))
	t.Logf("accepted %d, refused %d, %d bytes stored of %d", accepted.Load(), refused.Load(), used, budget)
	assert.LessOrEqual(t, used, int64(budget))
	assert.Positive(t, refused.Load())
	assert.GreaterOrEqual(t, accepted.Load(), int64(budget/(100<<10))-1, "the budget filled")
}

// TestNodesMaxStore: --max-store counts the payload every node stored
// (net_usage and the logins), which each node measures every second: what
// node A wrote stops node B too.
func TestNodesMaxStore(t *testing.T) {
	const budget = 2 << 20
	nodes := newTestNodes(t, 2, func(c *config) {
		c.MaxStore, c.MaxNetStore, c.MaxUnservedStore, c.MaxAddrStore, c.MaxQueue = budget, 0, 0, 0, 0
	})
	a, b := nodes[0], nodes[1]
	tokA, _ := a.login("full")
	tokB, _ := b.login("full")
	big := strings.Repeat("y", 192<<10)
	push := func(r *testRelay, tok, body string) reply {
		return r.postJSON("/api/v1/client/pushreq", tok, map[string]any{"sim_req": map[string]any{"simMethod": "POST", "simEndpoint": "/f", "simBody": body}})
	}
	for i := 0; ; i++ {
		require.Less(t, i, 200, "node A never reached --max-store")
		rep := push(a, tokA, big)
		if rep.Status == http.StatusInsufficientStorage {
			require.Equal(t, "store_full", rep.errorCode())
			break
		}
		require.Equal(t, http.StatusCreated, rep.Status, string(rep.Body))
	}
	// B's own small pushes could not fill it: what A wrote does.
	waitFor(t, 10*time.Second, func() bool {
		rep := push(b, tokB, "small")
		return rep.Status == http.StatusInsufficientStorage && rep.errorCode() == "store_full"
	}, "node B to refuse once A filled the store")
	var used int64
	require.NoError(t, b.store.r.QueryRow(`SELECT sum(bytes) FROM net_usage`).Scan(&used))
	assert.LessOrEqual(t, used, int64(budget))
}

// TestNodesPreflights: a SimServer that asks for its gateway's browser
// preflights, polling node B, gets those sent to node A; once it stops
// asking, A answers them itself again.
func TestNodesPreflights(t *testing.T) {
	nodes := newTestNodes(t, 2)
	a, b := nodes[0], nodes[1]
	const net, key = "pre", "key-0123456789abcdef"
	preflight := func() reply {
		req, err := http.NewRequest(http.MethodOptions, a.URL+"/via/"+net+"/api", nil)
		require.NoError(t, err)
		req.Header.Set("Origin", "https://web.example")
		req.Header.Set("Access-Control-Request-Method", "PUT")
		return a.do(req)
	}
	b.pullReqs(net, key, url.Values{"preflight": {"true"}}) // claims the net
	flushStoreWrites(t, b)
	b.pullReqs(net, key, url.Values{"preflight": {"true"}}) // written once the net's row exists
	flushStoreWrites(t, b)
	called := async(preflight)
	var got []leased
	waitFor(t, 10*time.Second, func() bool {
		got = b.pullReqs(net, key, url.Values{"preflight": {"true"}})
		return len(got) > 0
	}, "the preflight sent to A to reach the SimServer polling B")
	assert.Contains(t, string(got[0].SimReq), `"OPTIONS"`)
	res := b.answer(net, key, got[0].RID, map[string]any{"simStatus": 299})
	require.Equal(t, http.StatusOK, res.Status, string(res.Body))
	assert.Equal(t, 299, within(t, 5*time.Second, called, "the preflight's answer").Status)

	b.pullReqs(net, key, nil) // no longer asks
	flushStoreWrites(t, b)
	rep := preflight()
	assert.Equal(t, http.StatusNoContent, rep.Status, "answered by the relay: %s", rep.Body)
}

// TestNodesPublishReceivers: a publish counts the topic's subscribers on
// every node, not only those its own node saw subscribe.
func TestNodesPublishReceivers(t *testing.T) {
	nodes := newTestNodes(t, 2)
	a, b := nodes[0], nodes[1]
	const net = "news"
	ada, _ := a.login(net)
	bob, _ := b.login(net)
	cy, _ := b.login(net)
	for _, tok := range []string{bob, cy} {
		rep := b.postJSON("/api/v1/peer/subscribe", tok, map[string]any{"topic": "t"})
		require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	}
	rep := a.postJSON("/api/v1/peer/publish", ada, map[string]any{"topic": "t", "data": 1})
	require.Equal(t, http.StatusCreated, rep.Status, string(rep.Body))
	assert.Equal(t, json.Number("2"), rep.JSON["receivers"], "both subscribed on B")
	rep = b.postJSON("/api/v1/peer/publish", bob, map[string]any{"topic": "t", "data": 2})
	require.Equal(t, http.StatusCreated, rep.Status, string(rep.Body))
	assert.Equal(t, json.Number("1"), rep.JSON["receivers"], "the publisher is not its own receiver")
}
