// End-to-end tests of peer messaging over HTTP against a real SQLite file:
// who receives unicast, multicast and broadcast messages, that a message is
// stored once, cursors, long polls and the message cache, and the peers
// list. The stream and lifetimes have files of their own.

package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// peerMsg is one message as a reader gets it.
type peerMsg struct {
	ID     int64           `json:"id"`
	Kind   string          `json:"kind"`
	From   string          `json:"from"`
	Topic  *string         `json:"topic"`
	Data   json.RawMessage `json:"data"`
	SentAt string          `json:"sent_at"`
}

// peerPage is a pullsmart reply.
type peerPage struct {
	Messages []peerMsg `json:"messages"`
	Next     int64     `json:"next"`
}

func (p peerPage) ids() []int64 {
	ids := []int64{}
	for _, m := range p.Messages {
		ids = append(ids, m.ID)
	}
	return ids
}

// peer is a login of a net.
type peer struct{ tok, id string }

func (r *testRelay) peerLogin(net string) peer {
	r.t.Helper()
	tok, id := r.login(net)
	return peer{tok, id}
}

// sendTo sends data from p to the peer_id to and returns the message id.
func (r *testRelay) sendTo(p peer, to string, data any) int64 {
	r.t.Helper()
	rep := r.postJSON("/api/v1/peer/send", p.tok, map[string]any{"to": to, "data": data})
	require.Equal(r.t, http.StatusCreated, rep.Status, string(rep.Body))
	assert.Len(r.t, rep.JSON, 1, "send answers {\"id\"}: %s", rep.Body)
	return jsonInt(r.t, rep, "id")
}

// fanOut publishes (topic set) or broadcasts data from p; it returns the
// id and receivers.
func (r *testRelay) fanOut(p peer, topic string, data any) (id int64, receivers int) {
	r.t.Helper()
	path, body := "/api/v1/peer/broadcast", map[string]any{"data": data}
	if topic != "" {
		path, body["topic"] = "/api/v1/peer/publish", topic
	}
	rep := r.postJSON(path, p.tok, body)
	require.Equal(r.t, http.StatusCreated, rep.Status, string(rep.Body))
	return jsonInt(r.t, rep, "id"), int(jsonInt(r.t, rep, "receivers"))
}

// subscribe subscribes (on) or unsubscribes p to topic.
func (r *testRelay) subscribe(p peer, topic string, on bool) {
	r.t.Helper()
	path := "/api/v1/peer/unsubscribe"
	if on {
		path = "/api/v1/peer/subscribe"
	}
	rep := r.postJSON(path, p.tok, map[string]any{"topic": topic})
	require.Equal(r.t, http.StatusOK, rep.Status, string(rep.Body))
	assert.JSONEq(r.t, fmt.Sprintf(`{"topic":%q,"subscribed":%t}`, topic, on), string(rep.Body))
}

// pullMsgs calls the peer pullsmart for p with wait 0 and extra parameters.
func (r *testRelay) pullMsgs(p peer, extra url.Values) peerPage {
	r.t.Helper()
	q := url.Values{"token": {p.tok}, "wait": {"0"}}
	for k, v := range extra {
		q[k] = v
	}
	return decodePage(r.t, r.get("/api/v1/peer/pullsmart", q))
}

func decodePage(t testing.TB, rep reply) peerPage {
	t.Helper()
	require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	assert.Equal(t, "application/json", rep.Header.Get("Content-Type"))
	var page peerPage
	require.NoError(t, json.Unmarshal(rep.Body, &page), string(rep.Body))
	require.NotNil(t, page.Messages, "messages is a list, also when empty: %s", rep.Body)
	return page
}

// readAll reads every message p may read, from cursor 0, page by page.
func (r *testRelay) readAll(p peer) []peerMsg {
	r.t.Helper()
	var all []peerMsg
	since := int64(0)
	for {
		page := r.pullMsgs(p, url.Values{"since": {strconv.FormatInt(since, 10)}})
		all = append(all, page.Messages...)
		if len(page.Messages) == 0 {
			return all
		}
		since = page.Next
	}
}

