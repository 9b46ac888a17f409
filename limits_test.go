// Quotas: each answers 429 with Retry-After and the JSON error shape and
// writes nothing, and the per-net counts behind them stay exact.

package main

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// assertLimited checks a 429: its code, its Retry-After and CORS header.
func assertLimited(t *testing.T, rep reply, code, retryAfter string) {
	t.Helper()
	assertErrorShape(t, rep, http.StatusTooManyRequests, code)
	assert.Equal(t, retryAfter, rep.Header.Get("Retry-After"), "Retry-After")
	assert.Equal(t, "*", rep.Header.Get("Access-Control-Allow-Origin"), "a browser can read the 429")
}

func refusals(r *testRelay, limit string) float64 {
	return r.scrape()[series("c2cvia_limit_refusals_total", "limit", limit)]
}

func TestQueueFull(t *testing.T) {
	r := newTestRelay(t, func(c *config) { c.MaxQueue = 3 })
	tok, _ := r.login("alpha")
	var rids []string
	for range 3 {
		rids = append(rids, r.push(tok, map[string]any{"simEndpoint": "/x"}))
	}
	full := func(step string) {
		t.Helper()
		before := storeRows(t, r)
		rep := r.postJSON("/api/v1/client/pushreq", tok, map[string]any{"simEndpoint": "/over"})
		assertLimited(t, rep, "queue_full", "1")
		assert.Equal(t, before, storeRows(t, r), "%s: a refused pushreq writes nothing", step)
	}
	full("three queued")
	beta, _ := r.login("beta")
	r.push(beta, map[string]any{"simEndpoint": "/x"}) // a quota per net

	leaseOne(t, r, "alpha", rids[0], url.Values{"lease": {"600"}})
	r.push(tok, map[string]any{"simEndpoint": "/x"}) // a handed-out request is no longer queued
	full("queued again")
	require.Equal(t, http.StatusOK, r.answer("alpha", testKey, rids[1], map[string]any{}).Status)
	r.push(tok, map[string]any{"simEndpoint": "/x"}) // an answered one neither
	full("queued once more")

	// The counts come back from the file at open.
	st2, err := openStore(context.Background(), r.DBPath, storeOptions{MaxQueue: 3, Now: r.clock.Now})
	require.NoError(t, err)
	t2, err := st2.lookupToken(context.Background(), tok)
	require.NoError(t, err)
	_, err = st2.pushRequest(context.Background(), t2, []byte(`{"simEndpoint":"/x"}`))
	assert.ErrorIs(t, err, errQueueFull)
	require.NoError(t, st2.Close())

	r.clock.Advance(5*time.Minute + time.Second) // every request expired
	purgeNow(t, r)
	for range 3 {
		r.push(tok, map[string]any{"simEndpoint": "/x"})
	}
	full("after expiry")
	assert.Equal(t, 4.0, refusals(r, "queue"))
}

func TestNetFull(t *testing.T) {
	r := newTestRelay(t, func(c *config) { c.MaxPeers = 2 })
	r.login("alpha")
	r.login("alpha")
	before := storeRows(t, r)
	assertLimited(t, r.get("/api/v1/client/login", url.Values{"net": {"alpha"}}), "net_full", "60")
	assertLimited(t, r.postForm("/api/v1/client/login", url.Values{"net": {"alpha"}}), "net_full", "60")
	assert.Equal(t, before, storeRows(t, r), "a refused login writes nothing")
	r.login("beta") // a quota per net

	r.clock.Advance(24*time.Hour + time.Second) // the logins expired
	assertLimited(t, r.get("/api/v1/client/login", url.Values{"net": {"alpha"}}), "net_full", "60")
	purgeNow(t, r) // and are removed
	r.login("alpha")
	assert.Equal(t, 3.0, refusals(r, "peers"))

	// The flag reaches the store through serve.
	base, _ := startRun(t, map[string]string{"C2CVIA_MAX_PEERS": "1"}, "serve", "--addr", "127.0.0.1:0", "--db", r.DBPath+".2")
	other := &testRelay{t: t, URL: base}
	other.login("alpha")
	assertLimited(t, other.get("/api/v1/client/login", url.Values{"net": {"alpha"}}), "net_full", "60")
}

