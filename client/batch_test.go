// Answers that go with Serve's polls (docs/API.md, "Answering and polling
// in one call"): quick answers ride the next poll instead of a pushres
// each, one ready while a poll waits goes at once on its own, and neither
// a lost reply nor one answer's refusal loses or doubles an answer.

package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/c2cvia/c2cvia/client"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// getVia GETs path of net through the relay's gateway and returns the
// body, or an error unless it is 200; ctx bounds it.
func getVia(ctx context.Context, net, path string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, relayURL+"/via/"+net+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	return string(b), err
}

// echoPath answers "answer for PATH".
var echoPath = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	_, _ = io.WriteString(w, "answer for "+r.URL.Path)
})

// TestServeAnswersWithPolls: one caller after another asks a quick
// handler; each answer goes with the poll that asks for the next request,
// not by a pushres of its own, and each caller gets its own answer. With
// one slot the poll waits for the handler; with more, the linger does,
// and it ends when the handler is done, not when it runs out (a minute
// here would fail the test).
func TestServeAnswersWithPolls(t *testing.T) {
	t.Parallel()
	const n = 20
	for _, tc := range []struct {
		name       string
		opts       []client.Option
		maxPushRes int
	}{
		{"one slot", []client.Option{client.WithConcurrency(1)}, 0},
		{"four slots and a linger of a minute", []client.Option{client.WithConcurrency(4), client.WithLinger(time.Minute)}, 0},
		// 2 ms is far more than a quick handler takes, but a loaded
		// machine may now and then be slower.
		{"the defaults", nil, n / 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			net := testNet(t)
			rec := newRecorder(t)
			errs := newErrorLog()
			srv := serve(t, relayURL, net, testKey, echoPath, append(tc.opts, rec.option(), errs.option())...)
			for i := range n {
				ctx, cancel := context.WithTimeout(context.Background(), within)
				body, err := getVia(ctx, net, fmt.Sprintf("/n/%d", i))
				cancel()
				require.NoError(t, err)
				assert.Equal(t, fmt.Sprintf("answer for /n/%d", i), body)
			}
			// Each poll that carried an answer came back with the next
			// request, but the last one, which still waits.
			pushres := rec.count(pathPushRes)
			assert.LessOrEqual(t, pushres, tc.maxPushRes, "answers posted by pushres")
			carried := 0
			for _, b := range rec.batches(t) {
				carried += len(b.rids)
				for _, rid := range b.rids {
					assert.Equal(t, "answered", b.outcomes[rid], rid)
				}
			}
			assert.GreaterOrEqual(t, carried, n-1-pushres, "every other answer went with a poll")
			assert.ErrorIs(t, srv.stop(), context.Canceled)
			errs.empty(t)
		})
	}
}

// TestServeAnswerWhilePolling: a handler that finishes while Serve's
// poll waits at the relay gets its answer to its caller at once, by a
// pushres of its own: well within the poll's 25 s wait, and while that
// same poll still waits.
func TestServeAnswerWhilePolling(t *testing.T) {
	t.Parallel()
	net := testNet(t)
	rec := newRecorder(t)
	errs := newErrorLog()
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-release
		_, _ = io.WriteString(w, "done")
	})
	srv := serve(t, relayURL, net, testKey, slow, client.WithConcurrency(2), rec.option(), errs.option())
	unblock := sync.OnceFunc(func() { close(release) })
	t.Cleanup(unblock) // before Serve's stop, should the test fail first

	got := make(chan string, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		body, err := getVia(ctx, net, "/slow")
		if err != nil {
			body = err.Error()
		}
		got <- body
	}()
	recv(t, entered, "the handler to start")
	// The poll that brought the request has ended; the next one, for the
	// free slot, waits at the relay.
	rec.await(t, "the next poll to wait", func(calls []recorded, open map[string]int) bool {
		return open[pathPullReqSmart] == 1
	})
	polls := rec.count(pathPullReqSmart)

	unblock()
	select {
	case body := <-got:
		assert.Equal(t, "done", body)
	case <-time.After(5 * time.Second):
		t.Fatal("the answer waited: its caller had nothing 5 s after the handler returned")
	}
	rec.mu.Lock()
	open := rec.open[pathPullReqSmart]
	rec.mu.Unlock()
	assert.Equal(t, 1, open, "the poll still waits")
	assert.Equal(t, polls, rec.count(pathPullReqSmart), "no poll came back meanwhile")
	// The caller may have had the answer before the pushres its reply.
	rec.await(t, "the answer by pushres", func(calls []recorded, _ map[string]int) bool {
		return len(calls) > 0 && calls[len(calls)-1].path == pathPushRes
	})
	assert.Equal(t, 1, rec.count(pathPushRes), "the answer went by pushres")
	assert.ErrorIs(t, srv.stop(), context.Canceled)
	errs.empty(t)
}