func jsonInt(t testing.TB, rep reply, key string) int64 {
	t.Helper()
	n, ok := rep.JSON[key].(json.Number)
	require.True(t, ok, "%s is a JSON number: %s", key, rep.Body)
	v, err := n.Int64()
	require.NoError(t, err)
	return v
}

func msgIDs(msgs []peerMsg) []int64 {
	ids := []int64{}
	for _, m := range msgs {
		ids = append(ids, m.ID)
	}
	return ids
}

// bothReadPaths runs fn on a relay that reads messages from its cache, and
// on one whose cache keeps none, so that every read behind the newest
// message is SQL's: both must follow the same receiver rules.
func bothReadPaths(t *testing.T, fn func(t *testing.T, r *testRelay)) {
	t.Run("cache", func(t *testing.T) {
		onlyOneNode(t)
		r := newTestRelay(t)
		fn(t, r)
		assert.Zero(t, r.store.msgReads.Load(), "reads from SQL")
	})
	t.Run("sql", func(t *testing.T) {
		r := newTestRelay(t)
		setCacheLimit(r.store.msgs, 0)
		fn(t, r)
		assert.Positive(t, r.store.msgReads.Load(), "reads from SQL")
	})
}

// TestPeerSend: a unicast reaches its addressee in the same net, and only
// it; a peer_id of another net, unknown or logged out is 404 unknown_peer.
func TestPeerSend(t *testing.T) { bothReadPaths(t, testPeerSend) }

func testPeerSend(t *testing.T, r *testRelay) {
	a, b, c := r.peerLogin("alpha"), r.peerLogin("alpha"), r.peerLogin("alpha")
	beta := r.peerLogin("beta")

	id := r.sendTo(a, b.id, map[string]any{"text": "hi"})
	got := r.readAll(b)
	require.Len(t, got, 1)
	m := got[0]
	assert.Equal(t, id, m.ID)
	assert.Equal(t, "unicast", m.Kind)
	assert.Equal(t, a.id, m.From)
	assert.Nil(t, m.Topic)
	assert.JSONEq(t, `{"text":"hi"}`, string(m.Data))
	assert.Equal(t, formatMS(r.clock.Now().UnixMilli()), m.SentAt)
	assert.Empty(t, r.readAll(a), "the sender")
	assert.Empty(t, r.readAll(c), "another peer of the net")
	assert.Empty(t, r.readAll(beta), "a peer of another net")

	// To oneself is a unicast like any other.
	self := r.sendTo(a, a.id, "note to self")
	assert.Equal(t, []int64{self}, msgIDs(r.readAll(a)))

	// A form body carries data as JSON text.
	rep := r.postForm("/api/v1/peer/send", url.Values{"token": {c.tok}, "to": {b.id}, "data": {`[1, 2.50, "x"]`}})
	require.Equal(t, http.StatusCreated, rep.Status, string(rep.Body))
	got = r.readAll(b)
	require.Len(t, got, 2)
	assert.Equal(t, `[1,2.50,"x"]`, string(got[1].Data), "stored without spaces, digits as sent")

	// Another net's peer, an unknown one and one whose login expired: 404.
	old := r.peerLogin("alpha")
	r.clock.Advance(23 * time.Hour)
	fresh := r.peerLogin("alpha")
	r.clock.Advance(time.Hour) // old's token is now expired, fresh's is not
	before := r.count("messages")
	for name, to := range map[string]string{"another net": beta.id, "unknown": "no-such-peer", "expired": old.id} {
		rep := r.postJSON("/api/v1/peer/send", fresh.tok, map[string]any{"to": to, "data": 1})
		assertErrorShape(t, rep, http.StatusNotFound, "unknown_peer")
		assert.Equal(t, before, r.count("messages"), name)
	}
}

// TestPeerPublish: a multicast reaches every subscriber of its topic at
// publish time but the publisher, nobody else; receivers is that count.
func TestPeerPublish(t *testing.T) { bothReadPaths(t, testPeerPublish) }

