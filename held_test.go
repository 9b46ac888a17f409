package main

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// viaCall sends a synchronous GET /via/NET/PATH and returns its reply when
// it comes.
func (r *testRelay) viaCall(net, path string) <-chan reply {
	return async(func() reply {
		req, _ := http.NewRequest(http.MethodGet, r.URL+"/via/"+net+path, nil)
		return doRequest(r.t, req)
	})
}

// leaseHeld leases net's one waiting request for lease seconds, waiting
// until the gateway has it held.
func (r *testRelay) leaseHeld(net, lease string) leased {
	r.t.Helper()
	var got []leased
	waitFor(r.t, 5*time.Second, func() bool {
		got = r.pullReqs(net, testKey, url.Values{"lease": {lease}})
		return len(got) == 1
	}, "the gateway request leased")
	return got[0]
}

// countInserts counts every row inserted into requests from now on, even
// ones deleted since: a trigger in the store file itself.
func countInserts(t *testing.T, r *testRelay) func() int {
	t.Helper()
	flushStoreWrites(t, r)
	trigger := `CREATE TRIGGER IF NOT EXISTS test_count_inserts AFTER INSERT ON requests BEGIN INSERT INTO test_inserts VALUES (new.rid); END`
	if testPostgresURL() != "" {
		trigger = `CREATE OR REPLACE FUNCTION test_count_inserts() RETURNS trigger LANGUAGE plpgsql AS $$
			BEGIN INSERT INTO test_inserts VALUES (NEW.rid); RETURN NEW; END $$;
		CREATE OR REPLACE TRIGGER test_count_inserts AFTER INSERT ON requests FOR EACH ROW EXECUTE FUNCTION test_count_inserts()`
	}
	_, err := r.store.w.Exec(`CREATE TABLE IF NOT EXISTS test_inserts (rid TEXT); ` + trigger)
	require.NoError(t, err)
	return func() int {
		flushStoreWrites(t, r)
		return r.count("test_inserts")
	}
}

// TestHeldGatewayRequests: a synchronous /via/ request is held in memory
// while its caller waits: leased and answered with nothing written, by
// pushres and by an answer posted with a poll.
func TestHeldGatewayRequests(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t)
	r.pullReqs("mem", testKey, nil) // claim the net
	inserts := countInserts(t, r)

	caller := r.viaCall("mem", "/one?x=1")
	waitFor(t, 5*time.Second, func() bool { return r.scrape()["c2cvia_gateway_held_requests"] == 1 }, "the request held, in the metrics")
	reads := r.store.queueReads.Load()
	l := r.leaseHeld("mem", "30")
	assert.Equal(t, reads, r.store.queueReads.Load(), "a poll that finds held requests reads nothing from the store")
	assert.Equal(t, "via", l.From)
	assert.Equal(t, 1, l.Attempt)
	assert.Contains(t, string(l.SimReq), `"simEndpoint":"/one"`)
	require.Equal(t, http.StatusOK, r.answer("mem", testKey, l.RID, map[string]any{"simBody": "by pushres"}).Status)
	rep := within(t, 5*time.Second, caller, "the caller's answer")
	assert.Equal(t, "by pushres", string(rep.Body))

	caller = r.viaCall("mem", "/two")
	l = r.leaseHeld("mem", "30")
	_, _, outcomes := r.pollWith("mem", []any{map[string]any{"rid": l.RID, "sim_res": map[string]any{"simStatus": 201, "simBody": "by poll"}}}, nil)
	require.Len(t, outcomes, 1)
	assert.Equal(t, "answered", outcomes[0]["status"])
	rep = within(t, 5*time.Second, caller, "the caller's answer")
	assert.Equal(t, http.StatusCreated, rep.Status)
	assert.Equal(t, "by poll", string(rep.Body))

	assert.Zero(t, inserts(), "nothing was stored")
	assert.Zero(t, r.scrape()["c2cvia_gateway_held_requests"])

	// An answer again, or to a rid nobody holds: as the store refuses them.
	assert.Equal(t, "already_answered", r.answer("mem", testKey, l.RID, map[string]any{"simBody": "again"}).errorCode())
	assert.Equal(t, "not_found", r.answer("other", testKey, l.RID, map[string]any{"simBody": "other net"}).errorCode())
}

// TestHeldLeases: a held request's lease works as a stored one's: it runs
// out and the request is handed out again with attempt counted up, extend
// keeps it, and after --max-attempts its caller gets 410 failed.
func TestHeldLeases(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t, func(c *config) { c.MaxAttempts, c.ViaTimeout = 3, time.Hour })
	r.pullReqs("lease", testKey, nil)
	inserts := countInserts(t, r)

	caller := r.viaCall("lease", "/slow")
	first := r.leaseHeld("lease", "10")
	assert.Empty(t, r.pullReqs("lease", testKey, nil), "leased: nobody else gets it")
	ext := r.postJSON("/api/v1/server/extend", testKey, map[string]any{"net": "lease", "rid": first.RID, "lease": 20})
	require.Equal(t, http.StatusOK, ext.Status, string(ext.Body))
	r.advance(15 * time.Second)
	assert.Empty(t, r.pullReqs("lease", testKey, nil), "extended past its first lease")
	r.advance(6 * time.Second)
	second := r.pullReqs("lease", testKey, url.Values{"lease": {"10"}})
	require.Len(t, second, 1, "its lease ran out: handed out again")
	assert.Equal(t, first.RID, second[0].RID)
	assert.Equal(t, 2, second[0].Attempt)

	r.advance(11 * time.Second)
	third := r.pullReqs("lease", testKey, url.Values{"lease": {"10"}})
	require.Len(t, third, 1)
	assert.Equal(t, 3, third[0].Attempt)
	r.advance(11 * time.Second) // the last lease runs out
	rep := within(t, 5*time.Second, caller, "the caller, once the last lease ran out")
	assert.Equal(t, http.StatusGone, rep.Status)
	assert.Equal(t, "failed", rep.errorCode())
	assert.Equal(t, "failed", r.answer("lease", testKey, first.RID, map[string]any{"simBody": "late"}).errorCode())
	assert.Zero(t, inserts(), "nothing was stored")
}

