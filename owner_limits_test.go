// Limits that serve the owner: a SimServer with its net's key is charged to
// its net, a SimClient with its token to the token, a gateway request to a
// served net to that net; only what no credential pays for is charged to
// the client address. The bench at 16 clients against serve's defaults
// gets no 429.

package main

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCallersDoNotThrottleTheirSimServer: with the address's bucket empty
// (callers sharing the SimServer's address used it up), the SimServer, the
// SimClients and the gateway requests to the served net still get through;
// a wrong key, an unknown token, a claim of a new net and a gateway request
// to a net nobody serves are charged to the address, and refused.
func TestCallersDoNotThrottleTheirSimServer(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) {
		c.RateIP, c.RateIPBurst = 1, 3
		c.RateToken, c.RateTokenBurst = 1, 100
		c.RateServer, c.RateServerBurst = 1, 100
		c.RateVia, c.RateViaBurst = 1, 100
	})
	r.pullReqs("shop", testKey, nil) // claims the net: charged to the address too
	tok, _ := r.login("shop")
	r.login("shop") // the address's third call: its bucket is empty now
	assertLimited(t, r.get("/api/v1/client/login", url.Values{"net": {"shop"}}), "rate_limited", "1")

	for i := range 20 {
		rid := r.push(tok, map[string]any{"simEndpoint": "/x"})
		got := r.pullReqs("shop", testKey, nil)
		require.Len(t, got, 1, "call %d", i)
		require.Equal(t, http.StatusOK, r.answer("shop", testKey, rid, map[string]any{"simStatus": 200}).Status)
		require.Equal(t, http.StatusOK, r.get("/api/v1/client/pullres", url.Values{"token": {tok}, "rid": {rid}}).Status)
		req, err := http.NewRequest(http.MethodGet, r.URL+"/via/shop/page", nil)
		require.NoError(t, err)
		req.Header.Set("Prefer", "respond-async")
		require.Equal(t, http.StatusAccepted, r.do(req).Status, "a gateway request to the served net, %d", i)
	}

	// What no credential pays for is the address's, which is empty.
	assertLimited(t, r.get("/api/v1/server/pullreqsmart", url.Values{"net": {"shop"}, "key": {"a-wrong-key-0123456789"}, "wait": {"0"}}),
		"rate_limited", "1")
	assertLimited(t, r.get("/api/v1/client/check", url.Values{"token": {"unknown"}, "rid": {"x"}}), "rate_limited", "1")
	assertLimited(t, r.get("/api/v1/server/pullreqsmart", url.Values{"net": {"new-net"}, "key": {testKey}, "wait": {"0"}}),
		"rate_limited", "1")
	assertLimited(t, r.get("/via/nobody/page", nil), "rate_limited", "1")
	assertLimited(t, r.get("/api/v1/server/pullreqsmart", url.Values{"net": {"shop"}, "wait": {"0"}}), "rate_limited", "1")
	assert.Zero(t, r.count("nets WHERE name = 'new-net'"), "a refused claim writes nothing")

	m := r.scrape()
	for _, limit := range []string{"rate_token", "rate_server", "rate_via"} {
		assert.Zero(t, m[series("c2cvia_limit_refusals_total", "limit", limit)], limit)
	}
	assert.Equal(t, 1.0, m[series("c2cvia_rate_limiter_buckets", "limiter", "server")])
	assert.Equal(t, 1.0, m[series("c2cvia_rate_limiter_buckets", "limiter", "via")])
}

