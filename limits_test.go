// Rate limits and quotas: each answers 429 with Retry-After and the JSON
// error shape and writes nothing; the per-net counts behind the quotas stay
// exact; X-Forwarded-For counts only from trusted proxies.

package main

import (
	"context"
	"database/sql"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
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

// getFrom calls GET path as if forwarded for the given X-Forwarded-For.
func (r *testRelay) getFrom(xff, path string, q url.Values) reply {
	r.t.Helper()
	req, err := http.NewRequest(http.MethodGet, r.URL+path+"?"+q.Encode(), nil)
	require.NoError(r.t, err)
	if xff != "" {
		req.Header.Set("X-Forwarded-For", xff)
	}
	return r.do(req)
}

func refusals(r *testRelay, limit string) float64 {
	return r.scrape()[series("c2cvia_limit_refusals_total", "limit", limit)]
}

func TestRateLimitPerIP(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.RateIP, c.RateIPBurst = 1, 2 })
	login := url.Values{"net": {"alpha"}}
	r.get("/api/v1/client/login", login)
	r.get("/api/v1/client/login", login)
	before := storeRows(t, r)
	assertLimited(t, r.get("/api/v1/client/login", login), "rate_limited", "1")
	assertLimited(t, r.get("/nope", nil), "rate_limited", "1")
	assert.Equal(t, before, storeRows(t, r), "a refused call writes nothing")

	assert.Equal(t, http.StatusOK, r.get("/healthz", nil).Status, "/healthz is not limited")
	assert.Equal(t, http.StatusNoContent, preflight(t, r.URL, "/api/v1/client/login", "https://app.example").Status)
	m := r.scrape() // /metrics is not limited either
	assert.Equal(t, 2.0, m[series("c2cvia_limit_refusals_total", "limit", "rate_ip")])
	assert.Equal(t, 1.0, m[series(httpRequests, "route", "GET /api/v1/client/login", "code", "429")],
		"a call refused before the mux is counted under its route")

	r.clock.Advance(time.Second) // one call's worth refills
	assert.Equal(t, http.StatusOK, r.get("/api/v1/client/login", login).Status)
	assertLimited(t, r.get("/api/v1/client/login", login), "rate_limited", "1")
}

// TestRateLimitRetryAfter: Retry-After is the bucket's own delay, in whole
// seconds rounded up.
func TestRateLimitRetryAfter(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.RateIP, c.RateIPBurst = 0.25, 2 }) // a call per 4 s
	for range 2 {
		require.Equal(t, http.StatusOK, r.get("/healthz", nil).Status)
		r.get("/api/v1/client/check", nil)
	}
	assertLimited(t, r.get("/api/v1/client/check", nil), "rate_limited", "4")
	r.clock.Advance(1500 * time.Millisecond)
	assertLimited(t, r.get("/api/v1/client/check", nil), "rate_limited", "3") // 2.5 s
	r.clock.Advance(2400 * time.Millisecond)
	assertLimited(t, r.get("/api/v1/client/check", nil), "rate_limited", "1") // 0.1 s: at least 1
	r.clock.Advance(200 * time.Millisecond)
	assert.Equal(t, "missing_token", r.get("/api/v1/client/check", nil).errorCode(), "refused calls took nothing")
}

func TestRateLimitPerToken(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.RateToken, c.RateTokenBurst = 1, 2 })
	a, _ := r.login("alpha")
	b, _ := r.login("alpha")
	rid := r.push(a, map[string]any{"simEndpoint": "/x"})  // a: 1
	assert.Equal(t, statusQueued, ridStatus(t, r, a, rid)) // a: 2
	before := storeRows(t, r)
	rep := r.postJSON("/api/v1/client/pushreq", a, map[string]any{"simEndpoint": "/y"})
	assertLimited(t, rep, "rate_limited", "1")
	assert.Equal(t, before, storeRows(t, r), "a refused pushreq writes nothing")
	r.push(b, map[string]any{"simEndpoint": "/z"}) // b has its own bucket
	// Logins and SimServer calls are not charged to a token.
	r.login("alpha")
	r.pullReqs("alpha", testKey, nil)

	// Preflights are not charged, whatever they carry; unknown tokens get
	// no bucket.
	c, _ := r.login("alpha")
	for range 5 {
		req, err := http.NewRequest(http.MethodOptions, r.URL+"/api/v1/client/check?token="+c, nil)
		require.NoError(t, err)
		req.Header.Set("Authorization", "Bearer "+c)
		req.Header.Set("Origin", "https://app.example")
		assert.Equal(t, http.StatusNoContent, r.do(req).Status)
		assert.Equal(t, "unknown_token", r.get("/api/v1/client/check", url.Values{"token": {"bogus-" + c}, "rid": {rid}}).errorCode())
	}
	assert.Equal(t, "not_found", r.get("/api/v1/client/check", url.Values{"token": {c}, "rid": {rid}}).errorCode())
	assert.Equal(t, "not_found", r.get("/api/v1/client/check", url.Values{"token": {c}, "rid": {rid}}).errorCode())
	assertLimited(t, r.get("/api/v1/client/check", url.Values{"token": {c}, "rid": {rid}}), "rate_limited", "1")

	m := r.scrape()
	assert.Equal(t, 3.0, m[series("c2cvia_rate_limiter_buckets", "limiter", "token")], "a, b and c")
	assert.Equal(t, 2.0, m[series("c2cvia_limit_refusals_total", "limit", "rate_token")])
}