// TestHeldUntilTheWaitEnds: a held request whose caller got 504 is the
// store's from then on, as it stood: queued, or delivered with its
// attempt and lease, and its SimServer's answer is taken there.
func TestHeldUntilTheWaitEnds(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t, func(c *config) { c.ViaTimeout = 10 * time.Second })
	r.pullReqs("late", testKey, nil)

	t.Run("delivered", func(t *testing.T) {
		asleep := r.srv.poller.asleep.Load()
		caller := r.viaCall("late", "/leased")
		l := r.leaseHeld("late", "60")
		r.waitAsleep(asleep + 1)
		r.advance(10 * time.Second)
		rep := within(t, 5*time.Second, caller, "the 504")
		assert.Equal(t, http.StatusGatewayTimeout, rep.Status)
		var status string
		var attempt int
		require.NoError(t, r.store.r.QueryRow(`SELECT status, attempt FROM requests WHERE rid = ?`, l.RID).Scan(&status, &attempt))
		assert.Equal(t, "delivered", status)
		assert.Equal(t, 1, attempt)
		assert.Empty(t, r.pullReqs("late", testKey, nil), "still leased, in the store")
		require.Equal(t, http.StatusOK, r.answer("late", testKey, l.RID, map[string]any{"simBody": "late"}).Status)
		require.NoError(t, r.store.r.QueryRow(`SELECT status FROM requests WHERE rid = ?`, l.RID).Scan(&status))
		assert.Equal(t, "answered", status)
		assertCountsExact(t, r, "a held request stored as delivered")
	})
	t.Run("queued", func(t *testing.T) {
		asleep := r.srv.poller.asleep.Load()
		caller := r.viaCall("late", "/queued")
		r.waitAsleep(asleep + 1)
		r.advance(10 * time.Second)
		assert.Equal(t, http.StatusGatewayTimeout, within(t, 5*time.Second, caller, "the 504").Status)
		got := r.pullReqs("late", testKey, nil)
		require.Len(t, got, 1, "queued in the store for its SimServer")
		assert.Equal(t, 1, got[0].Attempt)
		assertCountsExact(t, r, "a held request stored as queued")
		assertUsageExact(t, r)
	})
}

// TestHeldQueueQuota: held requests count in the gateway's share of a
// net's queue (--max-queue) with the stored ones, and in their caller's
// share of it (--via-addr-share).
func TestHeldQueueQuota(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t, trustLoopback, func(c *config) { c.MaxQueue, c.ViaAddrShare, c.ViaTimeout = 4, 0.5, time.Hour })
	a, b := "203.0.113.7", "198.51.100.9"
	held := func(addr string) <-chan reply {
		return async(func() reply { return r.viaFrom(addr, "q", "", "") })
	}
	var waiting []<-chan reply
	waiting = append(waiting, held(a), held(a))
	waitFor(t, 5*time.Second, func() bool { return r.srv.held.held.Load() == 2 }, "two held")
	assertLimited(t, r.viaFrom(a, "q", "", ""), "queue_full", "1") // a's half of 4
	require.Equal(t, http.StatusAccepted, r.viaFrom(b, "q", "", "respond-async").Status, "another address, stored")
	waiting = append(waiting, held(b))
	waitFor(t, 5*time.Second, func() bool { return r.srv.held.held.Load() == 3 }, "three held")
	assertLimited(t, r.viaFrom("192.0.2.1", "q", "", ""), "queue_full", "1") // 3 held + 1 stored
	assert.Len(t, r.pullReqs("q", testKey, url.Values{"max": {"10"}}), 4, "all four handed out, held and stored")
	r.advance(time.Hour) // past their TTL: their callers are told so
	for _, w := range waiting {
		assert.Equal(t, "expired", within(t, 5*time.Second, w, "the caller's end").errorCode())
	}
}

// TestHeldStreamedAnswer: a held request whose SimServer begins a streamed
// answer goes to the store first, and its caller reads the stream on.
func TestHeldStreamedAnswer(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t)
	r.pullReqs("sse", testKey, nil)
	caller := r.viaCall("sse", "/events")
	l := r.leaseHeld("sse", "30")
	require.Equal(t, http.StatusOK, r.head("sse", l.RID, map[string]any{"Content-Type": "text/plain"}, "one,").Status)
	require.Equal(t, http.StatusOK, r.part("sse", l.RID, 4, []byte("two"), true).Status)
	rep := within(t, 5*time.Second, caller, "the streamed answer")
	assert.Equal(t, http.StatusOK, rep.Status)
	assert.Equal(t, "one,two", string(rep.Body))
	assert.True(t, strings.HasPrefix(rep.Header.Get("Content-Type"), "text/plain"))
}
