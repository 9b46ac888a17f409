// Long polls: they wake on the hub's signal, not on their timeout, and
// leave nothing behind when the client goes away or the relay shuts down.

package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// longWait is far beyond every deadline below: a poll that returns in time
// was woken, not timed out.
const longWait = "50"

// async runs fn in a goroutine and returns a channel with its reply.
func async(fn func() reply) <-chan reply {
	ch := make(chan reply, 1)
	go func() { ch <- fn() }()
	return ch
}

// within waits for a reply, failing the test after d.
func within(t testing.TB, d time.Duration, ch <-chan reply, what string) reply {
	t.Helper()
	select {
	case rep := <-ch:
		return rep
	case <-time.After(d):
		t.Fatalf("%s: no reply within %s", what, d)
		return reply{}
	}
}

// waitPolling waits until n long polls are parked in the relay.
func (r *testRelay) waitPolling(n int64) {
	r.t.Helper()
	waitFor(r.t, 10*time.Second, func() bool { return r.srv.poller.open.Load() == n }, "long polls open")
}

func TestLongPollWakesSimServer(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, _ := r.login("demo")
	r.pullReqs("demo", testKey, nil) // claim
	poll := async(func() reply {
		return r.get("/api/v1/server/pullreqsmart", url.Values{"net": {"demo"}, "key": {testKey}, "wait": {longWait}})
	})
	r.waitPolling(1)
	rid := r.push(tok, map[string]any{"simEndpoint": "/wake"})
	rep := within(t, 5*time.Second, poll, "pullreqsmart after pushreq")
	require.Equal(t, http.StatusOK, rep.Status)
	assert.Contains(t, string(rep.Body), rid)
}

func TestLongPollWakesSimClient(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, _ := r.login("demo")
	other, _ := r.login("demo")
	rid := r.push(tok, map[string]any{"simEndpoint": "/wake"})
	otherRID := r.push(other, map[string]any{"simEndpoint": "/wake"})
	r.pullReqs("demo", testKey, url.Values{"max": {"2"}})

	byRID := async(func() reply {
		return r.get("/api/v1/client/pullsmart", url.Values{"token": {tok}, "rid": {rid}, "wait": {longWait}})
	})
	anyRID := async(func() reply {
		return r.get("/api/v1/client/pullsmart", url.Values{"token": {other}, "wait": {longWait}})
	})
	r.waitPolling(2)
	require.Equal(t, http.StatusOK, r.answer("demo", testKey, rid, map[string]any{"simBody": "hi"}).Status)
	rep := within(t, 5*time.Second, byRID, "pullsmart by rid")
	assert.Equal(t, http.StatusOK, rep.Status)
	assert.Equal(t, rid, rep.str("rid"))
	require.Equal(t, http.StatusOK, r.answer("demo", testKey, otherRID, map[string]any{"simBody": "hi"}).Status)
	rep = within(t, 5*time.Second, anyRID, "pullsmart without rid")
	assert.Equal(t, http.StatusOK, rep.Status)
	assert.Equal(t, otherRID, rep.str("rid"))
}

// TestLongPollLeaseRunsOut: a SimServer waiting on a net gets a request back
// the moment another SimServer's lease on it runs out.
func TestLongPollLeaseRunsOut(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, _ := r.login("demo")
	rid := r.push(tok, map[string]any{"simEndpoint": "/crashy"})
	require.Len(t, r.pullReqs("demo", testKey, url.Values{"lease": {"0.2"}}), 1)
	poll := async(func() reply {
		return r.get("/api/v1/server/pullreqsmart", url.Values{"net": {"demo"}, "key": {testKey}, "wait": {longWait}})
	})
	r.waitPolling(1)
	r.clock.Advance(time.Second) // the store's clock: the lease is over
	rep := within(t, 10*time.Second, poll, "pullreqsmart after the lease ran out")
	assertRedelivered(t, rep, rid)
}

