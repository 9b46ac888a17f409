package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// pollWith calls pullreqsmart for net with answers in a JSON body and
// decodes the reply's requests and answers.
func (r *testRelay) pollWith(net string, answers any, extra map[string]any) (reply, []leased, []map[string]any) {
	r.t.Helper()
	body := map[string]any{"net": net, "wait": 0, "answers": answers}
	for k, v := range extra {
		body[k] = v
	}
	rep := r.postJSON("/api/v1/server/pullreqsmart", testKey, body)
	var out struct {
		Requests []leased         `json:"requests"`
		Answers  []map[string]any `json:"answers"`
	}
	if rep.Status == http.StatusOK {
		require.NoError(r.t, json.Unmarshal(rep.Body, &out))
	}
	return rep, out.Requests, out.Answers
}

// TestAnswersWithPoll: pullreqsmart posts the answers it carries, each as
// its pushres would, then leases (docs/API.md, "Answering and polling in
// one call").
func TestAnswersWithPoll(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, _ := r.login("batch")
	var rids []string
	for i := range 4 {
		rids = append(rids, r.push(tok, map[string]any{"simEndpoint": "/n", "simBody": i}))
	}
	got := r.pullReqs("batch", testKey, url.Values{"max": {"4"}})
	require.Len(t, got, 4)
	cancelled := r.postJSON("/api/v1/client/cancel", tok, map[string]any{"rid": rids[3]})
	require.Equal(t, http.StatusOK, cancelled.Status, string(cancelled.Body))
	fresh := r.push(tok, map[string]any{"simEndpoint": "/next"})

	answers := []map[string]any{
		{"rid": rids[0], "sim_res": map[string]any{"simBody": "zero"}},
		{"rid": "no-such-rid", "sim_res": map[string]any{"simBody": "x"}},
		{"rid": rids[1], "sim_res": map[string]any{"simStatus": 201, "simBody": "one"}},
		{"rid": rids[3], "sim_res": map[string]any{"simBody": "too late"}},
		{"rid": rids[2], "sim_res": map[string]any{"simBody": map[string]any{"n": 2}}},
	}
	rep, leasedNow, outcomes := r.pollWith("batch", answers, map[string]any{"max": 5})
	require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	require.Len(t, outcomes, 5, "one outcome per answer, in order")
	for i, want := range []struct {
		code   string
		status json.Number
	}{{"", ""}, {"not_found", "404"}, {"", ""}, {"cancelled", "410"}, {"", ""}} {
		assert.Equal(t, answers[i]["rid"], outcomes[i]["rid"])
		if want.code == "" {
			assert.Equal(t, "answered", outcomes[i]["status"], "answer %d", i)
			assert.Nil(t, outcomes[i]["error"])
			continue
		}
		e, _ := outcomes[i]["error"].(map[string]any)
		require.NotNil(t, e, "answer %d: %v", i, outcomes[i])
		assert.Equal(t, want.code, e["code"])
		assert.Equal(t, float64(mustAtoi(t, string(want.status))), e["status"])
		assert.NotEmpty(t, e["message"])
	}
	require.Len(t, leasedNow, 1, "then it leases as a plain pullreqsmart")
	assert.Equal(t, fresh, leasedNow[0].RID)

	for i, want := range []string{`"zero"`, `"one"`, `{"n":2}`} {
		res := r.get("/api/v1/client/pullres", url.Values{"token": {tok}, "rid": {rids[i]}})
		require.Equal(t, http.StatusOK, res.Status, string(res.Body))
		simRes, _ := json.Marshal(res.JSON["sim_res"].(map[string]any)["simBody"])
		assert.JSONEq(t, want, string(simRes))
	}

	// Sent again after a lost reply: the answers were taken.
	_, _, again := r.pollWith("batch", answers[:1], nil)
	require.Len(t, again, 1)
	assert.Equal(t, "already_answered", again[0]["error"].(map[string]any)["code"])

	t.Run("as JSON text in a form body", func(t *testing.T) {
		text, _ := json.Marshal([]map[string]any{{"rid": fresh, "sim_res": map[string]any{"simBody": "by form"}}})
		rep := r.postForm("/api/v1/server/pullreqsmart", url.Values{"net": {"batch"}, "key": {testKey}, "wait": {"0"}, "answers": {string(text)}})
		require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
		assert.Contains(t, string(rep.Body), `"status":"answered"`)
		res := r.get("/api/v1/client/pullres", url.Values{"token": {tok}, "rid": {fresh}})
		assert.Equal(t, "by form", res.JSON["sim_res"].(map[string]any)["simBody"])
	})
}

func mustAtoi(t *testing.T, s string) int {
	t.Helper()
	var n int
	require.NoError(t, json.Unmarshal([]byte(s), &n))
	return n
}

