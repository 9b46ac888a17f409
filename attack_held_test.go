package main

// Tests that attack the synchronous gateway requests held in memory
// (held.go): the queue quotas, the hand-over to the store, leases and
// attempts, the answers a poll carries, and what memory is freed. Each
// says what the contract (docs/API.md, "Gateway" and "Answering and
// polling in one call"; README, "What lives only in memory") asks for,
// and what went wrong before the rule it guards.

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// abandonVia sends a synchronous gateway request with body from the
// relay's one test address and returns a func that drops the connection.
func abandonVia(r *testRelay, net, body string) (abandon func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, r.URL+"/via/"+net+"/x", strings.NewReader(body))
		if resp, err := http.DefaultClient.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	return func() { cancel(); <-done }
}

// heldSizes reads the held requests' maps under their lock.
func heldSizes(r *testRelay) (byRID, ended, queues, out, queued int) {
	hr := r.srv.held
	hr.mu.Lock()
	byRID, ended, queues, out = len(hr.byRID), len(hr.ended), len(hr.queues), len(hr.out)
	hr.mu.Unlock()
	c := &r.store.counts
	c.mu.Lock()
	defer c.mu.Unlock()
	return byRID, ended, queues, out, len(c.heldQueued) + len(c.heldVia)
}

// TestAttackHeldCountInStoredQueueQuota: held requests count in their
// net's gateway queue (--max-queue) "with the gateway requests the store
// holds" — both ways. A Prefer: respond-async request to a net whose
// gateway queue is full of held requests must be refused 429 queue_full,
// as a held one is (before: the store admitted it, and the queue grew
// past --max-queue).
func TestAttackHeldCountInStoredQueueQuota(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t, func(c *config) { c.MaxQueue, c.ViaAddrShare, c.ViaTimeout = 2, 0, time.Hour })
	r.serve("full")
	a, b := r.viaCall("full", "/a"), r.viaCall("full", "/b")
	waitFor(t, 5*time.Second, func() bool { return r.srv.held.held.Load() == 2 }, "two held")
	assertLimited(t, r.viaFrom("", "full", "", ""), "queue_full", "1") // a third held one: refused
	rep := r.viaFrom("", "full", "", "respond-async")
	assert.Equal(t, http.StatusTooManyRequests, rep.Status,
		"the gateway queue holds --max-queue held requests: a stored one must be refused too, got %d %s", rep.Status, rep.Body)
	assert.Equal(t, "queue_full", rep.errorCode())
	got := r.pullReqs("full", testKey, url.Values{"max": {"10"}})
	assert.LessOrEqual(t, len(got), 2, "never more than --max-queue queued in the gateway's queue")
	for _, l := range got {
		require.Equal(t, http.StatusOK, r.answer("full", testKey, l.RID, map[string]any{"simBody": "ok"}).Status)
	}
	within(t, 5*time.Second, a, "caller a")
	within(t, 5*time.Second, b, "caller b")
}

// TestAttackHeldCountInStoredAddrShare: the same for one caller's share of
// the gateway queue (--via-addr-share): an address whose held requests
// fill its share gets 429 for a Prefer: respond-async one too.
func TestAttackHeldCountInStoredAddrShare(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t, trustLoopback, func(c *config) { c.MaxQueue, c.ViaAddrShare, c.ViaTimeout = 4, 0.5, time.Hour })
	r.serve("share")
	addr := "203.0.113.50"
	a := async(func() reply { return r.viaFrom(addr, "share", "", "") })
	b := async(func() reply { return r.viaFrom(addr, "share", "", "") })
	waitFor(t, 5*time.Second, func() bool { return r.srv.held.held.Load() == 2 }, "two held")
	assertLimited(t, r.viaFrom(addr, "share", "", ""), "queue_full", "1") // held: at its share of 2
	rep := r.viaFrom(addr, "share", "", "respond-async")
	assert.Equal(t, http.StatusTooManyRequests, rep.Status,
		"the address's held requests fill its share: a stored one must be refused too, got %d %s", rep.Status, rep.Body)
	for _, l := range r.pullReqs("share", testKey, url.Values{"max": {"10"}}) {
		r.answer("share", testKey, l.RID, map[string]any{"simBody": "ok"})
	}
	within(t, 5*time.Second, a, "caller a")
	within(t, 5*time.Second, b, "caller b")
}

// TestAttackHeldRequeuedKeepsAttempt: a held request whose lease ran out
// and that is queued again when its caller's wait ends goes to the store
// "as it stood": with the attempt it had (before: it was stored with
// attempt 0, so its next delivery said attempt 1 again and --max-attempts
// started over).
func TestAttackHeldRequeuedKeepsAttempt(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t, func(c *config) { c.ViaTimeout, c.MaxAttempts = 10*time.Second, 2 })
	r.serve("again")
	asleep := r.srv.poller.asleep.Load()
	caller := r.viaCall("again", "/x")
	first := r.leaseHeld("again", "5") // attempt 1, its lease ends before the caller's wait
	assert.Equal(t, 1, first.Attempt)
	r.waitAsleep(asleep + 1)
	r.advance(10 * time.Second) // the lease ran out at 5 s; the caller's wait ends at 10 s
	assert.Equal(t, http.StatusGatewayTimeout, within(t, 5*time.Second, caller, "the 504").Status)
	var attempt int
	require.NoError(t, r.store.r.QueryRow(`SELECT attempt FROM requests WHERE rid = ?`, first.RID).Scan(&attempt))
	assert.Equal(t, 1, attempt, "stored with the one delivery it had")
	got := r.pullReqs("again", testKey, nil)
	require.Len(t, got, 1)
	assert.Equal(t, 2, got[0].Attempt, "its second delivery: the last of --max-attempts 2")
	assertCountsExact(t, r, "a requeued held request stored")
}

