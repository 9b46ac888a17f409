// The recent-message cache: a message stored once whoever reads it, fan-out
// from memory, reads below the cache's floor going to SQL, and concurrent
// senders.

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPeerStoredOnce: however many peers receive a message, it is one row,
// and nothing else grows per receiver.
func TestPeerStoredOnce(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	const peers = 60
	all := make([]peer, peers)
	for i := range all {
		all[i] = r.peerLogin("crowd")
		if i%2 == 0 {
			r.subscribe(all[i], "evens", true)
		}
	}
	flushStoreWrites(t, r)
	before := storeRows(t, r)
	_, n := r.fanOut(all[1], "", strings.Repeat("x", 1000))
	assert.Equal(t, peers-1, n)
	_, n = r.fanOut(all[1], "evens", strings.Repeat("y", 1000))
	assert.Equal(t, peers/2, n)
	assert.Equal(t, 2, r.count("messages"), "two messages, two rows")
	var stored int
	require.NoError(t, r.store.r.QueryRow(`SELECT sum(length(data)) FROM messages`).Scan(&stored))
	assert.Equal(t, 2*1002, stored, "each payload once")
	after := storeRows(t, r)
	assert.Equal(t, strings.Count(before, "\n")+2, strings.Count(after, "\n"), "no row per receiver anywhere")
	for _, p := range all[2:] {
		assert.Len(t, r.readAll(p), 1+(1-slices.Index(all, p)%2))
	}
}

// TestPeerFanOutFromMemory: a broadcast wakes every waiting peer of the net
// and each reads it from the message cache: no SQL read per receiver.
func TestPeerFanOutFromMemory(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t)
	sender := r.peerLogin("crowd")
	const waiting = 40
	polls := make([]<-chan reply, waiting)
	for i := range polls {
		p := r.peerLogin("crowd")
		polls[i] = async(func() reply {
			return r.get("/api/v1/peer/pullsmart", url.Values{"token": {p.tok}, "wait": {longWait}})
		})
	}
	r.waitPolling(waiting)
	reads := r.store.msgReads.Load()
	id, n := r.fanOut(sender, "", "to everyone")
	assert.Equal(t, waiting, n)
	for i, poll := range polls {
		page := decodePage(t, within(t, 10*time.Second, poll, fmt.Sprintf("poll %d", i)))
		assert.Equal(t, []int64{id}, page.ids())
	}
	assert.Equal(t, reads, r.store.msgReads.Load(), "SQL reads of messages while fanning out")
}

// TestPeerCacheFloor: with a small cache, a reader behind it is answered
// from SQL, one ahead of it from memory, both the same; and after a restart
// (nothing cached) everything kept is still read in order.
func TestPeerCacheFloor(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t)
	setCacheLimit(r.store.msgs, 3)
	a, b, c := r.peerLogin("alpha"), r.peerLogin("alpha"), r.peerLogin("alpha")
	r.subscribe(b, "t", true)
	var want []int64
	for i := range 10 {
		switch i % 3 {
		case 0:
			want = append(want, r.sendTo(a, b.id, i))
		case 1:
			id, _ := r.fanOut(a, "", i)
			want = append(want, id)
		case 2:
			id, _ := r.fanOut(a, "t", i)
			want = append(want, id)
		}
		r.sendTo(a, c.id, i)
	}
	reads := r.store.msgReads.Load()
	page := r.pullMsgs(b, url.Values{"max": {"4"}})
	assert.Equal(t, want[:4], page.ids())
	assert.Greater(t, r.store.msgReads.Load(), reads, "behind the cache: SQL")
	assert.Equal(t, want, msgIDs(r.readAll(b)))

	reads = r.store.msgReads.Load()
	page = r.pullMsgs(b, url.Values{"since": {strconv.FormatInt(want[8], 10)}})
	assert.Equal(t, want[9:], page.ids())
	assert.Equal(t, reads, r.store.msgReads.Load(), "within the cache: memory")

	// Cache and SQL agree on every message b may read, from any cursor.
	sqlPage := func(since int64) []int64 {
		tk, err := r.store.lookupToken(context.Background(), b.tok)
		require.NoError(t, err)
		msgs, _, err := r.store.readMessages(context.Background(), tk, since, 100)
		require.NoError(t, err)
		ids := []int64{}
		for _, m := range msgs {
			ids = append(ids, m.ID)
		}
		return ids
	}
	for _, since := range want {
		var rest []int64
		for _, id := range want {
			if id > since {
				rest = append(rest, id)
			}
		}
		assert.Equal(t, append([]int64{}, rest...), sqlPage(since), "since %d", since)
	}

	// A store opened on the file afresh caches nothing old: its reader
	// reads SQL, and gets the same.
	opts := r.cfg.storeOptions()
	opts.Clock = r.clock
	st2, err := openStore(context.Background(), r.DBPath, opts)
	require.NoError(t, err)
	defer st2.Close()
	tk, err := st2.lookupToken(context.Background(), b.tok)
	require.NoError(t, err)
	msgs, next, err := st2.readMessages(context.Background(), tk, 0, 100)
	require.NoError(t, err)
	assert.Equal(t, int64(1), st2.msgReads.Load())
	ids := []int64{}
	for _, m := range msgs {
		ids = append(ids, m.ID)
	}
	assert.Equal(t, want, ids)
	_, next, err = st2.readMessages(context.Background(), tk, next, 100)
	require.NoError(t, err)
	assert.Equal(t, int64(2), st2.msgReads.Load(), "the last message is c's: still below the new store's floor")
	_, _, err = st2.readMessages(context.Background(), tk, next, 100)
	require.NoError(t, err)
	assert.Equal(t, int64(2), st2.msgReads.Load(), "caught up: from memory")
}

