// The budgets of who sends: one client address cannot fill the store,
// a net nobody serves holds little, a net's gateway holds half its budget
// and one address a share of that gateway (bytes, queue and --rate-via),
// while the net's SimServer and logged-in SimClients go on; a synchronous
// gateway request stops taking budget once answered.

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// trustLoopback makes the test relay read each call's client address from
// X-Forwarded-For, so one test can call from many addresses.
func trustLoopback(c *config) { c.TrustProxy = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")} }

// viaFrom sends a gateway request to net from the client address addr
// (X-Forwarded-For, read when the relay trusts loopback; "": none), with
// body and, if set, a Prefer header.
func (r *testRelay) viaFrom(addr, net, body, prefer string) reply {
	r.t.Helper()
	req, err := http.NewRequest(http.MethodPost, r.URL+"/via/"+net+"/upload", strings.NewReader(body))
	require.NoError(r.t, err)
	if addr != "" {
		req.Header.Set("X-Forwarded-For", addr)
	}
	if prefer != "" {
		req.Header.Set("Prefer", prefer)
	}
	return r.do(req)
}

// pushFrom sends a pushreq with body as tok, from the client address addr.
func (r *testRelay) pushFrom(addr, tok, body string) reply {
	r.t.Helper()
	b, err := json.Marshal(map[string]any{"sim_req": map[string]any{"simEndpoint": "/x", "simBody": body}})
	require.NoError(r.t, err)
	req, err := http.NewRequest(http.MethodPost, r.URL+"/api/v1/client/pushreq", bytes.NewReader(b))
	require.NoError(r.t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("X-Forwarded-For", addr)
	return r.do(req)
}

// serve makes net served: its SimServer polls once (and claims it).
func (r *testRelay) serve(net string) { r.pullReqs(net, testKey, url.Values{"max": {"1"}}) }

// assertUsageFromFile compares the store's in-memory requestUsage with a
// count of the file.
func assertUsageFromFile(t *testing.T, r *testRelay, step string) {
	t.Helper()
	flushStoreWrites(t, r)
	fromFile, err := countRequestUsage(context.Background(), r.store.r)
	require.NoError(t, err)
	c := &r.store.counts
	c.mu.Lock()
	inMemory := newRequestUsage()
	inMemory.apply(c.usage)
	c.mu.Unlock()
	assert.Equal(t, fromFile, inMemory, "%s: what the requests take, by sender", step)
}

// TestAddrStoreBudget: one client address fills its --max-addr-store with
// gateway requests to nets nobody claimed, and then every request it sends
// is refused before it writes, whichever net and whichever way in (a
// pushreq too), while other addresses go on; an IPv6 address counts by its
// /64; once the janitor removes its requests the address writes again.
func TestAddrStoreBudget(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, trustLoopback, func(c *config) {
		c.MaxAddrStore = 100 << 10
		c.MaxUnservedStore, c.ViaAddrShare = 0, 0 // this budget alone
	})
	body := strings.Repeat("a", 30<<10)
	const attacker = "203.0.113.7"
	for i := range 3 {
		require.Equal(t, http.StatusAccepted, r.viaFrom(attacker, fmt.Sprintf("n%d", i), body, "respond-async").Status)
	}
	tok, _ := r.login("n4")
	before := storeRows(t, r)
	assertFull(t, r.viaFrom(attacker, "n3", body, "respond-async"), "addr_store_full")
	assertFull(t, r.viaFrom(attacker, "n0", body, "wait=0"), "addr_store_full")
	assertFull(t, r.pushFrom(attacker, tok, body), "addr_store_full")
	assert.Equal(t, before, storeRows(t, r), "a refused request writes nothing")

	// Others are not held by it: another address, here through the same
	// nets and the same login.
	assert.Equal(t, http.StatusAccepted, r.viaFrom("198.51.100.9", "n0", body, "respond-async").Status)
	assert.Equal(t, http.StatusCreated, r.pushFrom("198.51.100.9", tok, body).Status)

	// One /64 is one address; the next /64 is another.
	for range 3 {
		require.Equal(t, http.StatusAccepted, r.viaFrom("2001:db8:1:2::1", "v6", body, "respond-async").Status)
	}
	assertFull(t, r.viaFrom("2001:db8:1:2:ffff::9", "v6", body, "respond-async"), "addr_store_full")
	assert.Equal(t, http.StatusAccepted, r.viaFrom("2001:db8:1:3::1", "v6", body, "respond-async").Status)
	assertUsageFromFile(t, r, "filled")

	r.advance(15*time.Minute + time.Second) // past --req-ttl and --res-ttl
	purgeNow(t, r)
	assertUsageFromFile(t, r, "purged")
	assert.Equal(t, http.StatusAccepted, r.viaFrom(attacker, "n3", body, "respond-async").Status)
	assertUsageExact(t, r)
}

// TestUnservedNetBudget: a net whose SimServer is not polling takes
// --max-unserved-store of requests (a SimClient may push before its
// SimServer first polls), then 507 unserved_store_full; once its SimServer
// polls it takes its whole budget, and when the SimServer stops polling it
// is held to the small one again.
func TestUnservedNetBudget(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.MaxUnservedStore, c.ViaAddrShare = 64<<10, 0 })
	body := strings.Repeat("u", 30<<10)
	tok, _ := r.login("shop")
	r.push(tok, map[string]any{"simEndpoint": "/x", "simBody": body})
	r.push(tok, map[string]any{"simEndpoint": "/x", "simBody": body})
	before := storeRows(t, r)
	assertFull(t, r.postJSON("/api/v1/client/pushreq", tok, map[string]any{"sim_req": map[string]any{"simEndpoint": "/x", "simBody": body}}),
		"unserved_store_full")
	assertFull(t, r.viaFrom("", "shop", body, "respond-async"), "unserved_store_full")
	assert.Equal(t, before, storeRows(t, r), "a refused request writes nothing")

	r.serve("shop")
	for range 4 {
		r.push(tok, map[string]any{"simEndpoint": "/x", "simBody": body})
	}
	require.Equal(t, http.StatusAccepted, r.viaFrom("", "shop", body, "respond-async").Status)

	r.advance(servedWithin(r.cfg.MaxWait) + time.Second) // its SimServer stopped polling
	assertFull(t, r.postJSON("/api/v1/client/pushreq", tok, map[string]any{"sim_req": map[string]any{"simEndpoint": "/x"}}),
		"unserved_store_full")
	r.serve("shop")
	r.push(tok, map[string]any{"simEndpoint": "/x"})
	assertUsageFromFile(t, r, "served again")
}