// TestAttackHeldStoredByRefusedHeadThenAnswered: a SimServer that begins a
// streamed answer has the request stored first; when the head itself is
// refused (here the caller address's budget, --max-addr-store) the SDKs
// answer whole instead (a 502 response_too_large). That answer is
// committed and the SimServer gets 200, and the caller, still waiting,
// gets it (before: it waited for a streamed head that never came, and got
// 504 at --via-timeout).
func TestAttackHeldStoredByRefusedHeadThenAnswered(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t, func(c *config) { c.MaxAddrStore, c.ViaTimeout = 16<<10, time.Hour })
	r.serve("big")
	caller := r.viaCall("big", "/download")
	l := r.leaseHeld("big", "60")
	head := r.head("big", l.RID, map[string]any{"Content-Type": "text/plain"}, strings.Repeat("x", 64<<10))
	require.Equal(t, http.StatusInsufficientStorage, head.Status, "the head is past the caller address's budget: %s", head.Body)
	whole := r.answer("big", testKey, l.RID, map[string]any{"simStatus": 502, "simBody": "response_too_large"})
	require.Equal(t, http.StatusOK, whole.Status, "the whole answer is taken: %s", whole.Body)
	select {
	case rep := <-caller:
		assert.Equal(t, http.StatusBadGateway, rep.Status)
		assert.Equal(t, "response_too_large", string(rep.Body))
	case <-time.After(3 * time.Second):
		t.Errorf("the caller still waits for an answer the SimServer got 200 for")
		r.advance(time.Hour)
		rep := within(t, 5*time.Second, caller, "the caller at --via-timeout")
		t.Logf("the caller got %d %s at --via-timeout", rep.Status, rep.Body)
	}
}

// TestAttackHeldLeasedStoredPastFullQueue: a held request leased to a
// SimServer is no longer queued; when its caller's wait ends it is stored
// as delivered, and the queue quota, checked when it came, must not refuse
// it then (before: the store's queue check refused it, the caller got 429
// queue_full after its whole wait instead of 504, and the SimServer
// working on it got 410 cancelled for its answer).
func TestAttackHeldLeasedStoredPastFullQueue(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t, func(c *config) { c.MaxQueue, c.ViaAddrShare, c.ViaTimeout = 2, 0, 10*time.Second })
	r.serve("busy")
	asleep := r.srv.poller.asleep.Load()
	caller := r.viaCall("busy", "/slow")
	l := r.leaseHeld("busy", "60")
	r.waitAsleep(asleep + 1)
	// Two more fill the gateway queue while the first is at work.
	require.Equal(t, http.StatusAccepted, r.viaFrom("", "busy", "", "respond-async").Status)
	require.Equal(t, http.StatusAccepted, r.viaFrom("", "busy", "", "respond-async").Status)
	r.advance(10 * time.Second)
	rep := within(t, 5*time.Second, caller, "the caller's end")
	assert.Equal(t, http.StatusGatewayTimeout, rep.Status, "the wait ran out: 504, got %d %s", rep.Status, rep.Body)
	late := r.answer("busy", testKey, l.RID, map[string]any{"simBody": "done"})
	assert.Equal(t, http.StatusOK, late.Status, "the SimServer that held it answers it: %s", late.Body)
}

// TestAttackMaxOneStarvesHeld: polls of max=1 on a net whose store counts
// say a gateway request is queued, though it expired (the janitor has not
// written it down), alternate between held requests and the store's; each
// gets one of the held requests, the store having none (before: on the
// store's turn they got nothing while held requests waited).
func TestAttackMaxOneStarvesHeld(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t, func(c *config) { c.ViaTimeout, c.ReqTTL = time.Hour, time.Minute })
	r.serve("turns")
	require.Equal(t, http.StatusAccepted, r.viaFrom("", "turns", "", "respond-async").Status)
	r.advance(2 * time.Minute) // it expired; the counts still say queued
	const n = 6
	var callers []<-chan reply
	for i := range n {
		callers = append(callers, r.viaCall("turns", "/"+string(rune('a'+i))))
	}
	waitFor(t, 5*time.Second, func() bool { return r.srv.held.held.Load() == n }, "all held")
	empty := 0
	for range n {
		got := r.pullReqs("turns", testKey, url.Values{"max": {"1"}})
		if len(got) == 0 {
			empty++
		}
		for _, l := range got {
			r.answer("turns", testKey, l.RID, map[string]any{"simBody": "ok"})
		}
	}
	assert.Zero(t, empty, "polls of max=1 that got nothing while held requests waited")
	for {
		got := r.pullReqs("turns", testKey, url.Values{"max": {"10"}})
		if len(got) == 0 {
			break
		}
		for _, l := range got {
			r.answer("turns", testKey, l.RID, map[string]any{"simBody": "ok"})
		}
	}
	for _, c := range callers {
		within(t, 5*time.Second, c, "a caller")
	}
}

// TestAttackMaxOneLongPollSleepsOnHeld: the same starvation seen by a long
// poll: a max=1 poll parked on the net sleeps on while held requests are
// queued, until its wait ends.
func TestAttackMaxOneLongPollSleepsOnHeld(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t, func(c *config) { c.ViaTimeout, c.ReqTTL = time.Hour, time.Minute })
	r.serve("sleepy")
	require.Equal(t, http.StatusAccepted, r.viaFrom("", "sleepy", "", "respond-async").Status)
	r.advance(2 * time.Minute)
	a, b := r.viaCall("sleepy", "/a"), r.viaCall("sleepy", "/b")
	waitFor(t, 5*time.Second, func() bool { return r.srv.held.held.Load() == 2 }, "two held")
	// Two long polls one after the other: one of them is on the store's turn.
	for i := range 2 {
		poll := async(func() reply {
			return r.get("/api/v1/server/pullreqsmart", url.Values{"net": {"sleepy"}, "key": {testKey}, "wait": {longWait}, "max": {"1"}})
		})
		select {
		case rep := <-poll:
			require.Equal(t, http.StatusOK, rep.Status)
			reqs, _ := rep.JSON["requests"].([]any)
			assert.Len(t, reqs, 1, "poll %d", i)
			for _, q := range reqs {
				r.answer("sleepy", testKey, q.(map[string]any)["rid"].(string), map[string]any{"simBody": "ok"})
			}
		case <-time.After(2 * time.Second):
			t.Errorf("poll %d of max=1 sleeps while a held request is queued", i)
			r.advance(time.Minute)
			rep := within(t, 5*time.Second, poll, "the poll at its wait's end")
			reqs, _ := rep.JSON["requests"].([]any)
			for _, q := range reqs {
				r.answer("sleepy", testKey, q.(map[string]any)["rid"].(string), map[string]any{"simBody": "ok"})
			}
		}
	}
	for _, l := range r.pullReqs("sleepy", testKey, url.Values{"max": {"10"}}) {
		r.answer("sleepy", testKey, l.RID, map[string]any{"simBody": "ok"})
	}
	within(t, 5*time.Second, a, "caller a")
	within(t, 5*time.Second, b, "caller b")
}