func TestQueueFull(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) {
		c.MaxQueue = 3
		c.ViaAddrShare = 0 // the net's queue alone: an address's share of it is TestClientQueueShare's
	})
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
	st2, err := openStore(context.Background(), r.DBPath, testStoreOptions(r.clock, func(o *storeOptions) { o.MaxQueue, o.ViaAddrShare = 3, 0 }))
	require.NoError(t, err)
	t2, err := st2.lookupToken(context.Background(), tok)
	require.NoError(t, err)
	_, err = st2.pushRequest(context.Background(), t2, []byte(`{"simEndpoint":"/x"}`), "")
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

// startPoll runs a GET long poll until ctx ends; the channel gets its status
// (0 if the call failed, as when ctx ends first).
func startPoll(ctx context.Context, u string) <-chan int {
	ch := make(chan int, 1)
	go func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			ch <- 0
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			ch <- 0
			return
		}
		resp.Body.Close()
		ch <- resp.StatusCode
	}()
	return ch
}

func TestTooManyPolls(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.MaxPollsPerToken = 2 })
	a, _ := r.login("alpha")
	b, _ := r.login("alpha")
	rid := r.push(a, map[string]any{"simEndpoint": "/x"})
	pollURL := func(tok string) string {
		return r.URL + "/api/v1/client/pullsmart?" + url.Values{"token": {tok}, "wait": {longWait}}.Encode()
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	firstCtx, cancelFirst := context.WithCancel(ctx)
	defer cancelFirst()
	polls := []<-chan int{startPoll(firstCtx, pollURL(a)), startPoll(ctx, pollURL(a))}
	r.waitPolling(2)

	before := storeRows(t, r)
	rep := r.get("/api/v1/client/pullsmart", url.Values{"token": {a}, "wait": {"5"}})
	assertLimited(t, rep, "too_many_polls", "1")
	assert.Equal(t, before, storeRows(t, r), "a refused poll writes nothing")
	assert.Equal(t, http.StatusAccepted, r.get("/api/v1/client/pullres", url.Values{"token": {a}, "rid": {rid}}).Status,
		"a call that does not wait needs no slot")
	assert.Equal(t, http.StatusNoContent, r.get("/api/v1/client/pullsmart", url.Values{"token": {a}, "wait": {"0"}}).Status)
	polls = append(polls, startPoll(ctx, pollURL(b))) // b has its own slots
	r.waitPolling(3)

	cancelFirst() // one of a's polls ends: its slot is free
	assert.Equal(t, 0, <-polls[0])
	r.waitPolling(2)
	polls = append(polls, startPoll(ctx, pollURL(a)))
	r.waitPolling(3)
	assert.Equal(t, 1.0, refusals(r, "polls_per_token"))
	cancel()
	for _, p := range polls[1:] {
		<-p
	}
}

