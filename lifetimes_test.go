// Lifetimes: --req-ttl, --res-ttl, the token TTL, and the janitor, on the
// injected clock.

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

func lifetimes(c *config) {
	c.ReqTTL = time.Minute
	c.ResTTL = 2 * time.Minute
	c.TokenTTL = time.Hour
}

func TestRequestTTL(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, lifetimes) // --req-ttl 1m
	tok, _ := r.login("demo")
	delivered := r.push(tok, map[string]any{"simEndpoint": "/slow"})
	require.Len(t, r.pullReqs("demo", testKey, url.Values{"lease": {"600"}}), 1)
	r.clock.Advance(30 * time.Second)
	queued := r.push(tok, map[string]any{"simEndpoint": "/never"})
	r.clock.Advance(30 * time.Second) // /slow is 60 s old, /never 30 s

	q := func(rid string) url.Values { return url.Values{"token": {tok}, "rid": {rid}} }
	assert.Equal(t, "expired", r.get("/api/v1/client/check", q(delivered)).str("status"), "a held lease does not outlive the TTL")
	assert.Equal(t, "queued", r.get("/api/v1/client/check", q(queued)).str("status"))
	rep := r.get("/api/v1/client/pullres", q(delivered))
	assert.Equal(t, http.StatusGone, rep.Status)
	assert.Equal(t, "expired", rep.errorCode())
	rep = r.get("/api/v1/client/pullsmart", url.Values{"token": {tok}, "rid": {delivered}, "wait": {"1"}})
	assert.Equal(t, http.StatusGone, rep.Status)
	assert.Equal(t, http.StatusGone, r.answer("demo", testKey, delivered, map[string]any{}).Status, "too late to answer")

	r.clock.Advance(30 * time.Second) // /never is 60 s old
	assert.Empty(t, r.pullReqs("demo", testKey, nil), "an expired request is not handed out")
	assert.Equal(t, "expired", r.get("/api/v1/client/check", q(queued)).str("status"))
}

// TestRetention: an answered response stays re-readable for --res-ttl; an
// expired request stays visible to check for as long; then the janitor
// deletes both.
func TestRetention(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, lifetimes)
	tok, _ := r.login("demo")
	answered := r.push(tok, map[string]any{"simEndpoint": "/a"})
	expired := r.push(tok, map[string]any{"simEndpoint": "/b"})
	require.Len(t, r.pullReqs("demo", testKey, nil), 1)
	require.Equal(t, http.StatusOK, r.answer("demo", testKey, answered, map[string]any{"simBody": "kept"}).Status)
	q := func(rid string) url.Values { return url.Values{"token": {tok}, "rid": {rid}} }
	purge := func() purgeReport {
		rep, err := r.store.purge(context.Background(), purgeOptions{})
		require.NoError(t, err)
		return rep
	}

	r.clock.Advance(2*time.Minute - time.Second) // answered 1:59 ago, expired 0:59 ago
	purge()
	assert.Equal(t, http.StatusOK, r.get("/api/v1/client/pullres", q(answered)).Status)
	assert.Equal(t, http.StatusOK, r.get("/api/v1/client/pullres", q(answered)).Status, "re-readable")
	assert.Equal(t, "expired", r.get("/api/v1/client/check", q(expired)).str("status"))

	r.clock.Advance(time.Second) // the answer's retention is over
	rep := purge()
	assert.Equal(t, map[string]map[string]int{"demo": {"answered": 1}}, rep.Requests)
	assert.Equal(t, http.StatusNotFound, r.get("/api/v1/client/pullres", q(answered)).Status)
	assert.Equal(t, "expired", r.get("/api/v1/client/check", q(expired)).str("status"), "expired at 1:00, kept until 3:00")

	r.clock.Advance(time.Minute)
	rep = purge()
	assert.Equal(t, map[string]map[string]int{"demo": {"expired": 1}}, rep.Requests)
	assert.Equal(t, http.StatusNotFound, r.get("/api/v1/client/check", q(expired)).Status)
	assert.Equal(t, 0, r.count("requests"))
}

func TestTokenTTL(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, lifetimes)
	tok, _ := r.login("demo")
	r.clock.Advance(time.Hour - time.Second)
	assert.Equal(t, http.StatusNotFound, r.get("/api/v1/client/check", url.Values{"token": {tok}, "rid": {"x"}}).Status)
	r.clock.Advance(time.Second)
	rep := r.get("/api/v1/client/check", url.Values{"token": {tok}, "rid": {"x"}})
	assert.Equal(t, http.StatusUnauthorized, rep.Status)
	assert.Equal(t, "token_expired", rep.errorCode())
	assert.Equal(t, 1, purgeNow(t, r).Tokens)
	assert.Equal(t, 0, r.count("tokens"))
}

func purgeNow(t *testing.T, r *testRelay) purgeReport {
	t.Helper()
	rep, err := r.store.purge(context.Background(), purgeOptions{})
	require.NoError(t, err)
	return rep
}

// TestJanitor: the janitor purges on its own, every interval: requests,
// tokens, peer messages and subscriptions.
func TestJanitor(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, lifetimes)
	tok, peerID := r.login("demo")
	r.push(tok, map[string]any{"simEndpoint": "/old"})
	r.sendTo(peer{tok, peerID}, peerID, "old")
	r.subscribe(peer{tok, peerID}, "t", true)
	r.clock.Advance(time.Hour + time.Minute) // request expired and retained past; token and message expired
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { runJanitor(ctx, discardLogger(), r.store, 10*time.Millisecond, func() {}); close(done) }()
	waitFor(t, 10*time.Second, func() bool {
		return r.count("requests") == 0 && r.count("tokens") == 0 && r.count("messages") == 0 && r.count("subscriptions") == 0
	}, "the janitor to purge")
	cancel()
	<-done
}

// TestLastLeaseWakesWaiters: when a request is handed out for the last time
// (--max-attempts), whoever waits for it, a /via/ caller or its SimClient's
// pullsmart, hears 410 failed the moment that lease runs out, not 504 or
// 202 when their own wait ends.
func TestLastLeaseWakesWaiters(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.MaxAttempts = 1; c.ViaTimeout = time.Minute })
	r.pullReqs("demo", testKey, nil) // claim
	tok, _ := r.login("demo")
	rid := r.push(tok, map[string]any{"simEndpoint": "/pending"})
	via := async(func() reply { return r.get("/via/demo/x", nil) })
	pull := async(func() reply {
		return r.get("/api/v1/client/pullsmart", url.Values{"token": {tok}, "rid": {rid}, "wait": {"60"}})
	})
	r.waitAsleep(2)

	sleeps := r.srv.poller.sleeps.Load()
	require.Len(t, r.pullReqs("demo", testKey, url.Values{"lease": {"1"}, "max": {"10"}}), 2)
	r.waitSleeps(sleeps + 2) // both woke, read their request and armed its lease's end
	r.advance(2 * time.Second)

	for what, ch := range map[string]<-chan reply{"/via/": via, "pullsmart": pull} {
		rep := within(t, 10*time.Second, ch, what+" when the last lease ran out")
		assertErrorShape(t, rep, http.StatusGone, "failed")
	}
}