// TestAttackHeldMemoryFreedWithoutPolls: callers that go away from a net
// nobody serves leave nothing behind once their leases would have ended:
// the janitor's sweep prunes them, bodies included (before: only a lease
// of some net did, so a relay whose SimServers were down kept every
// abandoned body).
func TestAttackHeldMemoryFreedWithoutPolls(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t)
	body := strings.Repeat("b", 32<<10)
	for range 20 {
		abandon := abandonVia(r, "down", body)
		waitFor(t, 5*time.Second, func() bool { return r.srv.held.held.Load() == 1 }, "held")
		abandon()
		waitFor(t, 5*time.Second, func() bool { return r.srv.held.held.Load() == 0 }, "withdrawn")
	}
	r.advance(24 * time.Hour)
	// Another caller comes and goes, a day later: still no lease anywhere.
	abandon := abandonVia(r, "down", "x")
	waitFor(t, 5*time.Second, func() bool { return r.srv.held.held.Load() == 1 }, "held")
	abandon()
	waitFor(t, 5*time.Second, func() bool { return r.srv.held.held.Load() == 0 }, "withdrawn")
	byRID, ended, _, _, _ := heldSizes(r)
	assert.LessOrEqual(t, byRID, 1, "abandoned requests a day old still by rid")
	assert.LessOrEqual(t, ended, 1, "abandoned requests a day old still in ended")
}

// TestAttackHeldOutFreedAt504: a leased held request stored at its 504
// leaves no empty map of its net behind in out (before: it was freed only
// at the net's next lease).
func TestAttackHeldOutFreedAt504(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t, func(c *config) { c.ViaTimeout = 10 * time.Second })
	r.serve("gone")
	asleep := r.srv.poller.asleep.Load()
	caller := r.viaCall("gone", "/x")
	r.leaseHeld("gone", "60")
	r.waitAsleep(asleep + 1)
	r.advance(10 * time.Second)
	assert.Equal(t, http.StatusGatewayTimeout, within(t, 5*time.Second, caller, "the 504").Status)
	_, _, queues, out, queued := heldSizes(r)
	assert.Zero(t, queues)
	assert.Zero(t, out, "no net's leased map is kept once it is empty")
	assert.Zero(t, queued)
}

// TestAttackHeldMapsFreed: after callers are answered, withdrawn, time out
// or fail, and a SimServer polls a while later, nothing of theirs is left
// in memory: by rid, ended, the queues, out, the per-address counts and
// the metric.
func TestAttackHeldMapsFreed(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t, trustLoopback, func(c *config) { c.ViaTimeout, c.MaxAttempts, c.MaxQueue = 20*time.Second, 1, 10 })
	r.serve("free")
	asleep := r.srv.poller.asleep.Load()
	answered := r.viaCall("free", "/answered")
	l := r.leaseHeld("free", "60")
	require.Equal(t, http.StatusOK, r.answer("free", testKey, l.RID, map[string]any{"simBody": "ok"}).Status)
	assert.Equal(t, http.StatusOK, within(t, 5*time.Second, answered, "answered").Status)

	abandon := abandonVia(r, "free", "x")
	waitFor(t, 5*time.Second, func() bool { return r.srv.held.held.Load() == 1 }, "held")
	abandon()
	waitFor(t, 5*time.Second, func() bool { return r.srv.held.held.Load() == 0 }, "withdrawn")

	failing := async(func() reply { return r.viaFrom("198.51.100.1", "free", "", "") })
	r.leaseHeld("free", "5")
	timeout := async(func() reply { return r.viaFrom("198.51.100.2", "free", "", "") })
	waitFor(t, 5*time.Second, func() bool { return r.srv.held.held.Load() == 2 }, "two held")
	r.waitAsleep(asleep + 2)
	r.advance(6 * time.Second) // the last lease of the first ran out
	assert.Equal(t, "failed", within(t, 5*time.Second, failing, "the failed one").errorCode())
	r.advance(20 * time.Second)
	assert.Equal(t, http.StatusGatewayTimeout, within(t, 5*time.Second, timeout, "the 504").Status)

	r.advance(time.Hour)
	r.pullReqs("free", testKey, nil) // a lease prunes
	r.pullReqs("free", testKey, nil)
	byRID, ended, queues, out, queued := heldSizes(r)
	assert.Zero(t, byRID, "by rid")
	assert.Zero(t, ended, "ended")
	assert.Zero(t, queues, "queues")
	assert.Zero(t, out, "out")
	assert.Zero(t, queued, "per-address counts")
	assert.Zero(t, r.srv.held.held.Load(), "held metric")
}