func TestNetFull(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.MaxPeers = 2 })
	r.login("alpha")
	r.login("alpha")
	before := storeRows(t, r)
	assertLimited(t, r.get("/api/v1/client/login", url.Values{"net": {"alpha"}}), "net_full", "60")
	assertLimited(t, r.postForm("/api/v1/client/login", url.Values{"net": {"alpha"}}), "net_full", "60")
	assert.Equal(t, before, storeRows(t, r), "a refused login writes nothing")
	r.login("beta") // a quota per net

	r.clock.Advance(24*time.Hour + time.Second) // the logins expired, idle: a new one takes a slot
	r.login("alpha")
	purgeNow(t, r) // the other is removed
	r.login("alpha")
	assertLimited(t, r.get("/api/v1/client/login", url.Values{"net": {"alpha"}}), "net_full", "60")
	assert.Equal(t, 3.0, refusals(r, "peers"))

	// The flag reaches the store through serve.
	base, _ := startRun(t, map[string]string{"C2CVIA_MAX_PEERS": "1"}, "serve", "--addr", "127.0.0.1:0", "--db", testDB(t, "relay2.db"))
	other := &testRelay{t: t, URL: base}
	other.login("alpha")
	assertLimited(t, other.get("/api/v1/client/login", url.Values{"net": {"alpha"}}), "net_full", "60")
}

// TestTrustProxy: without --trust-proxy X-Forwarded-For is ignored; with
// it, a call from a trusted proxy is charged to the right-most untrusted
// address.
func TestTrustProxy(t *testing.T) {
	t.Parallel()
	t.Run("ignored", func(t *testing.T) {
		r := newTestRelay(t, func(c *config) { c.RateIP, c.RateIPBurst = 1, 1 })
		assert.Equal(t, "missing_token", r.getFrom("192.0.2.1", "/api/v1/client/check", nil).errorCode())
		assertLimited(t, r.getFrom("192.0.2.2", "/api/v1/client/check", nil), "rate_limited", "1")
	})
	t.Run("trusted", func(t *testing.T) {
		r := newTestRelay(t, func(c *config) {
			c.RateIP, c.RateIPBurst = 1, 1
			c.TrustProxy = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("10.0.0.0/8")}
		})
		check := func(xff string) reply { return r.getFrom(xff, "/api/v1/client/check", nil) }
		assert.Equal(t, "missing_token", check("192.0.2.1").errorCode())
		assert.Equal(t, "missing_token", check("192.0.2.2").errorCode())
		assertLimited(t, check("192.0.2.1"), "rate_limited", "1")
		assertLimited(t, check("6.6.6.6, 192.0.2.2, 10.0.0.9"), "rate_limited", "1") // forged left part ignored
		assert.Equal(t, "missing_token", check("192.0.2.3, 10.0.0.9").errorCode())
		assert.Equal(t, "missing_token", check("").errorCode(), "no header: the proxy itself")
	})
}

func TestClientAddr(t *testing.T) {
	t.Parallel()
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8:ffff::/48")}
	for _, tc := range []struct {
		name, remote string
		xff          []string
		want         string
	}{
		{"untrusted peer: header ignored", "192.0.2.1:5000", []string{"6.6.6.6"}, "192.0.2.1"},
		{"one proxy", "10.0.0.1:5000", []string{"192.0.2.7"}, "192.0.2.7"},
		{"forged entries left of the client", "10.0.0.1:5000", []string{"6.6.6.6, 192.0.2.7"}, "192.0.2.7"},
		{"proxy chain", "10.0.0.1:5000", []string{"192.0.2.7, 10.0.0.5, 10.0.0.6"}, "192.0.2.7"},
		{"several headers in order", "10.0.0.1:5000", []string{"6.6.6.6", "192.0.2.7, 10.0.0.5"}, "192.0.2.7"},
		{"all trusted: the left-most", "10.0.0.1:5000", []string{"10.0.0.7, 10.0.0.8"}, "10.0.0.7"},
		{"no header: the peer", "10.0.0.1:5000", nil, "10.0.0.1"},
		{"garbage: the trusted hop right of it", "10.0.0.1:5000", []string{"192.0.2.7, junk, 10.0.0.5"}, "10.0.0.5"},
		{"with ports", "10.0.0.1:5000", []string{"192.0.2.7:1234"}, "192.0.2.7"},
		{"IPv6 with port", "[2001:db8:ffff::1]:5000", []string{"[2001:db8:1::7]:443"}, "2001:db8:1::7"},
		{"IPv4-mapped peer", "[::ffff:10.0.0.1]:5000", []string{"192.0.2.7"}, "192.0.2.7"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, "http://relay/", nil)
			require.NoError(t, err)
			req.RemoteAddr = tc.remote
			for _, v := range tc.xff {
				req.Header.Add("X-Forwarded-For", v)
			}
			got, ok := clientAddr(req, trusted)
			require.True(t, ok)
			assert.Equal(t, tc.want, got.String())
		})
	}
	bucket := func(remote string) string {
		req, err := http.NewRequest(http.MethodGet, "http://relay/", nil)
		require.NoError(t, err)
		req.RemoteAddr = remote
		return clientBucket(req, nil)
	}
	assert.Equal(t, bucket("[2001:db8:1:2::1]:1"), bucket("[2001:db8:1:2:ffff::9]:2"), "an IPv6 /64 is one client")
	assert.NotEqual(t, bucket("[2001:db8:1:2::1]:1"), bucket("[2001:db8:1:3::1]:1"))
	assert.NotEqual(t, bucket("192.0.2.1:1"), bucket("192.0.2.2:1"))
}

