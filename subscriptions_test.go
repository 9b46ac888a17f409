// Subscriptions bounded per login, and removed in bounded batches when
// their login expires.

package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSubscriptionsCappedPerLogin: a login holds at most --max-subs
// subscription rows (one login made 113,000 in 20 s, each a row and a
// topic count); one more is 429 too_many_subscriptions and writes nothing.
// Subscribing again to a topic costs nothing; a closed subscription counts
// while it holds a kept message, and one that holds none leaves at once.
func TestSubscriptionsCappedPerLogin(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.MaxSubs = 3 })
	ada, bob := r.peerLogin("alpha"), r.peerLogin("alpha")
	sub := func(p peer, topic string) reply {
		return r.postJSON("/api/v1/peer/subscribe", p.tok, map[string]any{"topic": topic})
	}
	for _, topic := range []string{"a", "b", "c"} {
		r.subscribe(ada, topic, true)
	}
	before := storeRows(t, r)
	rep := sub(ada, "d")
	assertLimited(t, rep, "too_many_subscriptions", "60")
	assert.Contains(t, string(rep.Body), "unsubscribe")
	assert.Equal(t, before, storeRows(t, r), "a refused subscribe writes nothing")
	assert.Zero(t, r.store.counts.subscribers("alpha", "d"))
	r.subscribe(ada, "a", true) // already: nothing more held
	r.subscribe(bob, "d", true) // each login its own
	assert.Equal(t, 1, r.store.counts.subscribers("alpha", "d"))

	// Closed with no message in it: the row goes, and the slot is free.
	r.subscribe(ada, "c", false)
	r.subscribe(ada, "d", true)
	// Closed after a message: the row stays while the message is kept.
	r.fanOut(bob, "a", "hello")
	r.subscribe(ada, "a", false)
	assertLimited(t, sub(ada, "e"), "too_many_subscriptions", "60")
	r.advance(time.Hour + time.Second) // --msg-ttl: the message expires
	purgeNow(t, r)
	r.subscribe(ada, "e", true)
	assertLimited(t, sub(ada, "f"), "too_many_subscriptions", "60")
	assert.Equal(t, 3, r.count(fmt.Sprintf(`subscriptions WHERE peer_id = '%s'`, ada.id)))
	assert.Equal(t, 3.0, refusals(r, "subscriptions"))
}

// TestExpiredLoginSubscriptionsPurgedInBatches: the subscriptions of an
// expired login leave in writes of at most a batch of rows, the login
// itself once none is left, and the counts stay exact. (One write used to
// take every subscription of a batch of logins: 1,000 logins of 113,000
// each.)
func TestExpiredLoginSubscriptionsPurgedInBatches(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.MaxSubs = 0 })
	ada, bob := r.peerLogin("alpha"), r.peerLogin("alpha")
	ctx := context.Background()
	at, err := r.store.lookupToken(ctx, ada.tok)
	require.NoError(t, err)
	for i := range 2500 {
		require.NoError(t, r.store.subscribe(ctx, at, fmt.Sprintf("t%d", i)))
	}
	r.subscribe(bob, "t0", true)
	r.advance(24*time.Hour + time.Second) // both logins expire

	rep, err := r.store.purge(ctx, purgeOptions{Batch: 1000})
	require.NoError(t, err)
	assert.True(t, rep.more)
	assert.Equal(t, 1501, r.count("subscriptions"), "one write takes a batch of rows")
	assert.Equal(t, 1, r.count(fmt.Sprintf(`tokens WHERE peer_id = '%s'`, ada.id)), "ada's stays until its last one goes")
	assertCountsExact(t, r, "first batch")
	assertTopicsExact(t, r, "first batch")

	var writes []int
	_, err = r.store.purgeBatches(ctx, 1000, func(rep purgeReport) { writes = append(writes, rep.Tokens) })
	require.NoError(t, err)
	assert.Zero(t, r.count("subscriptions"))
	assert.Zero(t, r.count("tokens"))
	assert.GreaterOrEqual(t, len(writes), 2, "the rest over more writes")
	assert.Zero(t, r.store.counts.subscribers("alpha", "t0"))
	assert.Zero(t, r.store.counts.subscribers("alpha", "t2499"))
	assertCountsExact(t, r, "all purged")
	assertTopicsExact(t, r, "all purged")
	assert.Equal(t, http.StatusUnauthorized, r.postJSON("/api/v1/peer/subscribe", ada.tok, map[string]any{"topic": "x"}).Status)
}

// assertTopicsExact compares the store's in-memory count of open
// subscriptions per topic with the file.
func assertTopicsExact(t *testing.T, r *testRelay, step string) {
	t.Helper()
	flushStoreWrites(t, r)
	r.store.counts.mu.Lock()
	topics := maps(r.store.counts.topics)
	r.store.counts.mu.Unlock()
	// Keyed "net topic": a net's name has no space, and PostgreSQL's text
	// no NUL, topicKey's separator.
	byTopic := map[string]int{}
	for k, n := range topics {
		byTopic[strings.Replace(k, "\x00", " ", 1)] = n
	}
	assert.Equal(t, countBy(t, r, `SELECT net || ' ' || topic, count(*) FROM subscriptions WHERE until_id IS NULL GROUP BY 1`),
		byTopic, "%s: open subscriptions per topic", step)
}