// TestLongPollClientGone: a client that disconnects ends its poll, and the
// hub forgets it: no goroutine or subscription is left behind.
func TestLongPollClientGone(t *testing.T) {
	r := newTestRelay(t)
	tok, _ := r.login("demo")
	rid := r.push(tok, map[string]any{"simEndpoint": "/x"})
	r.pullReqs("demo", testKey, nil)
	http.DefaultClient.CloseIdleConnections()
	before := goleak.IgnoreCurrent()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 3)
	for _, u := range []string{
		"/api/v1/server/pullreqsmart?net=demo&key=" + testKey + "&wait=" + longWait,
		"/api/v1/client/pullsmart?token=" + tok + "&wait=" + longWait,
		"/api/v1/client/pullsmart?token=" + tok + "&rid=" + rid + "&wait=" + longWait,
	} {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+u, nil)
		require.NoError(t, err)
		go func() {
			resp, err := http.DefaultClient.Do(req)
			if err == nil {
				resp.Body.Close()
			}
			done <- err
		}()
	}
	r.waitPolling(3)
	assert.Equal(t, 2, r.srv.poller.hub.size(), "one net key and one token key")
	cancel()
	for i := 0; i < 3; i++ {
		assert.ErrorIs(t, <-done, context.Canceled)
	}
	r.waitPolling(0)
	assert.Equal(t, 0, r.srv.poller.hub.size(), "the hub holds nothing for gone clients")
	goleak.VerifyNone(t, before) // no handler, timer or connection goroutine left
}

// TestLongPollShutdown: shutting down answers every open poll at once with
// its ordinary "nothing yet" reply.
func TestLongPollShutdown(t *testing.T) {
	r := newTestRelay(t)
	tok, _ := r.login("demo")
	rid := r.push(tok, map[string]any{"simEndpoint": "/x"})
	http.DefaultClient.CloseIdleConnections()
	before := goleak.IgnoreCurrent()
	server := async(func() reply {
		return r.get("/api/v1/server/pullreqsmart", url.Values{"net": {"other"}, "key": {testKey}, "wait": {longWait}})
	})
	client := async(func() reply {
		return r.get("/api/v1/client/pullsmart", url.Values{"token": {tok}, "rid": {rid}, "wait": {longWait}})
	})
	r.waitPolling(2)
	r.srv.shutdown()
	rep := within(t, 5*time.Second, server, "pullreqsmart at shutdown")
	assert.Equal(t, http.StatusOK, rep.Status)
	assert.JSONEq(t, `{"requests":[]}`, string(rep.Body))
	rep = within(t, 5*time.Second, client, "pullsmart at shutdown")
	assert.Equal(t, http.StatusAccepted, rep.Status)
	assert.Equal(t, "queued", rep.str("status"))
	r.waitPolling(0)
	assert.Equal(t, 0, r.srv.poller.hub.size())
	http.DefaultClient.CloseIdleConnections()
	goleak.VerifyNone(t, before)
}

// TestLongPollDoesNotPollStore: a poll with nothing to return looks at the
// store when it starts and when its wait runs out, and never in between: it
// waits on the hub, not on a polling loop.
func TestLongPollDoesNotPollStore(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t)
	tok, _ := r.login("demo")
	rid := r.push(tok, map[string]any{"simEndpoint": "/x"})
	r.pullReqs("demo", testKey, nil) // claim; rid is now delivered, its lease 30 s
	for name, q := range map[string]struct {
		path   string
		params url.Values
		reads  int64
	}{
		// Nothing queued: the poll reads the store once, and learns that no
		// lease runs out within its wait (store.leases).
		"pullreqsmart": {"/api/v1/server/pullreqsmart", url.Values{"net": {"demo"}, "key": {testKey}}, 1},
		// Pushed through this relay and pending: read once, at the end.
		"pullsmart by rid":      {"/api/v1/client/pullsmart", url.Values{"token": {tok}, "rid": {rid}}, 1},
		"pullsmart without rid": {"/api/v1/client/pullsmart", url.Values{"token": {tok}}, 2},
	} {
		t.Run(name, func(t *testing.T) {
			q.params.Set("wait", "1")
			before := r.store.queueReads.Load()
			rep := r.afterWait(time.Second, func() reply { return r.get(q.path, q.params) })
			require.Less(t, rep.Status, 300, string(rep.Body))
			assert.Equal(t, q.reads, r.store.queueReads.Load()-before, "reads in a 1 s poll: at its start and at its end")
		})
	}
	t.Run("pullreqsmart once the lease may have run out", func(t *testing.T) {
		r.advance(30 * time.Second)
		before := r.store.queueReads.Load()
		got := r.pullReqs("demo", testKey, nil)
		require.Len(t, got, 1, "handed out again")
		assert.Equal(t, 2, got[0].Attempt)
		assert.Positive(t, r.store.queueReads.Load()-before, "read, since the lease was due")
	})
}