// setCacheLimit bounds each net's cached messages, under the cache's lock.
func setCacheLimit(c *msgCache, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.maxMsgs = n
}

// TestPeerConcurrentSenders: many senders at once while the cache trims;
// the reader gets every message once, in id order, none skipped.
func TestPeerConcurrentSenders(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	setCacheLimit(r.store.msgs, 20)
	reader := r.peerLogin("alpha")
	const senders, each = 8, 25
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		sent []int64
	)
	for range senders {
		p := r.peerLogin("alpha")
		wg.Go(func() {
			for i := range each {
				rep, err := tryCall(context.Background(), http.DefaultClient, http.MethodPost, r.URL+"/api/v1/peer/send",
					p.tok, map[string]any{"to": reader.id, "data": i})
				if !assert.NoError(t, err) || !assert.Equal(t, http.StatusCreated, rep.Status, string(rep.Body)) {
					return
				}
				id, err := rep.JSON["id"].(json.Number).Int64()
				assert.NoError(t, err)
				mu.Lock()
				sent = append(sent, id)
				mu.Unlock()
			}
		})
	}
	var got []int64
	since := int64(0)
	deadline := time.Now().Add(30 * time.Second)
	for len(got) < senders*each && time.Now().Before(deadline) {
		page := decodePage(t, r.get("/api/v1/peer/pullsmart", url.Values{
			"token": {reader.tok}, "wait": {"1"}, "since": {strconv.FormatInt(since, 10)}}))
		got = append(got, page.ids()...)
		since = page.Next
	}
	wg.Wait()
	slices.Sort(sent)
	assert.True(t, slices.IsSorted(got), "in id order")
	assert.Equal(t, sent, got, "every message once")
}