// TestKeyedLimiterBounded: buckets that are full again are swept, and the
// map never holds more than its bound.
func TestKeyedLimiterBounded(t *testing.T) {
	t.Parallel()
	k := newBucketLimiter(1, 2, 3)
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	assert.Zero(t, k.reserve("a", t0))
	assert.Zero(t, k.reserve("a", t0))
	assert.Equal(t, time.Second, k.reserve("a", t0), "a's burst is spent")
	assert.Zero(t, k.reserve("b", t0))
	assert.Zero(t, k.reserve("c", t0.Add(30*time.Second)))
	assert.Equal(t, 3, k.size())
	// Full: a and b have refilled, so they go; c has not.
	assert.Zero(t, k.reserve("d", t0.Add(30*time.Second)))
	assert.Equal(t, 2, k.size())
	assert.Zero(t, k.reserve("c", t0.Add(30*time.Second)))
	assert.Equal(t, time.Second, k.reserve("c", t0.Add(30*time.Second)), "c kept its bucket")
	// None is idle: one is dropped to make room.
	assert.Zero(t, k.reserve("e", t0.Add(30*time.Second)))
	assert.Zero(t, k.reserve("f", t0.Add(30*time.Second)))
	assert.Equal(t, 3, k.size())
	// A minute later every bucket is full again: the periodic sweep empties it.
	assert.Zero(t, k.reserve("g", t0.Add(2*time.Minute)))
	assert.Equal(t, 1, k.size())
	assert.Nil(t, newBucketLimiter(0, 2, 3), "0: no limit")
}

// storeStatuses counts the requests by stored status straight from the file.
func storeStatuses(t *testing.T, r *testRelay) map[string]int64 {
	t.Helper()
	out := map[string]int64{statusQueued: 0, statusDelivered: 0, statusAnswered: 0, statusExpired: 0, statusFailed: 0}
	for status, n := range countBy(t, r, `SELECT status, count(*) FROM requests GROUP BY status`) {
		out[status] = int64(n)
	}
	return out
}

// assertCountsExact compares the store's in-memory counts with the file.
func assertCountsExact(t *testing.T, r *testRelay, step string) {
	t.Helper()
	flushStoreWrites(t, r)
	assert.Equal(t, storeStatuses(t, r), r.store.counts.statusTotals(), "%s: requests by status", step)
	r.store.counts.mu.Lock()
	queued, tokens := maps(r.store.counts.queued), maps(r.store.counts.tokens)
	r.store.counts.mu.Unlock()
	assert.Equal(t, countBy(t, r, `SELECT net, count(*) FROM requests WHERE status = 'queued' GROUP BY net`), queued, "%s: queued per net", step)
	assert.Equal(t, countBy(t, r, `SELECT net, count(*) FROM tokens GROUP BY net`), tokens, "%s: logins per net", step)
	assertUsageFromFile(t, r, step)
}