// TestLongPollTimesOut: with nothing to return, a poll answers after its wait.
func TestLongPollTimesOut(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, _ := r.login("demo")
	rep := r.afterWait(100*time.Millisecond, func() reply {
		return r.get("/api/v1/server/pullreqsmart", url.Values{"net": {"demo"}, "key": {testKey}, "wait": {"0.1"}})
	})
	assert.Equal(t, http.StatusOK, rep.Status)
	assert.JSONEq(t, `{"requests":[]}`, string(rep.Body))
	rep = r.afterWait(100*time.Millisecond, func() reply {
		return r.get("/api/v1/client/pullsmart", url.Values{"token": {tok}, "wait": {"0.1"}})
	})
	assert.Equal(t, http.StatusNoContent, rep.Status)
	r.waitPolling(0)
	assert.Equal(t, 0, r.srv.poller.hub.size())
}

func TestHub(t *testing.T) {
	t.Parallel()
	h := newHub(clockwork.NewRealClock())
	h.notify("nobody") // no waiters: nothing happens, nothing is kept
	assert.Equal(t, 0, h.size())
	a, releaseA := h.subscribe("k")
	b, releaseB := h.subscribe("k")
	other, releaseOther := h.subscribe("other")
	h.notify("k")
	for _, ch := range []<-chan struct{}{a, b} {
		select {
		case <-ch:
		default:
			t.Fatal("a waiter on k was not woken")
		}
	}
	select {
	case <-other:
		t.Fatal("a waiter on another key was woken")
	default:
	}
	again, releaseAgain := h.subscribe("k")
	select {
	case <-again:
		t.Fatal("a new subscription starts unfired")
	default:
	}
	h.notifyAt("k", time.Millisecond)
	select {
	case <-again:
	case <-time.After(5 * time.Second):
		t.Fatal("notifyAt did not fire")
	}
	for _, release := range []func(){releaseA, releaseB, releaseOther, releaseAgain, releaseAgain} {
		release() // twice for one is harmless
	}
	assert.Equal(t, 0, h.size())
}

// TestLongPollLeaseTakenWhileWaiting: a SimServer already waiting when
// another one takes a lease is woken when that lease runs out.
func TestLongPollLeaseTakenWhileWaiting(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	r.pullReqs("demo", testKey, nil) // claim
	poll := async(func() reply {
		return r.get("/api/v1/server/pullreqsmart", url.Values{"net": {"demo"}, "key": {testKey}, "wait": {longWait}})
	})
	r.waitPolling(1)
	// Queue a request behind the waiter's back (no wake-up), and let a
	// second SimServer lease it briefly.
	_, owner, err := r.store.createToken(context.Background(), "demo", "")
	require.NoError(t, err)
	rid, err := r.store.pushRequest(context.Background(), owner, []byte(`{"simEndpoint":"/x"}`), "")
	require.NoError(t, err)
	require.Len(t, r.pullReqs("demo", testKey, url.Values{"lease": {"0.2"}}), 1)
	r.clock.Advance(time.Second) // the store's clock: that lease is over
	rep := within(t, 10*time.Second, poll, "the waiting pullreqsmart after the lease ran out")
	assertRedelivered(t, rep, rid)
}

// assertRedelivered checks a pullreqsmart reply hands out rid, second attempt.
func assertRedelivered(t *testing.T, rep reply, rid string) {
	t.Helper()
	var got struct{ Requests []leased }
	require.NoError(t, json.Unmarshal(rep.Body, &got))
	require.Len(t, got.Requests, 1)
	assert.Equal(t, rid, got.Requests[0].RID)
	assert.Equal(t, 2, got.Requests[0].Attempt)
}