func testPeerPublish(t *testing.T, r *testRelay) {
	pub, s1, s2, other := r.peerLogin("alpha"), r.peerLogin("alpha"), r.peerLogin("alpha"), r.peerLogin("alpha")
	beta := r.peerLogin("beta")
	for _, p := range []peer{pub, s1, s2, beta} {
		r.subscribe(p, "news", true)
	}
	r.subscribe(s1, "news", true) // twice: still one subscription
	r.subscribe(other, "sport", true)

	id1, n := r.fanOut(pub, "news", "first")
	assert.Equal(t, 2, n, "s1 and s2: not the publisher, nor beta's subscriber")
	for _, p := range []peer{s1, s2} {
		got := r.readAll(p)
		require.Len(t, got, 1)
		assert.Equal(t, id1, got[0].ID)
		assert.Equal(t, "multicast", got[0].Kind)
		assert.Equal(t, pub.id, got[0].From)
		if assert.NotNil(t, got[0].Topic) {
			assert.Equal(t, "news", *got[0].Topic)
		}
	}
	for name, p := range map[string]peer{"publisher": pub, "other topic": other, "other net": beta} {
		assert.Empty(t, r.readAll(p), name)
	}

	// s2 leaves; a late subscriber gets only what comes after it joined.
	r.subscribe(s2, "news", false)
	r.subscribe(s2, "news", false) // not subscribed: 200 all the same
	late := r.peerLogin("alpha")
	r.subscribe(late, "news", true)
	id2, n := r.fanOut(pub, "news", "second")
	assert.Equal(t, 2, n, "s1 and late")
	assert.Equal(t, []int64{id1, id2}, msgIDs(r.readAll(s1)))
	assert.Equal(t, []int64{id1}, msgIDs(r.readAll(s2)), "s2 keeps what came while it was subscribed")
	assert.Equal(t, []int64{id2}, msgIDs(r.readAll(late)))

	// s2 comes back: it gets what is published from now on, not what it missed.
	r.subscribe(s2, "news", true)
	id3, n := r.fanOut(s1, "news", "third")
	assert.Equal(t, 3, n, "pub, s2 and late; not s1, the publisher")
	assert.Equal(t, []int64{id1, id3}, msgIDs(r.readAll(s2)))
	assert.Equal(t, []int64{id3}, msgIDs(r.readAll(pub)))

	// Nobody subscribed: stored, received by nobody.
	_, n = r.fanOut(pub, "empty", "void")
	assert.Zero(t, n)
}

// TestPeerSubscribeAndLeaveAtOnce: an interval closed before any message
// holds none, and subscribing again at the same point works.
func TestPeerSubscribeAndLeaveAtOnce(t *testing.T) { bothReadPaths(t, testPeerSubscribeAndLeaveAtOnce) }

func testPeerSubscribeAndLeaveAtOnce(t *testing.T, r *testRelay) {
	pub, s := r.peerLogin("alpha"), r.peerLogin("alpha")
	r.subscribe(s, "t", true)
	r.subscribe(s, "t", false)
	assert.Zero(t, r.count("subscriptions"), "an empty interval is not kept")
	r.subscribe(s, "t", true)
	id, n := r.fanOut(pub, "t", 1)
	assert.Equal(t, 1, n)
	assert.Equal(t, []int64{id}, msgIDs(r.readAll(s)))
}

// TestPeerBroadcast: every peer of the net but the sender, nobody outside
// it, and nobody who logs in later.
func TestPeerBroadcast(t *testing.T) { bothReadPaths(t, testPeerBroadcast) }

func testPeerBroadcast(t *testing.T, r *testRelay) {
	a, b, c := r.peerLogin("alpha"), r.peerLogin("alpha"), r.peerLogin("alpha")
	beta := r.peerLogin("beta")
	id, n := r.fanOut(a, "", map[string]any{"all": true})
	assert.Equal(t, 2, n)
	for _, p := range []peer{b, c} {
		got := r.readAll(p)
		require.Len(t, got, 1)
		assert.Equal(t, id, got[0].ID)
		assert.Equal(t, "broadcast", got[0].Kind)
		assert.Nil(t, got[0].Topic)
		assert.Equal(t, a.id, got[0].From)
	}
	assert.Empty(t, r.readAll(a), "the sender")
	assert.Empty(t, r.readAll(beta), "another net")
	late := r.peerLogin("alpha")
	assert.Empty(t, r.readAll(late), "a login after the broadcast")
	id2, n := r.fanOut(late, "", "hello all")
	assert.Equal(t, 3, n)
	assert.Equal(t, []int64{id, id2}, msgIDs(r.readAll(b)))
}