// countBy runs a "SELECT name, count(*) ... GROUP BY name" on the store.
func countBy(t *testing.T, r *testRelay, query string) map[string]int {
	t.Helper()
	out := map[string]int{}
	rows, err := r.store.r.Query(query)
	require.NoError(t, scanEach(rows, err, func(rows *sql.Rows) error {
		var name string
		var n int
		err := rows.Scan(&name, &n)
		out[name] = n
		return err
	}))
	return out
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
	t.Parallel()
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
	// On PostgreSQL nothing tells the relay's commits from other nodes':
	// every sync counts again.
	tok, _ := r.login("gamma")
	r.push(tok, map[string]any{"simEndpoint": "/x"})
	r.push(tok, map[string]any{"simEndpoint": "/y"})
	if testPostgresURL() == "" {
		waitFor(t, 10*time.Second, func() bool { return r.store.checkpoints.Load() > 0 }, "a checkpoint")
		require.NoError(t, r.store.syncCounts(context.Background()))
		assert.Zero(t, r.store.counts.recounts.Load())
	}
	recounts := r.store.counts.recounts.Load()

	// Another process purges: the relay's counts are behind until synced.
	out, err := runCLI(t, nil, "purge", "--db", r.DBPath, "--all", "--net", "gamma")
	require.NoError(t, err, out)
	assert.Equal(t, int64(2), r.store.counts.statusTotals()[statusQueued], "not seen yet")
	require.NoError(t, r.store.syncCounts(context.Background()))
	assert.Equal(t, recounts+1, r.store.counts.recounts.Load())
	assertCountsExact(t, r, "after another process purged")
}

// TestOpsFlagsChecked: serve refuses limits that make no sense, before it
// opens the store.
func TestOpsFlagsChecked(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--rate-ip", "-1"},
		{"--rate-token", "-0.5"},
		{"--rate-ip-burst", "0"},
		{"--rate-token", "5", "--rate-token-burst", "0"},
		{"--max-queue", "-1"},
		{"--max-polls-per-token", "-1"},
		{"--max-peers", "-1"},
		{"--trust-proxy", "10.0.0.0/8,proxy.example"},
	} {
		t.Run(strings.Join(args, " "), func(t *testing.T) {
			db := filepath.Join(t.TempDir(), "relay.db")
			_, err := runCLI(t, nil, append([]string{"serve", "--addr", "127.0.0.1:0", "--db", db}, args...)...)
			require.Error(t, err)
			assert.Contains(t, err.Error(), strings.TrimPrefix(args[len(args)-2], "--"))
			assert.NoFileExists(t, db)
		})
	}
	// 0 turns a rate limit off, whatever its burst.
	base, _ := startRun(t, nil, "serve", "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "relay.db"),
		"--rate-ip", "0", "--rate-ip-burst", "0", "--trust-proxy", "none")
	other := &testRelay{t: t, URL: base}
	for range 3 {
		other.login("alpha")
	}
}

// TestIdleLoginsGiveUpTheirSlot: a net filled to --max-peers by logins
// that then make no call (10,000 of them in 100 s from one address used to
// lock the net for the tokens' 24 h) takes new logins again once they have
// been idle for loginIdle: each new login takes the slot of the login idle
// the longest, which is then unknown. Logins in use keep theirs.
func TestIdleLoginsGiveUpTheirSlot(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.MaxPeers = 3 })
	var toks []string
	for range 3 {
		tok, _ := r.login("alpha")
		toks = append(toks, tok)
		r.advance(time.Millisecond) // seen in this order
	}
	r.postJSON("/api/v1/peer/subscribe", toks[0], map[string]any{"topic": "news"})
	assertLimited(t, r.get("/api/v1/client/login", url.Values{"net": {"alpha"}}), "net_full", "60")

	r.advance(loginIdle - time.Second)
	assertLimited(t, r.get("/api/v1/client/login", url.Values{"net": {"alpha"}}), "net_full", "60")
	r.advance(time.Second)
	// toks[1] is in use; toks[0] and toks[2] have been idle since login.
	require.Equal(t, http.StatusOK, r.get("/api/v1/peer/peers", url.Values{"token": {toks[1]}}).Status)
	r.advance(time.Millisecond)
	fresh, _ := r.login("alpha")
	assert.Equal(t, "unknown_token", r.get("/api/v1/peer/peers", url.Values{"token": {toks[0]}}).errorCode(),
		"the login idle the longest gave up its slot")
	assert.Zero(t, r.count("subscriptions"), "with its subscriptions")
	assert.Equal(t, http.StatusOK, r.get("/api/v1/peer/peers", url.Values{"token": {toks[1]}}).Status)
	r.login("alpha") // takes toks[2]'s
	assert.Equal(t, "unknown_token", r.get("/api/v1/peer/peers", url.Values{"token": {toks[2]}}).errorCode())
	assertLimited(t, r.get("/api/v1/client/login", url.Values{"net": {"alpha"}}), "net_full", "60")
	assert.Equal(t, http.StatusOK, r.get("/api/v1/peer/peers", url.Values{"token": {fresh}}).Status)
	assert.Equal(t, 3, r.count("tokens WHERE net = 'alpha'"))
}