// TestServeLostPollReply: the reply to the poll that carried an answer is
// lost after the relay posted it. Serve sends the poll again with the same
// answer, the relay says already_answered, and that counts as posted:
// the handler ran once, its caller has the answer once, no pushres went
// out and nothing but the lost poll is reported.
func TestServeLostPollReply(t *testing.T) {
	t.Parallel()
	net := testNet(t)
	rec := newRecorder(t)
	lost := false
	rec.lose = func(path string, body []byte) bool {
		if path == pathPullReqSmart && carriesAnswers(body) && !lost {
			lost = true
			return true
		}
		return false
	}
	errs := newErrorLog()
	var handled atomic.Int64
	once := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handled.Add(1)
		_, _ = io.WriteString(w, "once")
	})
	srv := serve(t, relayURL, net, testKey, once, client.WithConcurrency(1), rec.option(), errs.option())
	token, _ := rawLogin(t, net)
	rid := rawPush(t, token, `{"simEndpoint":"/","simMethod":"GET"}`)
	assert.Contains(t, string(rawResult(t, token, rid)), `"simBody":"once"`)

	rec.await(t, "the poll sent again", func(calls []recorded, _ map[string]int) bool {
		n := 0
		for _, c := range calls {
			if c.path == pathPullReqSmart && carriesAnswers(c.body) {
				n++
			}
		}
		return n >= 2
	})
	batches := rec.batches(t)
	require.GreaterOrEqual(t, len(batches), 2)
	assert.True(t, batches[0].lost)
	assert.Equal(t, []string{rid}, batches[0].rids)
	assert.Equal(t, []string{rid}, batches[1].rids, "the same answer again")
	assert.Equal(t, "already_answered", batches[1].outcomes[rid])
	assert.Equal(t, 0, rec.count(pathPushRes))

	assert.ErrorIs(t, srv.stop(), context.Canceled)
	assert.Equal(t, int64(1), handled.Load(), "handled once")
	status, attempt := ridState(t, token, rid)
	assert.Equal(t, "answered", status)
	assert.Equal(t, 1, attempt)
	assert.ErrorIs(t, errs.next(t), errLost, "the lost poll is reported")
	errs.empty(t)
}