// TestAttackHeldAnsweredOnce: a held request answered at once by pushres,
// by a poll's answers and by a second poll's answers: exactly one is
// taken, the others get 409 already_answered, the caller gets that one.
func TestAttackHeldAnsweredOnce(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t)
	r.serve("once")
	for round := range 10 {
		caller := r.viaCall("once", "/x")
		l := r.leaseHeld("once", "60")
		var wg sync.WaitGroup
		var mu sync.Mutex
		var taken []string
		for i, how := range []string{"pushres", "poll", "poll"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				body := map[string]any{"simBody": how + string(rune('0'+i))}
				ok := false
				if how == "pushres" {
					ok = r.answer("once", testKey, l.RID, body).Status == http.StatusOK
				} else {
					_, _, out := r.pollWith("once", []any{map[string]any{"rid": l.RID, "sim_res": body}}, nil)
					ok = len(out) == 1 && out[0]["status"] == "answered"
					if !ok && len(out) == 1 {
						assert.Equal(t, "already_answered", out[0]["error"].(map[string]any)["code"])
					}
				}
				if ok {
					mu.Lock()
					taken = append(taken, body["simBody"].(string))
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		require.Len(t, taken, 1, "round %d: answers taken: %v", round, taken)
		rep := within(t, 5*time.Second, caller, "the caller")
		assert.Equal(t, taken[0], string(rep.Body), "round %d", round)
	}
	assert.Zero(t, r.count("requests"), "nothing stored")
}

// TestAttackHeldAnswerWrongNet: an answer to a held request posted for
// another net, with that net's key (pushres, a poll's answers, extend,
// pushpart, watch), is 404 and does not reach the caller.
func TestAttackHeldAnswerWrongNet(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t)
	r.serve("mine")
	r.serve("theirs")
	caller := r.viaCall("mine", "/x")
	l := r.leaseHeld("mine", "60")
	assert.Equal(t, "not_found", r.answer("theirs", testKey, l.RID, map[string]any{"simBody": "stolen"}).errorCode())
	_, _, out := r.pollWith("theirs", []any{map[string]any{"rid": l.RID, "sim_res": map[string]any{"simBody": "stolen"}}}, nil)
	require.Len(t, out, 1)
	assert.Equal(t, "not_found", out[0]["error"].(map[string]any)["code"])
	ext := r.postJSON("/api/v1/server/extend", testKey, map[string]any{"net": "theirs", "rid": l.RID, "lease": 5})
	assert.Equal(t, http.StatusNotFound, ext.Status, string(ext.Body))
	part := r.part("theirs", l.RID, 0, []byte("x"), true)
	assert.Equal(t, http.StatusNotFound, part.Status, string(part.Body))
	head := r.head("theirs", l.RID, map[string]any{"Content-Type": "text/plain"}, "x")
	assert.Equal(t, http.StatusNotFound, head.Status, string(head.Body))
	// A wrong key for the right net.
	wrong := r.answer("mine", "wrong-key-0123456789", l.RID, map[string]any{"simBody": "stolen"})
	assert.NotEqual(t, http.StatusOK, wrong.Status)
	select {
	case rep := <-caller:
		t.Fatalf("the caller got an answer from another net: %d %s", rep.Status, rep.Body)
	case <-time.After(200 * time.Millisecond):
	}
	require.Equal(t, http.StatusOK, r.answer("mine", testKey, l.RID, map[string]any{"simBody": "mine"}).Status)
	assert.Equal(t, "mine", string(within(t, 5*time.Second, caller, "the caller").Body))
	assert.Zero(t, r.count("requests"), "nothing stored")
}

// TestAttackAnswersBadInput: answers that are not a list of whole
// {"rid","sim_res"} answers are 400 for the whole call (whatever the
// fault in sim_res), and neither the held request nor the stored one
// beside them is answered.
func TestAttackAnswersBadInput(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t, func(c *config) { c.ViaTimeout = time.Hour })
	tok, _ := r.login("bad")
	stored := r.push(tok, map[string]any{"simEndpoint": "/s"})
	require.Len(t, r.pullReqs("bad", testKey, nil), 1)
	caller := r.viaCall("bad", "/held")
	held := r.leaseHeld("bad", "600")
	good := []any{
		map[string]any{"rid": stored, "sim_res": map[string]any{"simBody": "ok"}},
		map[string]any{"rid": held.RID, "sim_res": map[string]any{"simBody": "ok"}},
	}
	for name, bad := range map[string]any{
		"an object":               map[string]any{"rid": stored},
		"a string":                "[]x",
		"a number":                7,
		"null item":               []any{nil},
		"a list item":             []any{[]any{}},
		"a string item":           []any{"x"},
		"rid a number":            []any{map[string]any{"rid": 5, "sim_res": map[string]any{}}},
		"rid null":                []any{map[string]any{"rid": nil, "sim_res": map[string]any{}}},
		"rid empty":               []any{map[string]any{"rid": "", "sim_res": map[string]any{}}},
		"no sim_res":              []any{map[string]any{"rid": "x"}},
		"sim_res null":            []any{map[string]any{"rid": "x", "sim_res": nil}},
		"sim_res a list":          []any{map[string]any{"rid": "x", "sim_res": []any{}}},
		"sim_res a string":        []any{map[string]any{"rid": "x", "sim_res": "{}"}},
		"more":                    []any{map[string]any{"rid": "x", "sim_res": map[string]any{}, "more": true}},
		"status 99":               []any{map[string]any{"rid": "x", "sim_res": map[string]any{"simStatus": 99}}},
		"status 600":              []any{map[string]any{"rid": "x", "sim_res": map[string]any{"simStatus": 600}}},
		"status a string":         []any{map[string]any{"rid": "x", "sim_res": map[string]any{"simStatus": "abc"}}},
		"status 1e2":              []any{map[string]any{"rid": "x", "sim_res": map[string]any{"simStatus": 1e20}}},
		"headers a list":          []any{map[string]any{"rid": "x", "sim_res": map[string]any{"simHeaders": []any{1}}}},
		"header with CRLF":        []any{map[string]any{"rid": "x", "sim_res": map[string]any{"simHeaders": map[string]any{"X": "a\r\nb: c"}}}},
		"header name bad":         []any{map[string]any{"rid": "x", "sim_res": map[string]any{"simHeaders": map[string]any{"a b": "c"}}}},
		"bad base64":              []any{map[string]any{"rid": "x", "sim_res": map[string]any{"simBody": "!!", "simBodyEncoding": "base64"}}},
		"bad encoding":            []any{map[string]any{"rid": "x", "sim_res": map[string]any{"simBody": "x", "simBodyEncoding": "rot13"}}},
		"over 100":                make([]any, maxAnswers+1),
		"good then bad":           append(append([]any{}, good...), map[string]any{"rid": "x"}),
		"good then unknown field": append(append([]any{}, good...), map[string]any{"rid": "x", "sim_res": map[string]any{}, "x": 1}),
	} {
		t.Run(name, func(t *testing.T) {
			rep, got, _ := r.pollWith("bad", bad, nil)
			assert.Equal(t, http.StatusBadRequest, rep.Status, "%s", rep.Body)
			assert.Empty(t, got, "nothing leased")
		})
	}
	t.Run("form text not JSON", func(t *testing.T) {
		rep := r.postForm("/api/v1/server/pullreqsmart", url.Values{"net": {"bad"}, "key": {testKey}, "wait": {"0"}, "answers": {"[{"}})
		assert.Equal(t, http.StatusBadRequest, rep.Status, "%s", rep.Body)
	})
	t.Run("on a GET", func(t *testing.T) {
		text, _ := json.Marshal(good)
		rep := r.get("/api/v1/server/pullreqsmart", url.Values{"net": {"bad"}, "key": {testKey}, "wait": {"0"}, "answers": {string(text)}})
		assert.Equal(t, http.StatusBadRequest, rep.Status, "%s", rep.Body)
	})
	t.Run("good answers with a bad wait", func(t *testing.T) {
		rep, _, _ := r.pollWith("bad", good, map[string]any{"wait": "soon"})
		assert.Equal(t, http.StatusBadRequest, rep.Status, "%s", rep.Body)
	})
	t.Run("good answers with a wrong key", func(t *testing.T) {
		b, _ := json.Marshal(map[string]any{"net": "bad", "wait": 0, "answers": good})
		req, _ := http.NewRequest(http.MethodPost, r.URL+"/api/v1/server/pullreqsmart", bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer wrong-key-0123456789")
		rep := r.do(req)
		assert.NotEqual(t, http.StatusOK, rep.Status)
	})
	flushStoreWrites(t, r)
	var status string
	require.NoError(t, r.store.r.QueryRow(`SELECT status FROM requests WHERE rid = ?`, stored).Scan(&status))
	assert.Equal(t, "delivered", status, "the stored request is not answered by a refused call")
	select {
	case rep := <-caller:
		t.Fatalf("the held caller got an answer from a refused call: %d %s", rep.Status, rep.Body)
	default:
	}
	rep, _, out := r.pollWith("bad", good, nil)
	require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	require.Len(t, out, 2)
	assert.Equal(t, "answered", out[0]["status"])
	assert.Equal(t, "answered", out[1]["status"])
	assert.Equal(t, "ok", string(within(t, 5*time.Second, caller, "the held caller").Body))
}