// TestSyncGatewayRequestsLeaveTheBudget: a synchronous gateway request (no
// Prefer) has no result token, so nobody but its caller can read its
// answer: it is held in memory while its caller waits, and a net's
// synchronous traffic never takes its budget, while one that got 504
// stays stored.
func TestSyncGatewayRequestsLeaveTheBudget(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) {
		c.MaxNetStore, c.ViaTimeout = 100<<10, 5*time.Second
		c.ViaAddrShare = 0 // the net's budget alone
	})
	r.simServer("shop", func(sim map[string]any) map[string]any { return map[string]any{"simBody": "ok"} })
	body := strings.Repeat("s", 30<<10)
	for i := range 10 { // ten times the net's budget in all
		rep := r.viaFrom("", "shop", body, "")
		require.Equal(t, http.StatusOK, rep.Status, "request %d: %s", i, rep.Body)
	}
	// Held in memory while their callers waited (held.go): never stored.
	flushStoreWrites(t, r)
	assert.Zero(t, r.count(`requests WHERE net = 'shop'`), "synchronous requests are not stored")
	assertCountsExact(t, r, "answered from memory")

	// An async one keeps its answer for its result URL; a 504 stays stored.
	require.Equal(t, http.StatusAccepted, r.viaFrom("", "shop", body, "respond-async").Status)
	waitFor(t, 10*time.Second, func() bool { return r.count(`requests WHERE net = 'shop' AND status = 'answered'`) == 1 }, "the async answer")
	// The SimServer of shop parks and wakes meanwhile, so waiting for one
	// more parked wait would not say the gateway request's is armed: move
	// the clock on until it answers.
	replies := async(func() reply { return r.viaFrom("", "quiet", body, "") })
	var rep reply
	waitFor(t, 10*time.Second, func() bool {
		select {
		case rep = <-replies:
			return true
		default:
			r.advance(5 * time.Second)
			return false
		}
	}, "the gateway request's 504")
	assert.Equal(t, http.StatusGatewayTimeout, rep.Status)
	flushStoreWrites(t, r)
	assert.Equal(t, 1, r.count(`requests WHERE net = 'shop'`), "the async request stays")
	assert.Equal(t, 1, r.count(`requests WHERE net = 'quiet' AND status = 'queued'`), "the 504 stays stored")
	assertUsageExact(t, r)
	assertUsageFromFile(t, r, "a 504 and an async answer stored")
}

