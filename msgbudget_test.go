// The peer messages one client address sends count against its
// --max-addr-store with its requests: at its budget it is refused, whatever
// the net, the kind of message or the login, while other addresses go on;
// the janitor's expiry gives the budget back, and the count comes back from
// the file at open.

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// peerFrom sends a peer call (send, publish, broadcast) to path as p with
// body, from the client address addr (X-Forwarded-For, read when the relay
// trusts loopback).
func (r *testRelay) peerFrom(addr, path string, p peer, body map[string]any) reply {
	r.t.Helper()
	b, err := json.Marshal(body)
	require.NoError(r.t, err)
	req, err := http.NewRequest(http.MethodPost, r.URL+path, bytes.NewReader(b))
	require.NoError(r.t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+p.tok)
	req.Header.Set("X-Forwarded-For", addr)
	return r.do(req)
}

// broadcastFrom broadcasts data as p from the client address addr.
func (r *testRelay) broadcastFrom(addr string, p peer, data string) reply {
	r.t.Helper()
	return r.peerFrom(addr, "/api/v1/peer/broadcast", p, map[string]any{"data": data})
}

// assertMsgUsageFromFile compares the store's in-memory bytes of messages
// by address with a count of the file.
func assertMsgUsageFromFile(t *testing.T, r *testRelay, step string) {
	t.Helper()
	flushStoreWrites(t, r)
	fromFile, err := countMessageUsage(context.Background(), r.store.r)
	require.NoError(t, err)
	c := &r.store.counts
	c.mu.Lock()
	inMemory := messageUsage{}
	for k, n := range c.msgAddr {
		inMemory[k] = n
	}
	c.mu.Unlock()
	assert.Equal(t, fromFile, inMemory, "%s: what the messages take, by address", step)
}

// TestPeerMessagesInAddrBudget: logins in several nets sending from one
// address stop at its --max-addr-store (unicast, multicast and broadcast
// alike), before anything is written, and so do its requests; another
// address's messages and pushreqs still succeed, its requests and messages
// counting together too. Expiry gives the budget back, and a store opened
// on the file knows what each address holds.
func TestPeerMessagesInAddrBudget(t *testing.T) {
	t.Parallel()
	const max = 100 << 10
	r := newTestRelay(t, trustLoopback, func(c *config) {
		c.MaxAddrStore = max
		c.MaxUnservedStore, c.ViaAddrShare = 0, 0 // this budget alone
	})
	const a, b = "203.0.113.7", "198.51.100.9"
	data := strings.Repeat("m", 30<<10)
	var peers []peer
	for i := range 3 {
		peers = append(peers, r.peerLogin(fmt.Sprintf("n%d", i)))
	}
	other := r.peerLogin("n2")
	r.subscribe(other, "t", true)
	require.Equal(t, http.StatusCreated, r.broadcastFrom(a, peers[0], data).Status)
	require.Equal(t, http.StatusCreated, r.peerFrom(a, "/api/v1/peer/publish", peers[1], map[string]any{"topic": "t", "data": data}).Status)
	require.Equal(t, http.StatusCreated, r.peerFrom(a, "/api/v1/peer/send", peers[2], map[string]any{"to": other.id, "data": data}).Status)
	assertMsgUsageFromFile(t, r, "sent")

	fresh := r.peerLogin("n9")
	before := storeRows(t, r)
	assertFull(t, r.broadcastFrom(a, peers[0], data), "addr_store_full")
	assertFull(t, r.peerFrom(a, "/api/v1/peer/send", peers[2], map[string]any{"to": other.id, "data": data}), "addr_store_full")
	assertFull(t, r.broadcastFrom(a, fresh, data), "addr_store_full")   // a new login, a new net
	assertFull(t, r.pushFrom(a, peers[0].tok, data), "addr_store_full") // its requests share the budget
	assert.Equal(t, before, storeRows(t, r), "a refused message or request writes nothing")
	require.Equal(t, http.StatusCreated, r.broadcastFrom(a, peers[0], "1").Status, "what fits still goes")
	assert.Equal(t, 4, r.count(`messages WHERE addr = '`+a+`'`))
	r.store.counts.mu.Lock()
	assert.Equal(t, int64(3*(len(data)+2)+3), r.store.counts.msgAddr[a], "data as stored: JSON text")
	r.store.counts.mu.Unlock()

	// Another address is not held by it, on the same logins; its requests
	// and messages count together as well.
	for range 2 {
		require.Equal(t, http.StatusCreated, r.pushFrom(b, peers[0].tok, data).Status)
	}
	require.Equal(t, http.StatusCreated, r.broadcastFrom(b, peers[0], data).Status)
	before = storeRows(t, r)
	assertFull(t, r.broadcastFrom(b, peers[1], data), "addr_store_full")
	assertFull(t, r.pushFrom(b, peers[1].tok, data), "addr_store_full")
	assert.Equal(t, before, storeRows(t, r), "a refused message or request writes nothing")
	assertMsgUsageFromFile(t, r, "full")
	assertUsageFromFile(t, r, "full")

	// Reopened, the store counts from the file what each address holds.
	st2, err := openStore(context.Background(), r.DBPath, testStoreOptions(r.clock, func(o *storeOptions) { o.MaxAddrStore = max }))
	require.NoError(t, err)
	t2, err := st2.lookupToken(context.Background(), peers[0].tok)
	require.NoError(t, err)
	_, _, err = st2.sendMessage(context.Background(), t2, message{Kind: kindBroadcast}, []byte(`"`+data+`"`), a)
	assert.ErrorIs(t, err, errAddrStoreFull, "after a restart")
	require.NoError(t, st2.Close())

	// The janitor's expiry, a batch at a time, gives the budget back.
	r.advance(r.cfg.MsgTTL + time.Second)
	_, err = r.store.purgeBatches(context.Background(), 2, nil)
	require.NoError(t, err)
	assert.Zero(t, r.count(`messages`))
	assertMsgUsageFromFile(t, r, "expired")
	r.store.counts.mu.Lock()
	assert.Empty(t, r.store.counts.msgAddr)
	r.store.counts.mu.Unlock()
	for range 3 {
		require.Equal(t, http.StatusCreated, r.broadcastFrom(a, peers[0], data).Status, "after expiry")
	}
	assertFull(t, r.broadcastFrom(a, peers[0], data), "addr_store_full")
	assertMsgUsageFromFile(t, r, "sent again")
	assertUsageExact(t, r)
}