// TestServeAnswerRefusedInBatch: of two answers that go with one poll, one
// is to a request its caller has withdrawn meanwhile (the watch that would
// tell Serve so is held back). The relay refuses that one (410 cancelled),
// which is no news, and posts the other; Serve serves on.
func TestServeAnswerRefusedInBatch(t *testing.T) {
	t.Parallel()
	net := testNet(t)
	f := newFront(t)
	t.Cleanup(f.holdReplies(pathWatch))
	rec := newRecorder(t)
	errs := newErrorLog()
	token, _ := rawLogin(t, net)
	gone := rawPush(t, token, `{"simEndpoint":"/gone","simMethod":"GET"}`)
	kept := rawPush(t, token, `{"simEndpoint":"/kept","simMethod":"GET"}`)

	entered := make(chan string, 2)
	gate := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/next" {
			entered <- r.URL.Path
			<-gate
		}
		_, _ = io.WriteString(w, "answer for "+r.URL.Path)
	})
	// Both requests come with the first poll; the linger has their answers
	// go with the next one together.
	srv := serve(t, f.URL, net, testKey, h, client.WithConcurrency(2), client.WithLinger(time.Minute),
		rec.option(), errs.option())
	open := sync.OnceFunc(func() { close(gate) })
	t.Cleanup(open)
	recv(t, entered, "the first handler")
	recv(t, entered, "the second handler")
	status, reply := call(t, pathCancel, token, map[string]string{"rid": gone})
	require.Equal(t, http.StatusOK, status, "%s", reply["error"])
	open()

	assert.Contains(t, string(rawResult(t, token, kept)), `"simBody":"answer for /kept"`)
	rec.await(t, "the poll's reply", func(calls []recorded, _ map[string]int) bool {
		for _, c := range calls {
			if carriesAnswers(c.body) {
				return true
			}
		}
		return false
	})
	batches := rec.batches(t)
	require.Len(t, batches, 1)
	assert.ElementsMatch(t, []string{gone, kept}, batches[0].rids, "one poll carried both")
	assert.Equal(t, map[string]string{gone: "cancelled", kept: "answered"}, batches[0].outcomes)
	assert.Equal(t, 0, rec.count(pathPushRes))
	st, _ := ridState(t, token, gone)
	assert.Equal(t, "cancelled", st)

	next := rawPush(t, token, `{"simEndpoint":"/next","simMethod":"GET"}`)
	assert.Contains(t, string(rawResult(t, token, next)), `"simBody":"answer for /next"`)
	assert.True(t, srv.running())
	errs.empty(t)
}

// TestServeAnswerRefusedForNow: the relay refuses an answer that came
// with a poll for now (here the relay never gets it, and the reply says
// 507 store_full, retry_after 1 s); Serve posts it again by pushres after
// a backoff, no sooner than that second, as a pushres refused so would
// be, and its caller gets it.
func TestServeAnswerRefusedForNow(t *testing.T) {
	t.Parallel()
	net := testNet(t)
	rec := newRecorder(t)
	var refused string // the rid whose answer the relay did not get
	inject := false    // the next poll's reply says it was refused
	rec.rewrite = func(path string, body []byte) []byte {
		var m map[string]json.RawMessage
		if refused != "" || path != pathPullReqSmart || !carriesAnswers(body) || json.Unmarshal(body, &m) != nil {
			return body
		}
		var answers []struct {
			RID string `json:"rid"`
		}
		if json.Unmarshal(m["answers"], &answers) != nil || len(answers) != 1 {
			return body
		}
		refused, inject = answers[0].RID, true
		delete(m, "answers")
		b, _ := json.Marshal(m)
		return b
	}
	rec.answer = func(path string, body, reply []byte) []byte {
		if path != pathPullReqSmart || !inject {
			return reply
		}
		inject = false
		var m map[string]json.RawMessage
		if json.Unmarshal(reply, &m) != nil {
			return reply
		}
		m["answers"] = json.RawMessage(`[{"rid":"` + refused + `","error":{"code":"store_full","message":"injected by the test","status":507,"retry_after":1}}]`)
		b, _ := json.Marshal(m)
		return b
	}
	errs := newErrorLog()
	srv := serve(t, relayURL, net, testKey, echoPath, client.WithConcurrency(1), rec.option(), errs.option())
	token, _ := rawLogin(t, net)
	rid := rawPush(t, token, `{"simEndpoint":"/full","simMethod":"GET"}`)
	assert.Contains(t, string(rawResult(t, token, rid)), `"simBody":"answer for /full"`)
	rec.mu.Lock()
	assert.Equal(t, rid, refused)
	rec.mu.Unlock()
	rec.await(t, "the pushres's reply", func(calls []recorded, _ map[string]int) bool {
		for _, c := range calls {
			if c.path == pathPushRes {
				return true
			}
		}
		return false
	})
	assert.Equal(t, 1, rec.count(pathPushRes), "posted again once")
	var refusal recorded // the reply that said 507
	for _, c := range rec.of(pathPullReqSmart) {
		if bytes.Contains(c.reply, []byte("store_full")) {
			refusal = c
		}
	}
	require.False(t, refusal.end.IsZero())
	again := rec.of(pathPushRes)[0]
	assert.GreaterOrEqual(t, again.began.Sub(refusal.end), time.Second, "not before its retry_after of 1 s")
	status, attempt := ridState(t, token, rid)
	assert.Equal(t, "answered", status)
	assert.Equal(t, 1, attempt)
	assert.ErrorIs(t, srv.stop(), context.Canceled)
	errs.empty(t)
}