// TestGatewayShares: a net's gateway requests take half its byte budget,
// and one client address --via-addr-share of the gateway's bytes, queue
// and --rate-via; another address gets through, and the net's SimClients
// and SimServer are never held by it.
func TestGatewayShares(t *testing.T) {
	t.Parallel()
	const a, b, c = "203.0.113.7", "198.51.100.9", "192.0.2.44"
	owners := func(r *testRelay, step string) {
		t.Helper()
		tok, _ := r.login("shop")
		rid := r.push(tok, map[string]any{"simEndpoint": "/order", "simBody": strings.Repeat("o", 20<<10)})
		for _, l := range r.pullReqs("shop", testKey, url.Values{"max": {"100"}}) {
			require.Equal(t, http.StatusOK, r.answer("shop", testKey, l.RID, map[string]any{"simStatus": 200}).Status, step)
		}
		assert.Equal(t, statusAnswered, ridStatus(t, r, tok, rid), step)
	}

	t.Run("bytes", func(t *testing.T) {
		t.Parallel()
		// The gateway's half: 100 KiB; one address's half of that: 50 KiB.
		r := newTestRelay(t, trustLoopback, func(c *config) { c.MaxNetStore, c.ViaAddrShare = 200<<10, 0.5 })
		r.serve("shop")
		body := strings.Repeat("b", 20<<10)
		for range 2 {
			require.Equal(t, http.StatusAccepted, r.viaFrom(a, "shop", body, "respond-async").Status)
		}
		before := storeRows(t, r)
		assertFull(t, r.viaFrom(a, "shop", body, "respond-async"), "addr_store_full")
		assert.Equal(t, before, storeRows(t, r), "a refused request writes nothing")
		for range 2 {
			require.Equal(t, http.StatusAccepted, r.viaFrom(b, "shop", body, "respond-async").Status, "another address")
		}
		before = storeRows(t, r)
		assertFull(t, r.viaFrom(c, "shop", body, "respond-async"), "net_store_full") // the gateway's half is taken
		assert.Equal(t, before, storeRows(t, r), "a refused request writes nothing")
		owners(r, "bytes") // the SimClients' half is theirs
		assertUsageFromFile(t, r, "bytes")
	})

	t.Run("queue", func(t *testing.T) {
		t.Parallel()
		r := newTestRelay(t, trustLoopback, func(c *config) { c.MaxQueue, c.ViaAddrShare = 4, 0.5 })
		r.serve("shop")
		for range 2 {
			require.Equal(t, http.StatusAccepted, r.viaFrom(a, "shop", "", "respond-async").Status)
		}
		before := storeRows(t, r)
		assertLimited(t, r.viaFrom(a, "shop", "", "respond-async"), "queue_full", "1")
		assert.Equal(t, before, storeRows(t, r), "a refused request writes nothing")
		for range 2 {
			require.Equal(t, http.StatusAccepted, r.viaFrom(b, "shop", "", "respond-async").Status, "another address")
		}
		assertLimited(t, r.viaFrom(c, "shop", "", "respond-async"), "queue_full", "1") // the gateway's queue itself
		assertUsageFromFile(t, r, "queued")
		owners(r, "queue") // their own queue; the SimServer leases what a has queued
		require.Equal(t, http.StatusAccepted, r.viaFrom(a, "shop", "", "respond-async").Status, "handed out: a's share frees")
		assertUsageFromFile(t, r, "leased")
	})

	t.Run("rate", func(t *testing.T) {
		t.Parallel()
		// 1 call/s with bursts of 8 for the net; 0.5/s with bursts of 4 for one address.
		r := newTestRelay(t, trustLoopback, func(c *config) { c.RateVia, c.RateViaBurst, c.ViaAddrShare = 1, 8, 0.5 })
		r.serve("shop")
		for range 4 {
			require.Equal(t, http.StatusAccepted, r.viaFrom(a, "shop", "", "respond-async").Status)
		}
		for range 20 { // refused by its share: they take nothing of the net's
			assertLimited(t, r.viaFrom(a, "shop", "", "respond-async"), "rate_limited", "2")
		}
		for range 4 {
			require.Equal(t, http.StatusAccepted, r.viaFrom(b, "shop", "", "respond-async").Status, "another address")
		}
		assertLimited(t, r.viaFrom(c, "shop", "", "respond-async"), "rate_limited", "1") // the net's bucket itself
		owners(r, "rate")
		m := r.scrape()
		assert.Equal(t, 20.0, m[series("c2cvia_limit_refusals_total", "limit", "rate_via_addr")])
		assert.Equal(t, 1.0, m[series("c2cvia_limit_refusals_total", "limit", "rate_via")])
		assert.Equal(t, 3.0, m[series("c2cvia_rate_limiter_buckets", "limiter", "via_addr")], "a, b and c")
	})
}