// TestPeerPullCursor: pages in id order, max, next, and reading again
// without a cursor repeats what is kept.
func TestPeerPullCursor(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	a, b, c := r.peerLogin("alpha"), r.peerLogin("alpha"), r.peerLogin("alpha")
	var want []int64
	for i := range 5 {
		want = append(want, r.sendTo(a, b.id, i))
		r.sendTo(a, c.id, i) // between b's: b's cursor moves past them
	}
	page := r.pullMsgs(b, url.Values{"max": {"2"}})
	assert.Equal(t, want[:2], page.ids())
	assert.Equal(t, want[1], page.Next)
	page = r.pullMsgs(b, url.Values{"max": {"2"}, "since": {strconv.FormatInt(page.Next, 10)}})
	assert.Equal(t, want[2:4], page.ids())
	page = r.pullMsgs(b, url.Values{"since": {strconv.FormatInt(page.Next, 10)}})
	assert.Equal(t, want[4:], page.ids(), "default max is 100")
	last := page.Next
	page = r.pullMsgs(b, url.Values{"since": {strconv.FormatInt(last, 10)}})
	assert.Empty(t, page.Messages)
	if testPostgresURL() == "" {
		assert.Equal(t, want[4]+1, page.Next, "past c's last message too: b never rescans it")
	} else {
		// Another node's message may hold a lower id and commit later: an
		// empty page leaves the cursor where it was (README, "Scale out").
		assert.Equal(t, last, page.Next, "the cursor stays")
	}

	// JSON and form bodies, since as a number or text.
	rep := r.postJSON("/api/v1/peer/pullsmart", b.tok, map[string]any{"since": want[2], "wait": 0})
	assert.Equal(t, want[3:], decodePage(t, rep).ids())
	rep = r.postForm("/api/v1/peer/pullsmart", url.Values{"token": {b.tok}, "since": {strconv.FormatInt(want[3], 10)}, "wait": {"0"}})
	assert.Equal(t, want[4:], decodePage(t, rep).ids())

	// At-least-once: nothing is marked read.
	assert.Equal(t, want, r.pullMsgs(b, nil).ids())
	assert.Equal(t, want, r.pullMsgs(b, nil).ids())
	// A cursor ahead of every message the store gave (a restored store):
	// the reader is told to start over (peer_restore_test.go).
	rep = r.get("/api/v1/peer/pullsmart", url.Values{"token": {b.tok}, "since": {"1000000"}, "wait": {"0"}})
	assert.Equal(t, http.StatusConflict, rep.Status, string(rep.Body))
	assert.Equal(t, "cursor_ahead", rep.errorCode())
}