// BenchmarkLongPollStack reports the stack an open long poll holds
// (stack-bytes/poll): it holds its connection's goroutine, and with it
// whatever stack that goroutine grew to. The store's reads (deep in the
// SQLite engine) run aside (tryAside), so that stays the stack of the HTTP
// path: about 12 KiB per open poll (its goroutine and the connection's
// background read), against about 20 KiB with the reads on the handler's
// goroutine. Memory is a benchmark figure, not a test assertion.
func BenchmarkLongPollStack(b *testing.B) {
	r := newTestRelay(b)
	const n = 300
	tokens := make([]string, n)
	for i := range tokens {
		tokens[i], _ = r.login("stack")
	}
	stackInuse := func() int64 {
		for range 3 { // a stack shrinks by half per collection, when mostly unused
			runtime.GC()
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return int64(ms.StackInuse)
	}
	var perPoll int64
	for b.Loop() {
		before := stackInuse()
		var conns []io.Closer
		for _, tok := range tokens {
			conns = append(conns, dialIdlePoll(b, r.URL, tok))
		}
		waitFor(b, 10*time.Second, func() bool { return r.srv.poller.open.Load() == n }, "the polls to wait")
		perPoll = (stackInuse() - before) / n
		for _, c := range conns {
			c.Close()
		}
		waitFor(b, 10*time.Second, func() bool { return r.srv.poller.open.Load() == 0 }, "the polls to end")
	}
	b.ReportMetric(float64(perPoll), "stack-bytes/poll")
}

// TestLongPollTryPanics: a panic in a poll's store read goes on in the
// handler's goroutine, where withRecover answers it with a 500.
func TestLongPollTryPanics(t *testing.T) {
	t.Parallel()
	lp := newPoller(newHub(clockwork.NewRealClock()), time.Minute, clockwork.NewRealClock())
	assert.PanicsWithValue(t, "boom", func() {
		_, _ = lp.poll(context.Background(), pollClient, "k", time.Second, func() (bool, time.Time, error) { panic("boom") })
	})
	assert.Zero(t, lp.open.Load(), "the poll is no longer counted")
	assert.Zero(t, lp.hub.size(), "nor subscribed")
}

// TestOneWaitingLoop: only poller.wait subscribes to the hub and arms a
// timer for a call, on the injected clock; the real-time timers left are
// the store's own (the writer's batching, the checkpointer, PostgreSQL's
// size measure), the janitor's interval, and the pause before a lost
// wake-up connection is made again, none of them a deadline a client sees.
func TestOneWaitingLoop(t *testing.T) {
	t.Parallel()
	allowed := map[string]map[string]bool{
		"hub.subscribe(":   {"longpoll.go": true},
		"clock.NewTimer(":  {"longpoll.go": true},
		"clock.AfterFunc(": {"hub.go": true},
		"time.NewTimer(":   {"writer.go": true, "pgbus.go": true},
		"time.NewTicker(":  {"writer.go": true, "purge.go": true, "postgres.go": true},
		"time.After(":      {},
		"time.AfterFunc(":  {},
		"clock.NewTicker(": {},
	}
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		for call, where := range allowed {
			if strings.Contains(string(src), call) {
				assert.True(t, where[f], "%s calls %s: waits belong in poller.wait", f, call)
			}
		}
	}
}

// TestLeaseTimes: what the store knows of when its leases may run out: a
// net not read yet is read; a lease written lowers the moment; a read
// begun before a lease was written teaches nothing.
func TestLeaseTimes(t *testing.T) {
	t.Parallel()
	var l leaseTimes
	read, _ := l.due("n", 100)
	assert.True(t, read, "not known since the start: read")
	l.learn("n", l.generation("n"), 0)
	read, next := l.due("n", 100)
	assert.False(t, read, "none out")
	assert.True(t, next.IsZero())
	l.leased("n", 500)
	read, next = l.due("n", 100)
	assert.False(t, read)
	assert.Equal(t, int64(500), next.UnixMilli())
	read, _ = l.due("n", 500)
	assert.True(t, read, "due at its end")
	gen := l.generation("n")
	l.leased("n", 300) // while a read that began before it runs
	l.learn("n", gen, 0)
	read, _ = l.due("n", 300)
	assert.True(t, read, "the stale read did not hide the lease")
	read, _ = l.due("other", 0)
	assert.True(t, read, "each net on its own")
}