// TestAttackHeld504RacesAnswer: a held request's 504 and its answer at
// the same moment: the caller gets the answer or a 504, the request is
// stored at most once, and an answer the SimServer got 200 for is either
// the caller's or stored as answered.
func TestAttackHeld504RacesAnswer(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t, func(c *config) { c.ViaTimeout = 10 * time.Second })
	r.serve("race")
	for round := range 15 {
		asleep := r.srv.poller.asleep.Load()
		caller := r.viaCall("race", "/x")
		l := r.leaseHeld("race", "60")
		r.waitAsleep(asleep + 1)
		ans := async(func() reply { return r.answer("race", testKey, l.RID, map[string]any{"simBody": "raced"}) })
		r.advance(10 * time.Second)
		got := within(t, 5*time.Second, ans, "the answer's reply")
		rep := within(t, 5*time.Second, caller, "the caller")
		flushStoreWrites(t, r)
		var n int
		require.NoError(t, r.store.r.QueryRow(`SELECT count(*) FROM requests WHERE rid = ?`, l.RID).Scan(&n))
		assert.LessOrEqual(t, n, 1, "round %d: stored at most once", round)
		require.Equal(t, http.StatusOK, got.Status, "round %d: the answer is taken: %s", round, got.Body)
		switch rep.Status {
		case http.StatusOK:
			assert.Equal(t, "raced", string(rep.Body))
		case http.StatusGatewayTimeout:
			var status string
			require.NoError(t, r.store.r.QueryRow(`SELECT status FROM requests WHERE rid = ?`, l.RID).Scan(&status), "round %d", round)
			assert.Equal(t, "answered", status, "round %d: the 504'd request keeps its answer", round)
		default:
			t.Errorf("round %d: the caller got %d %s", round, rep.Status, rep.Body)
		}
	}
	assertCountsExact(t, r, "504s racing answers")
	assert.Zero(t, r.srv.held.held.Load(), "nothing held")
	_, _, queues, out, queued := heldSizes(r)
	assert.Zero(t, queues+queued, "no queue left")
	t.Logf("out maps left: %d", out)
}

// TestAttackHeld504RacesHead: a held request's 504 and its streamed head
// at the same moment: stored once, and the caller either reads the stream
// or gets 504.
func TestAttackHeld504RacesHead(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t, func(c *config) { c.ViaTimeout = 10 * time.Second })
	r.serve("hrace")
	for round := range 15 {
		asleep := r.srv.poller.asleep.Load()
		caller := r.viaCall("hrace", "/x")
		l := r.leaseHeld("hrace", "60")
		r.waitAsleep(asleep + 1)
		head := async(func() reply {
			return r.head("hrace", l.RID, map[string]any{"Content-Type": "text/plain"}, "one,")
		})
		r.advance(10 * time.Second)
		h := within(t, 5*time.Second, head, "the head's reply")
		require.Equal(t, http.StatusOK, h.Status, "round %d: %s", round, h.Body)
		require.Equal(t, http.StatusOK, r.part("hrace", l.RID, 4, []byte("two"), true).Status, "round %d", round)
		rep := within(t, 5*time.Second, caller, "the caller")
		switch rep.Status {
		case http.StatusOK:
			assert.Equal(t, "one,two", string(rep.Body), "round %d", round)
		case http.StatusGatewayTimeout:
		default:
			t.Errorf("round %d: the caller got %d %s", round, rep.Status, rep.Body)
		}
	}
	assertCountsExact(t, r, "504s racing streamed heads")
}

