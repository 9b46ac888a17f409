// The relay as a child process killed with SIGKILL: nothing acknowledged is
// lost, requests and peer messages alike; and the helpers that drive such
// a child over HTTP.

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tryCall sends one request like doRequest, but reports a failure instead of
// failing the test: for goroutines, and for a relay that may be dead.
func tryCall(ctx context.Context, c *http.Client, method, u, bearer string, body any) (reply, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return reply{}, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return reply{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.Do(req)
	if err != nil {
		return reply{}, err
	}
	return readReply(resp)
}

// killUnderTraffic waits until enough is closed, kills the relay while the
// traffic still runs, then ends the traffic (cancel) and waits for it (wg).
// If enough is not closed within 30s, it ends the traffic and fails the test
// with progress() and the relay's log.
func killUnderTraffic(t *testing.T, p *relayProcess, enough <-chan struct{}, cancel func(), wg *sync.WaitGroup, progress func() string) {
	t.Helper()
	select {
	case <-enough:
	case <-time.After(30 * time.Second):
		cancel()
		wg.Wait()
		t.Fatalf("traffic did not get going within 30s: %s\n%s", progress(), p.stderr)
	}
	p.kill(t)
	cancel()
	wg.Wait()
}

// pollResult is how a long poll started by startLongPoll ended.
type pollResult struct {
	rep reply
	err error
}

// startLongPoll POSTs body as JSON to u in a goroutine and returns once the
// relay's handler is running: the request carries "Expect: 100-continue", and
// the relay sends "100 Continue" only when the handler reads the body. So the
// poll is past the listener and inside the relay when this returns, and a
// signal sent now cannot race with its connection being accepted.
func startLongPoll(t *testing.T, u, bearer string, body any) <-chan pollResult {
	t.Helper()
	b, err := json.Marshal(body)
	require.NoError(t, err)
	tr := &http.Transport{ExpectContinueTimeout: time.Minute}
	t.Cleanup(tr.CloseIdleConnections)
	inHandler := make(chan struct{})
	var once sync.Once
	ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
		Got100Continue: func() { once.Do(func() { close(inHandler) }) },
	})
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Expect", "100-continue")
	req.Header.Set("Authorization", "Bearer "+bearer)
	done := make(chan pollResult, 1)
	go func() {
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			done <- pollResult{err: err}
			return
		}
		rep, err := readReply(resp)
		done <- pollResult{rep, err}
	}()
	select {
	case <-inHandler:
	case res := <-done:
		t.Fatalf("long poll %s ended before it was waiting: %d %s %v", u, res.rep.Status, res.rep.Body, res.err)
	case <-time.After(30 * time.Second):
		t.Fatalf("long poll %s: the relay did not start reading it within 30s", u)
	}
	return done
}

// awaitPoll returns a long poll's result, failing after within.
func awaitPoll(t *testing.T, name string, ch <-chan pollResult, within time.Duration) reply {
	t.Helper()
	select {
	case res := <-ch:
		require.NoError(t, res.err, "%s: no reply", name)
		return res.rep
	case <-time.After(within):
		t.Fatalf("%s: not answered within %s", name, within)
		return reply{}
	}
}

// assertWALClosed asserts that the store at dbPath was closed cleanly: its
// write-ahead log was checkpointed and removed (or at least emptied).
func assertWALClosed(t *testing.T, dbPath string, mayBeEmpty bool) {
	t.Helper()
	if isPostgresURL(dbPath) {
		return // no file: PostgreSQL's own WAL is the server's
	}
	fi, err := os.Stat(dbPath + "-wal")
	if mayBeEmpty && err == nil {
		assert.Zero(t, fi.Size(), "the -wal file is left with data after a clean stop")
		return
	}
	assert.True(t, os.IsNotExist(err), "the -wal file is still there after a clean stop (stat: %v)", err)
}