// TestServeLeaseWhileAnswerInPoll: while the poll that carried an answer
// waits at the relay, the answer's lease is not renewed (WithLease half a
// second): as far as Serve knows the request is answered, and the relay
// refuses to renew an answered one (409, 404 once it has forgotten a
// /via/ request). No extend goes out, nothing is reported.
func TestServeLeaseWhileAnswerInPoll(t *testing.T) {
	t.Parallel()
	const lease = 500 * time.Millisecond
	net := testNet(t)
	rec := newRecorder(t)
	errs := newErrorLog()
	srv := serve(t, relayURL, net, testKey, echoPath, client.WithConcurrency(1), client.WithLease(lease),
		rec.option(), errs.option())
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	// The first answer's poll does not wait (TestServeRelayWithoutAnswers);
	// the second's does.
	for _, path := range []string{"/a", "/b"} {
		body, err := getVia(ctx, net, path)
		require.NoError(t, err)
		assert.Equal(t, "answer for "+path, body)
	}
	// Nothing is to happen: the quiet period is three leases.
	quiet := time.NewTimer(3 * lease)
	defer quiet.Stop()
	<-quiet.C
	rec.mu.Lock()
	open := rec.open[pathPullReqSmart]
	rec.mu.Unlock()
	assert.Equal(t, 1, open, "the poll with the answer still waits")
	assert.Equal(t, 0, rec.count(pathExtend))
	assert.ErrorIs(t, srv.stop(), context.Canceled)
	errs.empty(t)
}

// TestServeStopWithAnswersInPoll: Serve stops while the poll that carried
// an answer waits at the relay. The relay posted it, but Serve cannot
// know: the handler posts it again by pushres and is told it was answered
// before (409; 404 for a /via/ request held in memory once the relay has
// forgotten it, at what would have been its lease's end), which counts as
// posted; nothing is reported.
func TestServeStopWithAnswersInPoll(t *testing.T) {
	t.Parallel()
	net := testNet(t)
	rec := newRecorder(t)
	errs := newErrorLog()
	srv := serve(t, relayURL, net, testKey, echoPath, client.WithConcurrency(1), rec.option(), errs.option())
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	// The first answer's poll does not wait (TestServeRelayWithoutAnswers);
	// the second's does.
	for _, path := range []string{"/a", "/b"} {
		body, err := getVia(ctx, net, path)
		require.NoError(t, err)
		assert.Equal(t, "answer for "+path, body)
	}
	// The poll that carried the second answer still waits.
	rec.await(t, "the poll with the second answer", func(_ []recorded, open map[string]int) bool {
		return open[pathPullReqSmart] == 1
	})
	assert.ErrorIs(t, srv.stop(), context.Canceled)
	require.Equal(t, 1, rec.count(pathPushRes))
	rec.mu.Lock()
	var again recorded
	for _, c := range rec.calls {
		if c.path == pathPushRes {
			again = c
		}
	}
	rec.mu.Unlock()
	assert.Contains(t, []int{http.StatusNotFound, http.StatusConflict}, again.status, "%s", again.reply)
	errs.empty(t)
}

