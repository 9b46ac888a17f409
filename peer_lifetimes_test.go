// Peer messaging lifetimes and limits: --msg-ttl, what purge removes, and
// --max-msg.

package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

// TestPeerMessageTTL: a message is readable until --msg-ttl, then not; the
// janitor's purge deletes it, with the subscriptions of expired logins.
func TestPeerMessageTTL(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.MsgTTL = 10 * time.Minute; c.TokenTTL = time.Hour })
	a, b := r.peerLogin("alpha"), r.peerLogin("alpha")
	r.subscribe(b, "t", true)
	old := r.sendTo(a, b.id, "old")
	r.clock.Advance(5 * time.Minute)
	newer, _ := r.fanOut(a, "t", "newer")

	r.clock.Advance(5*time.Minute - time.Millisecond)
	assert.Equal(t, []int64{old, newer}, msgIDs(r.readAll(b)), "both within their retention")
	assert.Equal(t, purgeReport{Marked: map[string]map[string]int{}, Requests: map[string]map[string]int{}}, purgeNow(t, r), "nothing is due")

	r.clock.Advance(time.Millisecond)
	assert.Equal(t, []int64{newer}, msgIDs(r.readAll(b)), "old expired")
	page := r.pullMsgs(b, url.Values{"since": {"0"}})
	assert.Equal(t, []int64{newer}, page.ids(), "a cursor older than the retention starts at the oldest kept")
	assert.Equal(t, purgeReport{Marked: map[string]map[string]int{}, Requests: map[string]map[string]int{}, Messages: map[string]int{"alpha": 1}}, purgeNow(t, r))
	assert.Equal(t, 1, r.count("messages"))

	r.clock.Advance(5 * time.Minute)
	assert.Empty(t, r.readAll(b))
	assert.Equal(t, 1, r.count("subscriptions"))
	r.clock.Advance(time.Hour) // the logins expire too
	rep := purgeNow(t, r)
	assert.Equal(t, map[string]int{"alpha": 1}, rep.Messages)
	assert.Equal(t, 2, rep.Tokens)
	assert.Zero(t, r.count("messages"))
	assert.Zero(t, r.count("subscriptions"), "subscriptions go with their logins")

	// Ids keep growing after every message is gone: a cursor stays valid.
	c, d := r.peerLogin("alpha"), r.peerLogin("alpha")
	assert.Greater(t, r.sendTo(c, d.id, "after"), newer)
}

// TestPeerClosedIntervalsPurged: an unsubscribed interval goes once no kept
// message falls in it.
func TestPeerClosedIntervalsPurged(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.MsgTTL = time.Minute })
	a, b := r.peerLogin("alpha"), r.peerLogin("alpha")
	r.subscribe(b, "t", true)
	id, _ := r.fanOut(a, "t", 1)
	r.subscribe(b, "t", false)
	r.subscribe(b, "t", true)
	assert.Equal(t, 2, r.count("subscriptions"))
	purgeNow(t, r)
	assert.Equal(t, 2, r.count("subscriptions"), "message %d is still kept", id)
	r.clock.Advance(time.Minute)
	purgeNow(t, r)
	assert.Equal(t, 1, r.count("subscriptions"), "only the open one is left")
	id2, n := r.fanOut(a, "t", 2)
	assert.Equal(t, 1, n)
	assert.Equal(t, []int64{id2}, msgIDs(r.readAll(b)))
}

// TestPeerMessageTooLarge: data over --max-msg is 413 message_too_large and
// writes nothing; data of exactly --max-msg is taken.
func TestPeerMessageTooLarge(t *testing.T) {
	t.Parallel()
	const maxMsg = 100
	r := newTestRelay(t, func(c *config) { c.MaxMsg = maxMsg })
	a, b := r.peerLogin("alpha"), r.peerLogin("alpha")
	exact := `"` + strings.Repeat("x", maxMsg-2) + `"`
	id := r.sendTo(a, b.id, json.RawMessage(exact))
	assert.Positive(t, id)
	over := `"` + strings.Repeat("x", maxMsg-1) + `"`
	before := storeRows(t, r)
	for name, rep := range map[string]reply{
		"send":      r.postJSON("/api/v1/peer/send", a.tok, map[string]any{"to": b.id, "data": json.RawMessage(over)}),
		"publish":   r.postJSON("/api/v1/peer/publish", a.tok, map[string]any{"topic": "t", "data": json.RawMessage(over)}),
		"broadcast": r.postJSON("/api/v1/peer/broadcast", a.tok, map[string]any{"data": json.RawMessage(over)}),
		"form":      r.postForm("/api/v1/peer/broadcast", url.Values{"token": {a.tok}, "data": {over}}),
	} {
		assertErrorShape(t, rep, http.StatusRequestEntityTooLarge, "message_too_large")
		assert.Equal(t, before, storeRows(t, r), name)
	}
	// Spaces do not count: data is stored without them.
	spaced := `[` + strings.Repeat(" ", 2*maxMsg) + `1]`
	r.sendTo(a, b.id, json.RawMessage(spaced))
}