// storeStatuses counts the requests by stored status straight from the file.
func storeStatuses(t *testing.T, r *testRelay) map[string]int64 {
	t.Helper()
	out := map[string]int64{statusQueued: 0, statusDelivered: 0, statusAnswered: 0, statusExpired: 0, statusFailed: 0}
	rows, err := r.store.r.Query(`SELECT status, count(*) FROM requests GROUP BY status`)
	require.NoError(t, err)
	defer rows.Close()
	for rows.Next() {
		var status string
		var n int64
		require.NoError(t, rows.Scan(&status, &n))
		out[status] = n
	}
	require.NoError(t, rows.Err())
	return out
}

// assertCountsExact compares the store's in-memory counts with the file.
func assertCountsExact(t *testing.T, r *testRelay, step string) {
	t.Helper()
	flushStoreWrites(t, r)
	assert.Equal(t, storeStatuses(t, r), r.store.counts.statusTotals(), "%s: requests by status", step)
	perNet := func(q string) map[string]int {
		out := map[string]int{}
		rows, err := r.store.r.Query(q)
		require.NoError(t, err)
		defer rows.Close()
		for rows.Next() {
			var net string
			var n int
			require.NoError(t, rows.Scan(&net, &n))
			out[net] = n
		}
		return out
	}
	r.store.counts.mu.Lock()
	queued, tokens := maps(r.store.counts.queued), maps(r.store.counts.tokens)
	r.store.counts.mu.Unlock()
	assert.Equal(t, perNet(`SELECT net, count(*) FROM requests WHERE status = 'queued' GROUP BY net`), queued, "%s: queued per net", step)
	assert.Equal(t, perNet(`SELECT net, count(*) FROM tokens GROUP BY net`), tokens, "%s: logins per net", step)
}

func maps(m map[string]int) map[string]int {
	out := map[string]int{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// TestStoreCountsExact: the counts follow the relay's own writes exactly,
// with no count of the file after the one at open; when another process
// writes (c2cvia purge), the janitor's sync counts again.
func TestStoreCountsExact(t *testing.T) {
	r := newTestRelay(t, func(c *config) { c.MaxAttempts = 2 })
	alpha, _ := r.login("alpha")
	beta, _ := r.login("beta")
	r.login("beta")
	assertCountsExact(t, r, "logins")
	var rids []string
	for i := range 6 {
		tok := alpha
		if i%3 == 0 {
			tok = beta
		}
		rids = append(rids, r.push(tok, map[string]any{"simEndpoint": "/x"}))
	}
	assertCountsExact(t, r, "pushes")
	r.pullReqs("alpha", testKey, url.Values{"max": {"2"}, "lease": {"1"}})
	r.pullReqs("beta", betaKey, url.Values{"lease": {"600"}})
	assertCountsExact(t, r, "leases")
	r.clock.Advance(2 * time.Second)
	r.pullReqs("alpha", testKey, url.Values{"max": {"1"}, "lease": {"1"}}) // a redelivery
	assertCountsExact(t, r, "redelivery")
	r.answer("alpha", testKey, rids[2], map[string]any{})
	r.answer("beta", betaKey, rids[0], map[string]any{})
	r.answer("beta", betaKey, rids[3], map[string]any{}) // still queued
	assertCountsExact(t, r, "answers")
	r.clock.Advance(2 * time.Second)
	purgeNow(t, r)
	assertCountsExact(t, r, "failed written down")
	_, err := r.store.purge(context.Background(), purgeOptions{Net: "alpha", All: true, DryRun: true})
	require.NoError(t, err)
	assertCountsExact(t, r, "dry run")
	r.clock.Advance(5 * time.Minute)
	purgeNow(t, r)
	assertCountsExact(t, r, "expired")
	r.clock.Advance(24 * time.Hour)
	purgeNow(t, r)
	assertCountsExact(t, r, "retention and logins")

	// The relay's own commits and checkpoints do not make it count again.
	tok, _ := r.login("gamma")
	r.push(tok, map[string]any{"simEndpoint": "/x"})
	r.push(tok, map[string]any{"simEndpoint": "/y"})
	waitFor(t, 10*time.Second, func() bool { return r.store.checkpoints.Load() > 0 }, "a checkpoint")
	require.NoError(t, r.store.syncCounts(context.Background()))
	assert.Zero(t, r.store.counts.recounts.Load())

	// Another process purges: the relay's counts are behind until synced.
	out, err := runCLI(t, nil, "purge", "--db", r.DBPath, "--all", "--net", "gamma")
	require.NoError(t, err, out)
	assert.Equal(t, int64(2), r.store.counts.statusTotals()[statusQueued], "not seen yet")
	require.NoError(t, r.store.syncCounts(context.Background()))
	assert.Equal(t, int64(1), r.store.counts.recounts.Load())
	assertCountsExact(t, r, "after another process purged")
}