// TestReadmeBudgetArithmetic: the README's sums of the budgets are those of
// serve's defaults.
func TestReadmeBudgetArithmetic(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	text := regexp.MustCompile(`\s+`).ReplaceAllString(string(readme), " ")
	cfg := defaultConfig()
	mib := func(n int64) int64 { return n >> 20 }
	words := map[int64]string{8: "eight", 16: "sixteen"}
	nets, addrs := cfg.MaxStore/cfg.MaxNetStore, cfg.MaxStore/cfg.MaxAddrStore
	unservedVia := int64(cfg.ViaAddrShare * float64(cfg.MaxUnservedStore/2))
	for _, want := range []string{
		fmt.Sprintf("%s served nets filled to their %d MiB fill the %d GiB store (%d × %d MiB = %d GiB)",
			words[nets], mib(cfg.MaxNetStore), cfg.MaxStore>>30, nets, mib(cfg.MaxNetStore), cfg.MaxStore>>30),
		fmt.Sprintf("one address holds at most %d MiB, 1/%d of the store", mib(cfg.MaxAddrStore), addrs),
		fmt.Sprintf("(%s nets nobody serves at %d MiB each, or %d of them at its %d MiB share of their gateway)",
			words[cfg.MaxAddrStore/cfg.MaxUnservedStore], mib(cfg.MaxUnservedStore), cfg.MaxAddrStore/unservedVia, mib(unservedVia)),
		fmt.Sprintf("so %s addresses at their budget are needed to fill it", words[addrs]),
		fmt.Sprintf("half of its budget (%d MiB while served, %d MiB while not", mib(cfg.MaxNetStore/2), mib(cfg.MaxUnservedStore/2)),
	} {
		assert.Contains(t, text, want)
	}
}
