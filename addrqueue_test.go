// One client address's share of a net's SimClient queue: at its share its
// pushreqs get 429 queue_full, whichever login it uses, while another
// address's get through and the SimServer works on; the share frees as its
// requests leave the queue, and comes back from the file at open.

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

// TestClientQueueShare: with --max-queue 4 and --via-addr-share 0.5, one
// address may have 2 SimClient requests queued in a net. Its third is
// refused before it is written, from any login; another address's pushreq
// succeeds, on the same login too, until the net's queue itself is full;
// the gateway's queue is apart. The SimServer's leases and answers are
// never refused, and give the share back exactly, as do expiry and (at the
// janitor's next count) a withdrawal.
func TestClientQueueShare(t *testing.T) {
	t.Parallel()
	const a, b, c = "203.0.113.7", "198.51.100.9", "192.0.2.44"
	r := newTestRelay(t, trustLoopback, func(c *config) { c.MaxQueue, c.ViaAddrShare = 4, 0.5 })
	r.serve("shop")
	tokA, _ := r.login("shop")
	tokA2, _ := r.login("shop")
	owner, _ := r.login("shop")
	push := func(addr, tok string) string {
		t.Helper()
		rep := r.pushFrom(addr, tok, "")
		require.Equal(t, http.StatusCreated, rep.Status, "%s: %s", addr, rep.Body)
		return rep.str("rid")
	}
	push(a, tokA)
	push(a, tokA2)
	before := storeRows(t, r)
	assertLimited(t, r.pushFrom(a, tokA, ""), "queue_full", "1")
	assertLimited(t, r.pushFrom(a, owner, ""), "queue_full", "1") // the address's, whichever login
	assert.Equal(t, before, storeRows(t, r), "a refused pushreq writes nothing")
	push(b, owner) // the owner's SimClient, from another address
	assertCountsExact(t, r, "a at its share")

	// A store opened on the file counts each address's queued requests.
	st2, err := openStore(context.Background(), r.DBPath, testStoreOptions(r.clock, func(o *storeOptions) { o.MaxQueue, o.ViaAddrShare = 4, 0.5 }))
	require.NoError(t, err)
	t2, err := st2.lookupToken(context.Background(), tokA)
	require.NoError(t, err)
	_, err = st2.pushRequest(context.Background(), t2, []byte(`{"simEndpoint":"/x"}`), a+":0")
	assert.ErrorIs(t, err, errAddrQueueFull, "after a restart")
	require.NoError(t, st2.Close())

	push(b, tokA)                                                 // another address on a's login
	assertLimited(t, r.pushFrom(c, owner, ""), "queue_full", "1") // the net's queue itself
	require.Equal(t, http.StatusAccepted, r.viaFrom(a, "shop", "", "respond-async").Status, "the gateway's queue is apart")

	// The SimServer leases all and answers; a's share is free again.
	leased := r.pullReqs("shop", testKey, url.Values{"max": {"100"}})
	require.Len(t, leased, 5)
	for _, l := range leased {
		require.Equal(t, http.StatusOK, r.answer("shop", testKey, l.RID, map[string]any{"simStatus": 200}).Status)
	}
	rid := push(a, tokA)
	push(a, tokA)
	assertLimited(t, r.pushFrom(a, tokA, ""), "queue_full", "1")

	// An answer to a request still queued (its SimServer knew its rid)
	// frees its place at once, counted exactly.
	require.Equal(t, http.StatusOK, r.answer("shop", testKey, rid, map[string]any{"simStatus": 200}).Status)
	assert.False(t, r.store.counts.stale.Load(), "the answer read its sender")
	push(a, tokA)
	assertCountsExact(t, r, "answered while queued")

	// Expiry frees it.
	r.advance(r.cfg.ReqTTL + time.Second)
	purgeNow(t, r)
	assertCountsExact(t, r, "expired")
	rid = push(a, tokA)
	push(a, tokA2)
	assertLimited(t, r.pushFrom(a, tokA, ""), "queue_full", "1")

	// A withdrawal does not read its sender: the janitor's next count
	// gives the place back.
	require.Equal(t, http.StatusOK, r.postJSON("/api/v1/client/cancel", tokA, map[string]any{"rid": rid}).Status)
	require.NoError(t, r.store.syncCounts(context.Background()))
	push(a, tokA)
	assertCountsExact(t, r, "withdrawn")
	assert.Equal(t, 5.0, refusals(r, "queue"))
}