// TestRateServerAndViaPerNet: a net's SimServer and its gateway requests
// each have a bucket per net, with Retry-After; another net's are apart.
func TestRateServerAndViaPerNet(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) {
		c.RateServer, c.RateServerBurst = 0.5, 2
		c.RateVia, c.RateViaBurst = 0.5, 1
		c.ViaAddrShare = 0 // the net's bucket alone: an address's share of it is TestGatewayShares'
	})
	r.pullReqs("alpha", testKey, nil)
	r.pullReqs("alpha", testKey, nil)
	assertLimited(t, r.get("/api/v1/server/pullreqsmart", url.Values{"net": {"alpha"}, "key": {testKey}, "wait": {"0"}}),
		"rate_limited", "2")
	before := storeRows(t, r)
	assertLimited(t, r.postJSON("/api/v1/server/pushres", testKey, map[string]any{"net": "alpha", "rid": "x"}), "rate_limited", "2")
	assert.Equal(t, before, storeRows(t, r), "a refused call writes nothing")
	r.pullReqs("beta", testKey, nil) // a bucket per net

	async := func(net string) reply {
		req, err := http.NewRequest(http.MethodGet, r.URL+"/via/"+net+"/page", nil)
		require.NoError(t, err)
		req.Header.Set("Prefer", "respond-async")
		return r.do(req)
	}
	assert.Equal(t, http.StatusAccepted, async("alpha").Status)
	before = storeRows(t, r)
	assertLimited(t, async("alpha"), "rate_limited", "2")
	assert.Equal(t, before, storeRows(t, r), "a refused gateway request is not stored")
	assert.Equal(t, http.StatusAccepted, async("beta").Status)

	r.advance(2 * time.Second)
	assert.Equal(t, http.StatusAccepted, async("alpha").Status)
	r.pullReqs("alpha", testKey, nil)
	m := r.scrape()
	assert.Equal(t, 2.0, m[series("c2cvia_limit_refusals_total", "limit", "rate_server")])
	assert.Equal(t, 1.0, m[series("c2cvia_limit_refusals_total", "limit", "rate_via")])
}

// TestBenchAgainstDefaultsGetsNo429: one host driving the bench's exchange
// and via scenarios at 16 clients against a relay on serve's defaults (the
// real clock, so the buckets refill as they do in production) gets no 429.
func TestBenchAgainstDefaultsGetsNo429(t *testing.T) {
	t.Parallel()
	base, stop := startRun(t, nil, "serve", "--addr", "127.0.0.1:0", "--db", testDB(t, "relay.db"))
	_, stderr, err := runBenchCLI(t, "bench", "--url", base, "--json", "--duration", "1s",
		"--scenario", "exchange,via", "--clients", "16", "--progress", "never")
	require.NoError(t, err, stderr)
	m, _ := scrapeText(t, base)
	for _, limit := range []string{"rate_ip", "rate_token", "rate_server", "rate_via", "polls_per_token", "queue", "peers"} {
		assert.Zero(t, m[series("c2cvia_limit_refusals_total", "limit", limit)], limit)
	}
	require.NoError(t, stop())
}

// TestViaCannotStarveSimClients: anonymous gateway requests that fill
// --max-queue (Prefer: respond-async, so they stay queued) leave the net's
// logged-in SimClients their own queue; each queue frees as its requests
// are handed out, and the counts come back from the file at open.
func TestViaCannotStarveSimClients(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) {
		c.MaxQueue = 3
		c.ViaAddrShare = 0 // one address fills the gateway's queue: its share of it is TestGatewayShares'
	})
	via := func(i int) reply {
		req, err := http.NewRequest(http.MethodGet, r.URL+"/via/shop/junk"+strconv.Itoa(i), nil)
		require.NoError(t, err)
		req.Header.Set("Prefer", "respond-async")
		return r.do(req)
	}
	for i := range 3 {
		require.Equal(t, http.StatusAccepted, via(i).Status)
	}
	assertLimited(t, via(3), "queue_full", "1")

	tok, _ := r.login("shop")
	for range 3 {
		r.push(tok, map[string]any{"simEndpoint": "/order"})
	}
	assertLimited(t, r.postJSON("/api/v1/client/pushreq", tok, map[string]any{"simEndpoint": "/order"}), "queue_full", "1")

	got := r.pullReqs("shop", testKey, url.Values{"max": {"1"}}) // the oldest: a gateway request
	require.Len(t, got, 1)
	assert.Equal(t, viaPeer, got[0].From)
	assertLimited(t, r.postJSON("/api/v1/client/pushreq", tok, map[string]any{"simEndpoint": "/order"}), "queue_full", "1")
	require.Equal(t, http.StatusAccepted, via(4).Status, "its own queue has room again")

	st2, err := openStore(context.Background(), r.DBPath, testStoreOptions(r.clock, func(o *storeOptions) { o.MaxQueue = 3 }))
	require.NoError(t, err)
	defer st2.Close()
	assert.Equal(t, map[string]int{"shop": 3, "shop via": 3}, st2.counts.queued)
	r.store.counts.mu.Lock()
	assert.Equal(t, map[string]int{"shop": 3, "shop via": 3}, r.store.counts.queued)
	r.store.counts.mu.Unlock()
	assert.Equal(t, viaPeer, detachedFrom, "the store's name for the gateway's sender")
}