// TestServeRelayWithoutAnswers: a relay that does not know answers ignores
// them (here the relay never sees them) and its reply names none. Serve
// posts those answers by pushres at once, as every later one; the poll
// that carried them did not wait.
func TestServeRelayWithoutAnswers(t *testing.T) {
	t.Parallel()
	net := testNet(t)
	rec := newRecorder(t)
	rec.rewrite = func(path string, body []byte) []byte {
		if path != pathPullReqSmart {
			return body
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(body, &m) != nil {
			return body
		}
		delete(m, "answers")
		b, _ := json.Marshal(m)
		return b
	}
	errs := newErrorLog()
	srv := serve(t, relayURL, net, testKey, echoPath, client.WithConcurrency(1), rec.option(), errs.option())
	for i := range 3 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second) // not the 25 s poll
		body, err := getVia(ctx, net, fmt.Sprintf("/n/%d", i))
		cancel()
		require.NoError(t, err)
		assert.Equal(t, fmt.Sprintf("answer for /n/%d", i), body)
	}
	assert.ErrorIs(t, srv.stop(), context.Canceled)
	assert.Equal(t, 3, rec.count(pathPushRes))
	errs.empty(t)
}

// TestServeBatchTooLarge: a relay whose --max-body is under what one poll
// carries refuses it (413) and posts none of it; the answers go by
// pushres, and later polls carry fewer answers, but still carry them.
func TestServeBatchTooLarge(t *testing.T) {
	t.Parallel()
	r := newRelayProcess(t, "--max-body", "64KiB")
	net := testNet(t)
	big := strings.Repeat("b", 24<<10) // 8 of them: 192 KiB
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.URL.Path+big)
	})
	rec := newRecorder(t)
	errs := newErrorLog()
	token := func() string {
		status, reply := rawCall(t, r.url, pathLogin, "", map[string]string{"net": net})
		require.Equal(t, http.StatusOK, status, "%s", reply)
		var out struct{ Token string }
		require.NoError(t, json.Unmarshal(reply, &out))
		return out.Token
	}()
	push := func(path string) string {
		status, reply := rawCall(t, r.url, pathPushReq, token, map[string]any{"sim_req": map[string]string{"simEndpoint": path, "simMethod": "GET"}})
		require.Equal(t, http.StatusCreated, status, "%s", reply)
		var out struct{ RID string }
		require.NoError(t, json.Unmarshal(reply, &out))
		return out.RID
	}
	result := func(rid string) string {
		status, reply := rawCall(t, r.url, pathPullSmart, token, map[string]any{"rid": rid, "wait": 10})
		require.Equal(t, http.StatusOK, status, "%s", reply)
		var out struct {
			SimRes struct {
				SimBody string `json:"simBody"`
			} `json:"sim_res"`
		}
		require.NoError(t, json.Unmarshal(reply, &out))
		return out.SimRes.SimBody
	}
	// Eight at once: the first poll brings them all, the next carries
	// their answers.
	var rids []string
	for i := range 8 {
		rids = append(rids, push(fmt.Sprintf("/%d", i)))
	}
	srv := serve(t, r.url, net, testKey, h, client.WithConcurrency(8), client.WithLinger(time.Minute), rec.option(), errs.option())
	for i, rid := range rids {
		assert.True(t, result(rid) == fmt.Sprintf("/%d", i)+big, "answer %d whole", i)
	}
	// One after another: each goes with a poll.
	for i := range 3 {
		path := fmt.Sprintf("/later/%d", i)
		assert.True(t, result(push(path)) == path+big, "%s whole", path)
	}
	assert.ErrorIs(t, srv.stop(), context.Canceled)
	batches := rec.batches(t)
	require.NotEmpty(t, batches)
	assert.Equal(t, http.StatusRequestEntityTooLarge, batches[0].status)
	assert.Len(t, batches[0].rids, 8)
	answered := 0
	for _, b := range batches[1:] {
		if b.status == http.StatusOK {
			answered += len(b.rids)
		}
	}
	assert.GreaterOrEqual(t, answered, 2, "later polls still carry answers")
	errs.empty(t)
}

// rawCall POSTs body as JSON to path of the relay at base and returns the
// status and the raw reply.
func rawCall(t testing.TB, base, path, bearer string, body any) (int, []byte) {
	t.Helper()
	b, err := json.Marshal(body)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), within+10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	reply, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, reply
}