// assertStoreHolds opens the store file again and checks that the login
// token, the request rid (in status want) and the net's key survived.
func assertStoreHolds(t *testing.T, dbPath, tok, rid, want, net, key string) {
	t.Helper()
	ctx := context.Background()
	st, err := openStore(ctx, dbPath, testStoreOptions(nil))
	require.NoError(t, err)
	defer func() { assert.NoError(t, st.Close()) }()
	tk, err := st.lookupToken(ctx, tok)
	require.NoError(t, err, "the token is lost")
	req, err := st.requestForOwner(ctx, tk, rid)
	require.NoError(t, err, "the request is lost")
	assert.Equal(t, want, req.status)
	if net != "" {
		k, err := st.checkServerKey(ctx, net, key)
		assert.NoError(t, err, "the net's key is lost")
		assert.False(t, k.claim, "the net's claim is lost")
		_, err = st.checkServerKey(ctx, net, "another-key-0123456789")
		assert.ErrorIs(t, err, errWrongKey)
	}
}

// TestCrashLosesNothing kills the relay with SIGKILL in the middle of
// traffic and checks, on a relay restarted on the same file, that nothing it
// acknowledged is lost: queued and delivered requests come out again,
// answered responses can still be pulled, tokens and the net's key still work.
func TestCrashLosesNothing(t *testing.T) {
	t.Parallel()
	dbPath := testDB(t, "relay.db")
	// 1000 attempts: a request leased again and again before the kill is
	// still queued or delivered after it, never failed. No rate limits:
	// the traffic runs as fast as it can.
	args := []string{"--max-attempts", "1000", "--rate-ip", "0", "--rate-token", "0"}
	p := startRelayProcess(t, dbPath, args...)
	rel := &testRelay{t: t, URL: p.URL}

	const net = "crash-net"
	rel.pullReqs(net, testKey, nil) // claims the net: acknowledged by its 200
	toks := make([]string, 3)
	for i := range toks {
		toks[i], _ = rel.login(net)
	}

	type pushed struct{ tok, endpoint string }
	var (
		mu          sync.Mutex
		acked       = map[string]pushed{} // rid -> who pushed it: 201 received
		answered    = map[string]string{} // rid -> sim_res JSON: 200 received
		answerTried = map[string]bool{}   // rid -> a pushres was sent
		left        = map[string]bool{}   // rid -> leased and left unanswered on purpose
		unexpected  []string              // replies that are not what traffic expects
		enough      = make(chan struct{})
		enoughOnce  sync.Once
	)
	// note records progress; the relay is killed once enough of every kind
	// was acknowledged. Called with mu held.
	note := func() {
		if len(acked) >= 30 && len(answered) >= 5 && len(left) >= 3 {
			enoughOnce.Do(func() { close(enough) })
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	base := p.URL
	var wg sync.WaitGroup

	for c, tok := range toks {
		wg.Go(func() {
			var mine []string
			for i := 0; ctx.Err() == nil; i++ {
				if i >= 200 { // plenty pushed: keep reading until the relay dies
					if len(mine) == 0 {
						return
					}
					q := url.Values{"rid": {mine[i%len(mine)]}}
					if _, err := tryCall(ctx, hc, http.MethodGet, base+"/api/v1/client/check?"+q.Encode(), tok, nil); err != nil {
						return
					}
					continue
				}
				endpoint := fmt.Sprintf("/items/%d/%d", c, i)
				rep, err := tryCall(ctx, hc, http.MethodPost, base+"/api/v1/client/pushreq", tok,
					map[string]any{"sim_req": map[string]any{"simEndpoint": endpoint, "simMethod": "PUT", "simBody": map[string]any{"c": c, "i": i}}})
				if err != nil {
					return // the relay is gone (or going): this push may or may not exist
				}
				mu.Lock()
				if rid := rep.str("rid"); rep.Status == http.StatusCreated && rid != "" {
					acked[rid] = pushed{tok, endpoint}
					mine = append(mine, rid)
					note()
				} else {
					unexpected = append(unexpected, fmt.Sprintf("pushreq: %d %s", rep.Status, rep.Body))
				}
				mu.Unlock()
			}
		})
	}

	// The SimServer: leases with a 1 s lease and answers every other request
	// it sees for the first time; the rest stay delivered and come back.
	wg.Go(func() {
		q := url.Values{"net": {net}, "wait": {"1"}, "max": {"4"}, "lease": {"1"}}
		seen := 0
		for ctx.Err() == nil {
			rep, err := tryCall(ctx, hc, http.MethodGet, base+"/api/v1/server/pullreqsmart?"+q.Encode(), testKey, nil)
			if err != nil {
				return
			}
			var out struct {
				Requests []leased `json:"requests"`
			}
			if rep.Status != http.StatusOK || json.Unmarshal(rep.Body, &out) != nil {
				mu.Lock()
				unexpected = append(unexpected, fmt.Sprintf("pullreqsmart: %d %s", rep.Status, rep.Body))
				mu.Unlock()
				return
			}
			for _, l := range out.Requests {
				mu.Lock()
				skip := left[l.RID]
				if !skip && !answerTried[l.RID] {
					seen++
					if seen%2 == 0 {
						left[l.RID] = true
						skip = true
						note()
					}
				}
				if !skip {
					answerTried[l.RID] = true
				}
				mu.Unlock()
				if skip {
					continue
				}
				simRes := map[string]any{"simStatus": 200, "simHeaders": map[string]any{"X-Rid": l.RID}, "simBody": map[string]any{"rid": l.RID, "seen": seen}}
				rep, err := tryCall(ctx, hc, http.MethodPost, base+"/api/v1/server/pushres", testKey,
					map[string]any{"net": net, "rid": l.RID, "sim_res": simRes})
				if err != nil {
					return // in flight at the kill: may or may not be answered
				}
				b, _ := json.Marshal(simRes)
				mu.Lock()
				if rep.Status == http.StatusOK {
					answered[l.RID] = string(b)
					note()
				} else {
					unexpected = append(unexpected, fmt.Sprintf("pushres %s: %d %s", l.RID, rep.Status, rep.Body))
				}
				mu.Unlock()
			}
		}
	})

	killUnderTraffic(t, p, enough, cancel, &wg, func() string {
		return fmt.Sprintf("%d pushed, %d answered, %d left; unexpected %q", len(acked), len(answered), len(left), unexpected)
	})
	// Every acknowledgement is recorded now.
	require.Empty(t, unexpected, "replies from the relay before the kill")
	t.Logf("killed with %d pushes, %d answers, %d left unanswered acknowledged", len(acked), len(answered), len(left))

	p2 := startRelayProcess(t, dbPath, args...)
	rel2 := &testRelay{t: t, URL: p2.URL}

	// The key still owns the net.
	rep, _ := rel2.pullReqsReply(net, "another-key-0123456789", nil)
	assert.Equal(t, http.StatusForbidden, rep.Status, string(rep.Body))
	assert.Equal(t, "wrong_key", rep.errorCode())

	// Every answered response is still there, and pullable by its token.
	for rid, simRes := range answered {
		tok := acked[rid].tok
		require.NotEmpty(t, tok, "answered rid %s was never acknowledged to its client", rid)
		rep := rel2.get("/api/v1/client/check", url.Values{"token": {tok}, "rid": {rid}})
		require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
		assert.Equal(t, statusAnswered, rep.str("status"), "answered rid %s", rid)
		rep = rel2.get("/api/v1/client/pullres", url.Values{"token": {tok}, "rid": {rid}})
		require.Equal(t, http.StatusOK, rep.Status, "pullres %s: %s", rid, rep.Body)
		var got struct {
			RID    string          `json:"rid"`
			SimRes json.RawMessage `json:"sim_res"`
		}
		require.NoError(t, json.Unmarshal(rep.Body, &got))
		assert.Equal(t, rid, got.RID)
		assert.JSONEq(t, simRes, string(got.SimRes), "sim_res of %s", rid)
	}

	// Every acknowledged, unanswered request is queued or delivered (with
	// the tokens still valid: no 401), and a SimServer gets it again.
	want := map[string]string{} // rid -> endpoint, to be handed out
	for rid, pu := range acked {
		if _, ok := answered[rid]; ok {
			continue
		}
		rep := rel2.get("/api/v1/client/check", url.Values{"token": {pu.tok}, "rid": {rid}})
		require.Equal(t, http.StatusOK, rep.Status, "check %s: %s", rid, rep.Body)
		status := rep.str("status")
		if answerTried[rid] && status == statusAnswered {
			continue // its pushres was in flight at the kill and did commit
		}
		if assert.Contains(t, []string{statusQueued, statusDelivered}, status, "acknowledged rid %s", rid) {
			want[rid] = pu.endpoint
		}
	}
	require.NotEmpty(t, want)
	deadline := time.Now().Add(30 * time.Second)
	for len(want) > 0 && time.Now().Before(deadline) {
		// Delivered ones come back when their 1 s lease ends; the long poll
		// wakes then. A long lease now, so none is handed out twice.
		for _, l := range rel2.pullReqs(net, testKey, url.Values{"wait": {"5"}, "max": {"100"}, "lease": {"300"}}) {
			endpoint, ok := want[l.RID]
			if !ok {
				continue // unacknowledged, or handed out already
			}
			var sr struct {
				SimEndpoint string `json:"simEndpoint"`
			}
			require.NoError(t, json.Unmarshal(l.SimReq, &sr))
			assert.Equal(t, endpoint, sr.SimEndpoint, "sim_req of %s", l.RID)
			delete(want, l.RID)
		}
	}
	assert.Empty(t, want, "acknowledged requests never handed out after the restart")

	// Tokens still work for new writes too.
	for _, tok := range toks {
		rel2.push(tok, map[string]any{"simEndpoint": "/after-restart"})
	}
}

// TestCrashKeepsPeerMessages kills the relay with SIGKILL while a peer
// sends unicasts, multicasts and broadcasts, and checks on a restarted relay
// that every acknowledged message is read by its receiver, in order, with
// its data; the subscription survives, and new ids come after the old ones.
func TestCrashKeepsPeerMessages(t *testing.T) {
	t.Parallel()
	dbPath := testDB(t, "relay.db")
	p := startRelayProcess(t, dbPath)
	rel := &testRelay{t: t, URL: p.URL}
	const net = "crash-peers"
	sender, receiver := rel.peerLogin(net), rel.peerLogin(net)
	rel.subscribe(receiver, "news", true)

	var (
		mu       sync.Mutex
		acked    = map[int64]string{} // id -> data JSON: 201 received
		enough   = make(chan struct{})
		once     sync.Once
		failures []string
	)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := 0; ctx.Err() == nil; i++ {
			data := fmt.Sprintf(`{"i":%d,"big":12345678901234567890}`, i)
			path, body := "/api/v1/peer/send", map[string]any{"to": receiver.id, "data": json.RawMessage(data)}
			switch i % 3 {
			case 1:
				path, body = "/api/v1/peer/publish", map[string]any{"topic": "news", "data": json.RawMessage(data)}
			case 2:
				path, body = "/api/v1/peer/broadcast", map[string]any{"data": json.RawMessage(data)}
			}
			rep, err := tryCall(ctx, hc, http.MethodPost, p.URL+path, sender.tok, body)
			if err != nil {
				return // the relay is gone: this one may or may not be stored
			}
			mu.Lock()
			if rep.Status == http.StatusCreated {
				id, _ := rep.JSON["id"].(json.Number).Int64()
				acked[id] = data
				if len(acked) >= 60 {
					once.Do(func() { close(enough) })
				}
			} else {
				failures = append(failures, fmt.Sprintf("%s: %d %s", path, rep.Status, rep.Body))
			}
			mu.Unlock()
		}
	})
	killUnderTraffic(t, p, enough, cancel, &wg, func() string {
		return fmt.Sprintf("%d acknowledged; %q", len(acked), failures)
	})
	require.Empty(t, failures)

	p2 := startRelayProcess(t, dbPath)
	rel2 := &testRelay{t: t, URL: p2.URL}
	got := rel2.readAll(receiver)
	var last int64
	seen := map[int64]bool{}
	for _, m := range got {
		assert.Greater(t, m.ID, last, "in id order, each once")
		last = m.ID
		seen[m.ID] = true
		if data, ok := acked[m.ID]; ok {
			assert.Equal(t, data, string(m.Data), "message %d", m.ID)
		}
	}
	for id := range acked {
		assert.True(t, seen[id], "acknowledged message %d lost", id)
	}
	t.Logf("killed with %d messages acknowledged, %d read after the restart", len(acked), len(got))

	id, n := rel2.fanOut(sender, "news", "after the restart")
	assert.Equal(t, 1, n, "the subscription survived")
	assert.Greater(t, id, last, "ids go on after the old ones")
	assert.Equal(t, []int64{id}, msgIDs(rel2.readAll(receiver)[len(got):]))
}