// TestAnswersWithPollBadInput: answers that are not a list of whole
// {"rid", "sim_res"} answers fail the whole call with 400, and none of
// them is written, the good ones beside them included.
func TestAnswersWithPollBadInput(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, _ := r.login("strict")
	rid := r.push(tok, map[string]any{"simEndpoint": "/x"})
	require.Len(t, r.pullReqs("strict", testKey, nil), 1)
	good := map[string]any{"rid": rid, "sim_res": map[string]any{"simBody": "ok"}}
	many := make([]any, maxAnswers+1)
	for i := range many {
		many[i] = good
	}
	for name, answers := range map[string]any{
		"not an array":        map[string]any{"rid": rid},
		"a string":            "[]x",
		"a null item":         []any{good, nil},
		"a number item":       []any{good, 7},
		"no rid":              []any{good, map[string]any{"sim_res": map[string]any{}}},
		"an empty rid":        []any{good, map[string]any{"rid": "", "sim_res": map[string]any{}}},
		"a numeric rid":       []any{good, map[string]any{"rid": 5, "sim_res": map[string]any{}}},
		"no sim_res":          []any{good, map[string]any{"rid": rid}},
		"sim_res not object":  []any{good, map[string]any{"rid": rid, "sim_res": "hi"}},
		"a streamed head":     []any{map[string]any{"rid": rid, "sim_res": map[string]any{}, "more": true}},
		"a bad status":        []any{good, map[string]any{"rid": rid, "sim_res": map[string]any{"simStatus": 99}}},
		"a header with a NUL": []any{good, map[string]any{"rid": rid, "sim_res": map[string]any{"simHeaders": map[string]any{"X": "a\x00b"}}}},
		"over 100":            many,
	} {
		t.Run(name, func(t *testing.T) {
			rep, _, _ := r.pollWith("strict", answers, nil)
			assert.Equal(t, http.StatusBadRequest, rep.Status, string(rep.Body))
			assert.Contains(t, []string{"invalid_answers", "invalid_sim_res"}, rep.errorCode(), string(rep.Body))
			assert.Equal(t, "delivered", r.check(tok, rid)["status"], "nothing written")
		})
	}
	t.Run("on a GET", func(t *testing.T) {
		text, _ := json.Marshal([]any{good})
		rep, _ := r.pullReqsReply("strict", testKey, url.Values{"answers": {string(text)}})
		assert.Equal(t, http.StatusBadRequest, rep.Status)
		assert.Equal(t, "invalid_answers", rep.errorCode())
		assert.Equal(t, "delivered", r.check(tok, rid)["status"], "nothing written")
	})
	t.Run("over the body limit", func(t *testing.T) {
		huge := []any{map[string]any{"rid": rid, "sim_res": map[string]any{"simBody": strings.Repeat("x", 3<<20)}}}
		rep, _, _ := r.pollWith("strict", huge, nil)
		assert.Equal(t, http.StatusRequestEntityTooLarge, rep.Status)
		assert.Equal(t, "delivered", r.check(tok, rid)["status"], "nothing written")
	})
}

// TestAnswersWithPollReachVia: a /via/ caller gets an answer posted with
// the SimServer's next poll, before that poll ends.
func TestAnswersWithPollReachVia(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	r.pullReqs("gw", testKey, nil) // claim the net
	done := make(chan reply, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, r.URL+"/via/gw/hello", nil)
		done <- doRequest(t, req)
	}()
	var got []leased
	waitFor(t, 5e9, func() bool { got = r.pullReqs("gw", testKey, nil); return len(got) == 1 }, "the gateway request leased")
	polled := make(chan reply, 1)
	go func() {
		rep, _, _ := r.pollWith("gw", []any{map[string]any{"rid": got[0].RID, "sim_res": map[string]any{"simBody": "hi there"}}}, map[string]any{"wait": 30})
		polled <- rep
	}()
	rep := within(t, 5*time.Second, done, "the caller's answer")
	assert.Equal(t, http.StatusOK, rep.Status)
	assert.Equal(t, "hi there", string(rep.Body))
	select {
	case <-polled:
		t.Fatal("the poll ended before its wait: the answer came from its start")
	default:
	}
	r.waitAsleep(1)
	r.advance(30 * time.Second)
	end := within(t, 5*time.Second, polled, "the poll's end")
	assert.Contains(t, string(end.Body), `"status":"answered"`)
}