// TestAttackHeldLeasedOnce: many SimServers polling at once never get the
// same held request twice while its lease holds.
func TestAttackHeldLeasedOnce(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t, func(c *config) { c.ViaTimeout, c.MaxQueue = time.Hour, 0 })
	r.serve("many")
	const n = 40
	var callers []<-chan reply
	for i := range n {
		callers = append(callers, r.viaCall("many", "/"+string(rune('A'+i))))
	}
	waitFor(t, 5*time.Second, func() bool { return r.srv.held.held.Load() == n }, "all held")
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				rep, got := r.pullReqsReply("many", testKey, url.Values{"max": {"3"}, "lease": {"600"}})
				if rep.Status != http.StatusOK {
					continue
				}
				mu.Lock()
				for _, l := range got {
					seen[l.RID]++
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	assert.Len(t, seen, n, "each handed out")
	for rid, k := range seen {
		assert.Equal(t, 1, k, "%s handed out %d times under one lease", rid, k)
		require.Equal(t, http.StatusOK, r.answer("many", testKey, rid, map[string]any{"simBody": "ok"}).Status)
	}
	for _, c := range callers {
		assert.Equal(t, http.StatusOK, within(t, 5*time.Second, c, "a caller").Status)
	}
}

// TestAttackHeldLapseWakesPoll: a held lease that runs out wakes another
// SimServer's parked poll, which gets it with attempt 2; the first
// SimServer's late answer is still taken, as the store would take it.
func TestAttackHeldLapseWakesPoll(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t, func(c *config) { c.ViaTimeout = time.Hour })
	r.serve("wake")
	caller := r.viaCall("wake", "/x")
	first := r.leaseHeld("wake", "5")
	asleep := r.srv.poller.asleep.Load()
	poll := async(func() reply {
		return r.get("/api/v1/server/pullreqsmart", url.Values{"net": {"wake"}, "key": {testKey}, "wait": {longWait}, "lease": {"30"}})
	})
	r.waitAsleep(asleep + 1)
	r.advance(5 * time.Second)
	rep := within(t, 5*time.Second, poll, "the parked poll, once the lease ran out")
	reqs, _ := rep.JSON["requests"].([]any)
	require.Len(t, reqs, 1, string(rep.Body))
	assert.Equal(t, first.RID, reqs[0].(map[string]any)["rid"])
	assert.EqualValues(t, "2", reqs[0].(map[string]any)["attempt"].(json.Number).String())
	require.Equal(t, http.StatusOK, r.answer("wake", testKey, first.RID, map[string]any{"simBody": "first"}).Status)
	assert.Equal(t, "first", string(within(t, 5*time.Second, caller, "the caller").Body))
}

// TestAttackHeldGoneAfterRefusedHead: a caller that goes away after its
// request was stored for a streamed head the store then refused: the
// stored request is withdrawn, its SimServer's answer is 410 cancelled.
func TestAttackHeldGoneAfterRefusedHead(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t, func(c *config) { c.MaxAddrStore, c.ViaTimeout = 16<<10, time.Hour })
	r.serve("left")
	abandon := abandonVia(r, "left", "")
	l := r.leaseHeld("left", "60")
	head := r.head("left", l.RID, map[string]any{"Content-Type": "text/plain"}, strings.Repeat("x", 64<<10))
	require.Equal(t, http.StatusInsufficientStorage, head.Status, string(head.Body))
	abandon()
	withdrawn := func() bool {
		flushStoreWrites(t, r)
		var n int
		require.NoError(t, r.store.r.QueryRow(`SELECT count(*) FROM requests WHERE rid = ? AND cancelled_at IS NOT NULL`, l.RID).Scan(&n))
		return n == 1
	}
	waitFor(t, 3*time.Second, withdrawn, "the stored request of a caller gone to be withdrawn")
	late := r.answer("left", testKey, l.RID, map[string]any{"simBody": "late"})
	assert.Equal(t, "cancelled", late.errorCode(), "%d %s", late.Status, late.Body)
}

// TestAttackHeldGoneRacesHead: a caller that goes away just as its
// SimServer begins a streamed answer: the request is not left in the
// store with an open stream nobody will read (it is withdrawn: cancelled,
// or deleted).
func TestAttackHeldGoneRacesHead(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t, func(c *config) { c.ViaTimeout = time.Hour })
	r.serve("gonerace")
	for round := range 30 {
		abandon := abandonVia(r, "gonerace", "")
		l := r.leaseHeld("gonerace", "60")
		head := async(func() reply {
			return r.head("gonerace", l.RID, map[string]any{"Content-Type": "text/plain"}, "one,")
		})
		abandon()
		h := within(t, 5*time.Second, head, "the head's reply")
		if h.Status != http.StatusOK {
			assert.Equal(t, "cancelled", h.errorCode(), "round %d: %s", round, h.Body)
			continue
		}
		waitFor(t, 5*time.Second, func() bool {
			flushStoreWrites(t, r)
			var n int
			require.NoError(t, r.store.r.QueryRow(
				`SELECT count(*) FROM requests WHERE rid = ? AND cancelled_at IS NULL`, l.RID).Scan(&n))
			return n == 0
		}, "round "+string(rune('0'+round%10))+": the streamed request of a caller gone is withdrawn")
	}
}