// TestPeerCacheBoundedAcrossNets: many nets sending at once keep the cache
// within --msg-cache, as its own byte count says and /metrics reports; the
// nets used least recently are forgotten, a net read after every round
// stays cached, and every reader still gets every message in order.
func TestPeerCacheBoundedAcrossNets(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	const bound = 64 << 10
	r := newTestRelay(t, func(c *config) { c.MsgCache = bound })
	const nets, rounds = 40, 6
	senders, readers := make([]peer, nets), make([]peer, nets)
	for i := range nets {
		net := fmt.Sprintf("n%02d", i)
		senders[i], readers[i] = r.peerLogin(net), r.peerLogin(net)
	}
	// The hot net gets two messages first in each round, and its reader
	// reads one after every 20 sends: by when it was appended to, the net
	// would be forgotten before its reader is done; read, it stays.
	const hot = 0
	sent := make([][]int64, nets)
	var hotNext int64
	hotSQL := int64(0)
	peak := 0
	for round := range rounds {
		for i := range nets {
			n := 1
			if i == hot {
				n = 2
			}
			for range n {
				// About 1.9 KiB a message as the cache counts it: two fit
				// a net's 16th of the bound, and a round of 41 messages is
				// more than the bound holds.
				sent[i] = append(sent[i], r.sendTo(senders[i], readers[i].id, fmt.Sprintf("%d %s", round, strings.Repeat("x", 1600))))
				peak = max(peak, r.store.msgs.size())
			}
			if i%20 == 19 {
				reads := r.store.msgReads.Load()
				page := r.pullMsgs(readers[hot], url.Values{"since": {strconv.FormatInt(hotNext, 10)}, "max": {"1"}})
				require.Len(t, page.Messages, 1)
				hotNext = page.Next
				if round > 0 {
					hotSQL += r.store.msgReads.Load() - reads
				}
			}
		}
	}
	assert.LessOrEqual(t, peak, bound, "the cache's bytes after any message")
	assert.Greater(t, peak, bound/2, "the cache was used, not bypassed")
	assert.Positive(t, r.store.msgs.evictions.Load(), "nets forgotten")
	assert.Zero(t, hotSQL, "the net read after each round stays cached")
	metrics := r.get("/metrics", nil)
	assert.Contains(t, string(metrics.Body), fmt.Sprintf("c2cvia_msg_cache_bytes %d\n", r.store.msgs.size()))

	reads := r.store.msgReads.Load()
	for i := range nets {
		assert.Equal(t, sent[i], msgIDs(r.readAll(readers[i])), "net %d", i)
	}
	assert.Len(t, sent[hot], 2*rounds)
	assert.Greater(t, r.store.msgReads.Load(), reads, "forgotten nets are read from the store")
}

// TestPublishCountsItsReceivers: a publish's write counts the topic's
// subscribers and reads none of them, whatever the topic's size: the
// cached message leaves the writer without its receivers, and the first
// reader reads them once, outside the writer, for every other reader.
func TestPublishCountsItsReceivers(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t)
	sender := r.peerLogin("big")
	r.subscribe(sender, "t", true) // a sender never receives its own
	const subs = 120
	all := make([]peer, subs)
	for i := range all {
		all[i] = r.peerLogin("big")
		r.subscribe(all[i], "t", true)
	}
	gone := all[0]
	r.subscribe(gone, "t", false)
	r.subscribe(all[1], "t", true) // again: no second count

	id, n := r.fanOut(sender, "t", "to the topic")
	assert.Equal(t, subs-1, n)
	last := func() *message {
		c := r.store.msgs
		c.mu.RLock()
		defer c.mu.RUnlock()
		e := c.nets["big"]
		require.NotNil(t, e)
		return e.msgs[len(e.msgs)-1]
	}
	m := last()
	require.Equal(t, id, m.ID)
	select {
	case <-m.recv.done:
		t.Fatal("the publish's write read the receivers")
	default:
	}

	reads, msgReads := r.store.receiverReads.Load(), r.store.msgReads.Load()
	for _, p := range all[1:] {
		assert.Equal(t, []int64{id}, r.pullMsgs(p, nil).ids())
	}
	assert.Empty(t, r.pullMsgs(gone, nil).ids())
	assert.Empty(t, r.pullMsgs(sender, nil).ids())
	assert.Equal(t, reads+1, r.store.receiverReads.Load(), "the receivers read once")
	assert.Equal(t, msgReads, r.store.msgReads.Load(), "every reader from memory")

	// The count is the store's: the same counted again from the file, and
	// it follows the logins that expire.
	r.store.counts.stale.Store(true)
	require.NoError(t, r.store.syncCounts(context.Background()))
	require.Equal(t, int64(1), r.store.counts.recounts.Load())
	_, n = r.fanOut(sender, "t", "again")
	assert.Equal(t, subs-1, n)
	r.advance(r.cfg.TokenTTL)
	_, err := r.store.purge(context.Background(), purgeOptions{})
	require.NoError(t, err)
	assert.Zero(t, r.store.counts.subscribers("big", "t"))
}