// TestPeerPullWakes: a waiting pullsmart answers the moment a message for
// it is committed, not when its wait runs out; others' messages do not end it.
func TestPeerPullWakes(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t)
	a, b, c := r.peerLogin("alpha"), r.peerLogin("alpha"), r.peerLogin("alpha")
	poll := async(func() reply {
		return r.get("/api/v1/peer/pullsmart", url.Values{"token": {b.tok}, "wait": {longWait}})
	})
	r.waitPolling(1)
	r.sendTo(a, c.id, "not for b") // wakes b's poll, which reads nothing and waits again
	id := r.sendTo(a, b.id, "for b")
	page := decodePage(t, within(t, 5*time.Second, poll, "pullsmart after send"))
	assert.Equal(t, []int64{id}, page.ids())
	r.waitPolling(0)

	// A poll that times out answers an empty list and where to go on from.
	page = decodePage(t, r.get("/api/v1/peer/pullsmart", url.Values{"token": {b.tok}, "wait": {"0"}, "since": {strconv.FormatInt(id, 10)}}))
	assert.Empty(t, page.Messages)
	assert.Equal(t, id, page.Next)

	// A poll that starts behind the cache reads SQL once; woken by others'
	// messages, it goes on from where that read ended, in memory.
	setCacheLimit(r.store.msgs, 2)
	for i := range 4 {
		r.sendTo(a, c.id, i)
	}
	reads := r.store.msgReads.Load()
	since := strconv.FormatInt(id, 10)
	poll = async(func() reply {
		return r.get("/api/v1/peer/pullsmart", url.Values{"token": {b.tok}, "wait": {longWait}, "since": {since}})
	})
	r.waitPolling(1)
	r.sendTo(a, c.id, "wakes b, not for b")
	id = r.sendTo(a, b.id, "for b")
	page = decodePage(t, within(t, 5*time.Second, poll, "pullsmart after send"))
	assert.Equal(t, []int64{id}, page.ids())
	assert.Equal(t, reads+1, r.store.msgReads.Load(), "SQL reads of one poll")
}

// TestPeerPeers: the valid logins of the net seen within 5 minutes, with
// last_seen moved by any successful call, at most once a second.
func TestPeerPeers(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	t0 := r.clock.Now()
	a := r.peerLogin("alpha")
	r.clock.Advance(time.Minute)
	b := r.peerLogin("alpha")
	gone := r.peerLogin("alpha") // seen at t0+1m, never again
	r.peerLogin("beta")
	peersOf := func(p peer) map[string]string {
		t.Helper()
		rep := r.get("/api/v1/peer/peers", url.Values{"token": {p.tok}})
		require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
		var out struct {
			Peers []peerInfo `json:"peers"`
		}
		require.NoError(t, json.Unmarshal(rep.Body, &out))
		got := map[string]string{}
		for _, pi := range out.Peers {
			got[pi.PeerID] = pi.LastSeen
		}
		return got
	}
	at := func(d time.Duration) string { return formatMS(t0.Add(d).UnixMilli()) }

	assert.Equal(t, map[string]string{a.id: at(time.Minute), b.id: at(time.Minute), gone.id: at(time.Minute)}, peersOf(a),
		"logins are seen; the caller is seen now")

	// Any successful call of a token moves its last_seen: a pushreq here.
	moveClockTo(r, t0.Add(2*time.Minute))
	r.push(a.tok, map[string]any{"simEndpoint": "/x"})
	flushStoreWrites(t, r)
	r.clock.Advance(500 * time.Millisecond)
	r.push(a.tok, map[string]any{"simEndpoint": "/y"}) // within the second: not written
	flushStoreWrites(t, r)
	moveClockTo(r, t0.Add(6*time.Minute+30*time.Second)) // gone was last seen 5m30s ago
	got := peersOf(b)
	assert.Equal(t, at(2*time.Minute), got[a.id], "throttled to once a second")
	assert.Equal(t, at(6*time.Minute+30*time.Second), got[b.id], "the caller")
	assert.NotContains(t, got, gone.id, "not seen within 5 minutes")
	assert.Len(t, got, 2)

	// A failed call is not seen.
	rep := r.postJSON("/api/v1/peer/send", a.tok, map[string]any{"to": "nobody", "data": 1})
	require.Equal(t, http.StatusNotFound, rep.Status)
	flushStoreWrites(t, r)
	assert.Equal(t, at(2*time.Minute), peersOf(b)[a.id])

	// An expired login is not a peer, however recently it was seen.
	moveClockTo(r, t0.Add(24*time.Hour-time.Second))
	r.push(a.tok, map[string]any{"simEndpoint": "/z"})
	flushStoreWrites(t, r)
	assert.Contains(t, peersOf(b), a.id)
	moveClockTo(r, t0.Add(24*time.Hour)) // a's token expires
	got = peersOf(b)
	assert.NotContains(t, got, a.id)
	assert.Contains(t, got, b.id)
}