// TestAttackHeldAtShutdown: at shutdown (SIGTERM) the held requests go to
// the store as they stand, their callers get 503, and after the restart
// the SimServer gets them: the queued one, and the leased one once its
// lease runs out, with its attempt.
func TestAttackHeldAtShutdown(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	dbPath := testDB(t, "relay.db")
	cfg := testConfig(dbPath)
	cfg.ViaTimeout = time.Hour
	require.NoError(t, cfg.check(nil))
	clock := clockwork.NewFakeClockAt(testEpoch)
	start := func() (*relay, *testRelay) {
		rel, err := startRelay(context.Background(), cfg, clock, io.Discard, io.Discard)
		require.NoError(t, err)
		return rel, &testRelay{t: t, URL: rel.url(), DBPath: dbPath, store: rel.store, srv: rel.srv, clock: clock, cfg: cfg}
	}
	rel, r := start()
	r.serve("down")
	leasedCaller := r.viaCall("down", "/leased")
	l := r.leaseHeld("down", "60")
	queuedCaller := r.viaCall("down", "/queued")
	waitFor(t, 5*time.Second, func() bool { return r.srv.held.held.Load() == 2 }, "two held")
	stopped := make(chan error, 1)
	go func() { stopped <- rel.stop() }()
	for _, c := range []<-chan reply{leasedCaller, queuedCaller} {
		rep := within(t, 15*time.Second, c, "a caller at shutdown")
		assert.Equal(t, http.StatusServiceUnavailable, rep.Status, "%s", rep.Body)
	}
	require.NoError(t, <-stopped)

	rel, r = start()
	t.Cleanup(func() { require.NoError(t, rel.stop()) })
	got := r.pullReqs("down", testKey, url.Values{"max": {"10"}, "lease": {"600"}})
	require.Len(t, got, 1, "the queued one after the restart")
	assert.NotEqual(t, l.RID, got[0].RID)
	assert.Equal(t, 1, got[0].Attempt)
	r.advance(61 * time.Second)
	again := r.pullReqs("down", testKey, url.Values{"max": {"10"}})
	require.Len(t, again, 1, "the leased one once its lease ran out")
	assert.Equal(t, l.RID, again[0].RID)
	assert.Equal(t, 2, again[0].Attempt)
	assertCountsExact(t, r, "held requests stored at shutdown")
}

// TestAttackHeld504RacesHeadMany: many held requests whose 504 and
// streamed head race at once. A caller whose wait ran out while its
// SimServer's streamed head was being stored must read the stream (or get
// 504); it must never get the head alone as a whole answer (200 with an
// empty body), the stream left unread in the store.
func TestAttackHeld504RacesHeadMany(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t, func(c *config) { c.ViaTimeout, c.MaxQueue = 10*time.Second, 0 })
	r.serve("hmany")
	const n = 20
	truncated := 0
	for round := range 10 {
		asleep := r.srv.poller.asleep.Load()
		var callers []<-chan reply
		for i := range n {
			callers = append(callers, r.viaCall("hmany", "/"+string(rune('a'+i))))
		}
		waitFor(t, 5*time.Second, func() bool { return r.srv.held.held.Load() == n }, "all held")
		got := r.pullReqs("hmany", testKey, url.Values{"max": {"100"}, "lease": {"60"}})
		require.Len(t, got, n)
		r.waitAsleep(asleep + n)
		var heads []<-chan reply
		for _, l := range got {
			heads = append(heads, async(func() reply {
				return r.head("hmany", l.RID, map[string]any{"Content-Type": "text/plain"}, "one,")
			}))
		}
		r.advance(10 * time.Second)
		for i, l := range got {
			h := within(t, 5*time.Second, heads[i], "a head's reply")
			require.Equal(t, http.StatusOK, h.Status, "round %d: %s", round, h.Body)
			r.part("hmany", l.RID, 4, []byte("two"), true)
		}
		for i, c := range callers {
			rep := within(t, 5*time.Second, c, "a caller")
			switch {
			case rep.Status == http.StatusGatewayTimeout:
			case rep.Status == http.StatusOK && string(rep.Body) == "one,two":
			case rep.Status == http.StatusOK:
				truncated++
				t.Logf("round %d, caller %d: 200 with body %q: the streamed head written as a whole answer", round, i, rep.Body)
			default:
				t.Errorf("round %d, caller %d: %d %s", round, i, rep.Status, rep.Body)
			}
		}
	}
	assert.Zero(t, truncated, "callers that got a streamed answer's head alone as a whole answer")
	assert.Zero(t, r.srv.held.held.Load(), "nothing held")
}

// TestAttackHeldShortenedLastLease: a SimServer that extends the last
// lease of a held request to a shorter one moves the moment it fails. Its
// caller must be told then (410 failed), and an answer after it must be
// refused as the store refuses it (410 failed) (before: the caller waited
// for the old lease's end, and an answer meanwhile was taken).
func TestAttackHeldShortenedLastLease(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t, func(c *config) { c.MaxAttempts, c.ViaTimeout = 1, time.Hour })
	r.serve("short")
	asleep := r.srv.poller.asleep.Load()
	caller := r.viaCall("short", "/x")
	l := r.leaseHeld("short", "60")
	ext := r.postJSON("/api/v1/server/extend", testKey, map[string]any{"net": "short", "rid": l.RID, "lease": 1})
	require.Equal(t, http.StatusOK, ext.Status, string(ext.Body))
	r.waitAsleep(asleep + 1)
	r.advance(2 * time.Second) // the shortened last lease ran out: failed
	select {
	case rep := <-caller:
		assert.Equal(t, "failed", rep.errorCode(), "%d %s", rep.Status, rep.Body)
	case <-time.After(2 * time.Second):
		t.Errorf("the caller is not told its last lease ran out")
	}
	late := r.answer("short", testKey, l.RID, map[string]any{"simBody": "late"})
	assert.Equal(t, "failed", late.errorCode(), "an answer after the last lease ran out: %d %s", late.Status, late.Body)
	select {
	case rep := <-caller:
		t.Logf("the caller got %d %s", rep.Status, rep.Body)
	case <-time.After(2 * time.Second):
	}
}