// TestPullsmartAnswerInMemory: a pullsmart waiting for the rid its token
// pushed through this relay reads nothing from the store: it knows the
// request is its own and pending, and gets the answer posted meanwhile
// from memory, by pushres and by a poll's answers alike; the answer is
// marked pulled all the same.
func TestPullsmartAnswerInMemory(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t)
	tok, _ := r.login("mem")
	for _, byPoll := range []bool{false, true} {
		rid := r.push(tok, map[string]any{"simEndpoint": "/x"})
		require.Len(t, r.pullReqs("mem", testKey, nil), 1)
		asleep := r.srv.poller.asleep.Load()
		reads := r.store.queueReads.Load()
		pulled := async(func() reply {
			return r.get("/api/v1/client/pullsmart", url.Values{"token": {tok}, "rid": {rid}, "wait": {"30"}})
		})
		r.waitAsleep(asleep + 1)
		if byPoll {
			// Another request queued: the poll needs no read of its own to find it.
			next := r.push(tok, map[string]any{"simEndpoint": "/next"})
			reads = r.store.queueReads.Load()
			_, got, out := r.pollWith("mem", []any{map[string]any{"rid": rid, "sim_res": map[string]any{"simBody": "polled"}}}, nil)
			require.Equal(t, "answered", out[0]["status"])
			require.Len(t, got, 1)
			require.Equal(t, http.StatusOK, r.answer("mem", testKey, next, map[string]any{}).Status)
		} else {
			require.Equal(t, http.StatusOK, r.answer("mem", testKey, rid, map[string]any{"simBody": "polled"}).Status)
		}
		rep := within(t, 5*time.Second, pulled, "the pullsmart's answer")
		require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
		assert.Equal(t, "polled", rep.JSON["sim_res"].(map[string]any)["simBody"])
		// Pushed through this relay: known as its owner's and pending
		// without a read (freshRequests), and answered from memory.
		assert.Equal(t, reads, r.store.queueReads.Load(), "no read of the store, by poll: %v", byPoll)
		// It was pulled: a pullsmart without rid does not give it again.
		flushStoreWrites(t, r)
		for {
			rep := r.get("/api/v1/client/pullsmart", url.Values{"token": {tok}, "wait": {"0"}})
			if rep.Status == http.StatusNoContent {
				break
			}
			require.Equal(t, http.StatusOK, rep.Status)
			require.NotEqual(t, rid, rep.str("rid"), "pulled once already")
		}
	}
}

// TestAnswersWithPollRefusedForNow: an answer its asker's budget refuses
// (507) is refused alone, with the Retry-After its pushres would have had;
// the answer beside it is taken.
func TestAnswersWithPollRefusedForNow(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, trustLoopback, func(c *config) { c.MaxAddrStore = 1 << 20 })
	tok, _ := r.login("budget")
	push := func(addr string) string {
		return r.pushFrom(addr, tok, `{"sim_req":{"simEndpoint":"/x"}}`).str("rid")
	}
	big := strings.Repeat("a", 400<<10)
	var refused, taken string
	for i := 0; refused == "" && i < 6; i++ {
		small, large := push("198.51.100.1"), push("203.0.113.5")
		require.Len(t, r.pullReqs("budget", testKey, url.Values{"max": {"2"}}), 2)
		rep, _, out := r.pollWith("budget", []any{
			map[string]any{"rid": large, "sim_res": map[string]any{"simBody": big}},
			map[string]any{"rid": small, "sim_res": map[string]any{"simBody": "ok"}},
		}, nil)
		require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
		require.Equal(t, "answered", out[1]["status"], "the other address's answer is taken")
		taken = small
		if e, ok := out[0]["error"].(map[string]any); ok {
			assert.Equal(t, "addr_store_full", e["code"])
			assert.EqualValues(t, http.StatusInsufficientStorage, e["status"])
			assert.EqualValues(t, 60, e["retry_after"], "the Retry-After a pushres would have had")
			refused = large
		}
	}
	require.NotEmpty(t, refused, "the asking address's budget refused an answer")
	assert.Equal(t, "delivered", r.check(tok, refused)["status"], "nothing written for it")
	assert.Equal(t, "answered", r.check(tok, taken)["status"])
}

// TestPullsmartNeverMissesAnAnswer: 16 SimClients push and pullsmart their
// rid over and over while SimServers answer with their polls as fast as
// they can: every answer reaches its pullsmart at once, whichever comes
// first (the lease and answer may beat the pusher's own next step).
func TestPullsmartNeverMissesAnAnswer(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	stop := serveByPoll(t, r, "race", 4)
	defer stop()
	var wg sync.WaitGroup
	for c := range 16 {
		wg.Go(func() {
			tok, _ := r.login("race")
			for i := range 150 {
				rid := r.push(tok, map[string]any{"simEndpoint": "/x"})
				// The relay's clock is fake: a missed answer would wait forever.
				rep := within(t, 5*time.Second, async(func() reply {
					return r.get("/api/v1/client/pullsmart", url.Values{"token": {tok}, "rid": {rid}, "wait": {"25"}})
				}), fmt.Sprintf("client %d's answer %d", c, i))
				if !assert.Equal(t, http.StatusOK, rep.Status, string(rep.Body)) {
					return
				}
			}
		})
	}
	wg.Wait()
}