// TestAttackStoredShortenedLastLease: the same for a request stored from
// the start (Prefer: wait), as the store does it: the answer after the
// shortened last lease is refused 410 failed.
func TestAttackStoredShortenedLastLease(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t, func(c *config) { c.MaxAttempts, c.ViaTimeout = 1, time.Hour })
	r.serve("shorts")
	require.Equal(t, http.StatusAccepted, r.viaFrom("", "shorts", "", "respond-async").Status)
	got := r.pullReqs("shorts", testKey, url.Values{"lease": {"60"}})
	require.Len(t, got, 1)
	ext := r.postJSON("/api/v1/server/extend", testKey, map[string]any{"net": "shorts", "rid": got[0].RID, "lease": 1})
	require.Equal(t, http.StatusOK, ext.Status, string(ext.Body))
	r.advance(2 * time.Second)
	late := r.answer("shorts", testKey, got[0].RID, map[string]any{"simBody": "late"})
	assert.Equal(t, "failed", late.errorCode(), "%d %s", late.Status, late.Body)
}

// TestAttackHeldRefusedAt504WakesWatch: a held request past its caller
// address's budget (--max-addr-store) is refused as it comes (507), as a
// stored one would be; one that fitted when it came but no longer does
// when its wait runs out is refused then, and withdrawn under its
// SimServer, whose watch names it and whose answer gets 410.
func TestAttackHeldRefusedAt504WakesWatch(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t, trustLoopback, func(c *config) { c.MaxAddrStore, c.ViaTimeout = 16<<10, 10*time.Second })
	r.serve("refused")
	const addr = "203.0.113.9"
	// Over its address's budget as it comes: refused at once, as a stored
	// request would be, not after its whole wait.
	assertFull(t, r.viaFrom(addr, "refused", strings.Repeat("b", 32<<10), ""), "addr_store_full")
	assert.Zero(t, r.srv.held.held.Load(), "nothing held")

	asleep := r.srv.poller.asleep.Load()
	caller := async(func() reply { return r.viaFrom(addr, "refused", strings.Repeat("b", 12<<10), "") })
	l := r.leaseHeld("refused", "600")
	// Meanwhile the same address stores enough that the held one no longer
	// fits its budget when its wait runs out.
	require.Equal(t, http.StatusAccepted, r.viaFrom(addr, "other", strings.Repeat("c", 8<<10), "respond-async").Status)
	r.waitAsleep(asleep + 1)
	watch := async(func() reply {
		return r.postJSON("/api/v1/server/watch", testKey, map[string]any{"net": "refused", "rids": []string{l.RID}, "wait": 50})
	})
	r.waitAsleep(asleep + 2)
	r.advance(10 * time.Second)
	rep := within(t, 5*time.Second, caller, "the caller's end")
	assertFull(t, rep, "addr_store_full")
	w := within(t, 5*time.Second, watch, "the watch, once the request could not be stored")
	assert.Equal(t, []any{l.RID}, w.JSON["cancelled"], "%s", w.Body)
	late := r.answer("refused", testKey, l.RID, map[string]any{"simBody": "done"})
	assert.Equal(t, "cancelled", late.errorCode())
}

// TestAttackAnswersSameRidTwice: one poll carrying two answers to the same
// held request, and two to the same stored one: the first of each is
// taken, the second is 409 already_answered, and each caller gets the
// first.
func TestAttackAnswersSameRidTwice(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t)
	tok, _ := r.login("twice")
	stored := r.push(tok, map[string]any{"simEndpoint": "/s"})
	require.Len(t, r.pullReqs("twice", testKey, nil), 1)
	caller := r.viaCall("twice", "/held")
	held := r.leaseHeld("twice", "60")
	rep, _, out := r.pollWith("twice", []any{
		map[string]any{"rid": held.RID, "sim_res": map[string]any{"simBody": "first"}},
		map[string]any{"rid": stored, "sim_res": map[string]any{"simBody": "first"}},
		map[string]any{"rid": held.RID, "sim_res": map[string]any{"simBody": "second"}},
		map[string]any{"rid": stored, "sim_res": map[string]any{"simBody": "second"}},
	}, nil)
	require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	require.Len(t, out, 4)
	assert.Equal(t, "answered", out[0]["status"])
	assert.Equal(t, "answered", out[1]["status"])
	for _, i := range []int{2, 3} {
		e, _ := out[i]["error"].(map[string]any)
		require.NotNil(t, e, "answer %d: %v", i, out[i])
		assert.Equal(t, "already_answered", e["code"], "answer %d", i)
	}
	assert.Equal(t, "first", string(within(t, 5*time.Second, caller, "the held caller").Body))
	res := r.get("/api/v1/client/pullres", url.Values{"token": {tok}, "rid": {stored}})
	assert.Equal(t, "first", res.JSON["sim_res"].(map[string]any)["simBody"])
}

// TestAttackPullsmartFromMemory: a SimClient's pullsmart waiting for its
// rid gets an answer posted with a poll from memory, and a pullsmart of
// another token waiting on the same rid gets nothing of it.
func TestAttackPullsmartFromMemory(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t)
	tok, _ := r.login("mem2")
	other, _ := r.login("mem2")
	rid := r.push(tok, map[string]any{"simEndpoint": "/s"})
	require.Len(t, r.pullReqs("mem2", testKey, nil), 1)
	asleep := r.srv.poller.asleep.Load()
	mine := async(func() reply {
		return r.get("/api/v1/client/pullsmart", url.Values{"token": {tok}, "rid": {rid}, "wait": {longWait}})
	})
	theirs := async(func() reply {
		return r.get("/api/v1/client/pullsmart", url.Values{"token": {other}, "rid": {rid}, "wait": {longWait}})
	})
	r.waitAsleep(asleep + 1)
	_, _, out := r.pollWith("mem2", []any{map[string]any{"rid": rid, "sim_res": map[string]any{"simBody": "yours"}}}, nil)
	require.Len(t, out, 1)
	assert.Equal(t, "answered", out[0]["status"])
	got := within(t, 5*time.Second, mine, "the owner's pullsmart")
	require.Equal(t, http.StatusOK, got.Status, string(got.Body))
	assert.Equal(t, "yours", got.JSON["sim_res"].(map[string]any)["simBody"])
	not := within(t, 5*time.Second, theirs, "another token's pullsmart")
	assert.NotEqual(t, http.StatusOK, not.Status, "%s", not.Body)
	assert.NotContains(t, string(not.Body), "yours")
}
