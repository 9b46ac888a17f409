// Streamed answers and cancellation on the wire (docs/API.md, "Streamed
// answers and cancellation"): parts committed before they are
// acknowledged, read from an offset, written to a /via/ caller as they
// come; requests withdrawn by their caller, and the SimServer told.

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"math"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// leaseFresh pushes a sim_req from a fresh login of net and leases it to the
// SimServer; it returns the login's token and the rid.
func (r *testRelay) leaseFresh(net string) (tok, rid string) {
	r.t.Helper()
	tok, _ = r.login(net)
	rid = r.push(tok, map[string]any{"simEndpoint": "/events"})
	got := r.pullReqs(net, testKey, nil)
	require.Len(r.t, got, 1)
	require.Equal(r.t, rid, got[0].RID)
	return tok, rid
}

// head posts a streamed answer's head (pushres with more) with body.
func (r *testRelay) head(net, rid string, headers map[string]any, body string) reply {
	r.t.Helper()
	return r.postJSON("/api/v1/server/pushres", testKey, map[string]any{"net": net, "rid": rid, "more": true,
		"sim_res": map[string]any{"simStatus": 200, "simHeaders": headers, "simBody": body}})
}

// part posts one part as raw octets, the way the SDKs send them.
func (r *testRelay) part(net, rid string, offset int, data []byte, last bool) reply {
	r.t.Helper()
	q := url.Values{"net": {net}, "rid": {rid}, "offset": {strconv.Itoa(offset)}, "last": {strconv.FormatBool(last)}}
	req, err := http.NewRequest(http.MethodPost, r.URL+"/api/v1/server/pushpart?"+q.Encode(), bytes.NewReader(data))
	require.NoError(r.t, err)
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Authorization", "Bearer "+testKey)
	return r.do(req)
}

// pullAt reads rid's streamed answer from offset, waiting up to wait.
func (r *testRelay) pullAt(tok, rid string, offset int, wait string) reply {
	r.t.Helper()
	return r.get("/api/v1/client/pullsmart", url.Values{"token": {tok}, "rid": {rid}, "offset": {strconv.Itoa(offset)}, "wait": {wait}})
}

// streamBody is the body bytes of a pull of a streamed answer.
func streamBody(t *testing.T, rep reply) string {
	t.Helper()
	var out struct {
		SimRes struct {
			Body     json.RawMessage `json:"simBody"`
			Encoding string          `json:"simBodyEncoding"`
		} `json:"sim_res"`
	}
	require.NoError(t, json.Unmarshal(rep.Body, &out), string(rep.Body))
	if string(out.SimRes.Body) == "null" {
		return ""
	}
	var s string
	require.NoError(t, json.Unmarshal(out.SimRes.Body, &s))
	if out.SimRes.Encoding == "base64" {
		b, err := base64.StdEncoding.DecodeString(s)
		require.NoError(t, err)
		return string(b)
	}
	return s
}

func TestStreamParts(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, rid := r.leaseFresh("live")

	rep := r.head("live", rid, map[string]any{"Content-Type": "text/event-stream"}, "data: 1\n\n")
	require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	assert.Equal(t, "open", rep.str("stream"))
	assert.Equal(t, json.Number("9"), rep.JSON["offset"])

	check := r.get("/api/v1/client/check", url.Values{"token": {tok}, "rid": {rid}})
	assert.Equal(t, "answered", check.str("status"))
	assert.Equal(t, "open", check.str("stream"))

	// A reader at the end waits for the next part, and wakes when it is committed.
	asleep := r.srv.poller.asleep.Load()
	waiting := async(func() reply { return r.pullAt(tok, rid, 9, "30") })
	r.waitAsleep(asleep + 1)
	rep = r.part("live", rid, 9, []byte("data: 2\n\n"), false)
	require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	assert.Equal(t, json.Number("18"), rep.JSON["offset"])
	got := within(t, 10*time.Second, waiting, "the pull waiting at the stream's end")
	assert.Equal(t, "data: 2\n\n", streamBody(t, got))
	assert.Equal(t, json.Number("18"), got.JSON["offset"])
	assert.Equal(t, "open", got.str("stream"))

	t.Run("a retried part is answered the same and written once", func(t *testing.T) {
		parts := r.count("answer_parts")
		rep := r.part("live", rid, 9, []byte("data: 2\n\n"), false)
		require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
		assert.Equal(t, json.Number("18"), rep.JSON["offset"])
		assert.Equal(t, parts, r.count("answer_parts"))
	})
	t.Run("a gap is refused with the committed offset", func(t *testing.T) {
		rep := r.part("live", rid, 25, []byte("x"), false)
		assert.Equal(t, http.StatusConflict, rep.Status)
		assert.Equal(t, "offset_mismatch", rep.errorCode())
		assert.Contains(t, string(rep.Body), "offset 18")
	})
	t.Run("a part overlapping the committed end is refused", func(t *testing.T) {
		rep := r.part("live", rid, 15, []byte("0123456789"), false)
		assert.Equal(t, "offset_mismatch", rep.errorCode())
	})
	t.Run("parts travel as JSON too, base64 for bytes", func(t *testing.T) {
		rep := r.postJSON("/api/v1/server/pushpart", testKey, map[string]any{"net": "live", "rid": rid, "offset": 18,
			"simBody": base64.StdEncoding.EncodeToString([]byte{0xff, 0x00}), "simBodyEncoding": "base64"})
		require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
		rep = r.postForm("/api/v1/server/pushpart", url.Values{"net": {"live"}, "key": {testKey}, "rid": {rid}, "offset": {"20"}, "simBody": {"data: 3\n\n"}})
		require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
		assert.Equal(t, json.Number("29"), rep.JSON["offset"])
	})
	t.Run("a part over --max-body is 413 and not written", func(t *testing.T) {
		rep := r.part("live", rid, 29, make([]byte, r.cfg.MaxBody+1), false)
		assert.Equal(t, http.StatusRequestEntityTooLarge, rep.Status)
		assert.Equal(t, "29", r.check(tok, rid)["offset"])
	})
	t.Run("pushpart needs an offset", func(t *testing.T) {
		for _, body := range []map[string]any{
			{"net": "live", "rid": rid, "simBody": "x"},
			{"net": "live", "rid": rid, "simBody": "x", "offset": nil},
			{"net": "live", "rid": rid, "simBody": "x", "offset": ""},
		} {
			rep := r.postJSON("/api/v1/server/pushpart", testKey, body)
			assert.Equal(t, "missing_param", rep.errorCode(), "%v", body)
		}
	})
	t.Run("an offset whose end overflows is refused, not taken for a retry", func(t *testing.T) {
		rep := r.part("live", rid, math.MaxInt64, []byte("abc"), false)
		assert.Equal(t, "offset_mismatch", rep.errorCode())
	})

	rep = r.part("live", rid, 29, nil, true)
	require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	assert.Equal(t, "complete", rep.str("stream"))
	// The last part again (a lost reply) is answered the same.
	rep = r.part("live", rid, 29, nil, true)
	require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	assert.Equal(t, "complete", rep.str("stream"))
	rep = r.part("live", rid, 29, []byte("more"), false)
	assert.Equal(t, "already_answered", rep.errorCode())

	// The whole body, read from the start; then from the middle.
	all := r.pullAt(tok, rid, 0, "0")
	assert.Equal(t, "data: 1\n\ndata: 2\n\n\xff\x00data: 3\n\n", streamBody(t, all))
	assert.Equal(t, "complete", all.str("stream"))
	assert.Equal(t, json.Number("29"), all.JSON["offset"])
	assert.Equal(t, "2\n\n\xff\x00data: 3\n\n", streamBody(t, r.pullAt(tok, rid, 15, "0")), "from the middle of a part")
	assert.Equal(t, http.StatusRequestedRangeNotSatisfiable, r.pullAt(tok, rid, 30, "0").Status)

	t.Run("pushpart before a head is refused", func(t *testing.T) {
		_, rid := r.leaseFresh("live")
		rep := r.part("live", rid, 0, []byte("x"), false)
		assert.Equal(t, "no_stream", rep.errorCode())
		r.answer("live", testKey, rid, map[string]any{"simBody": "whole"})
		assert.Equal(t, "already_answered", r.part("live", rid, 0, []byte("x"), false).errorCode())
	})
}

// check reads rid's check reply and the body bytes committed so far.
func (r *testRelay) check(tok, rid string) map[string]string {
	r.t.Helper()
	rep := r.get("/api/v1/client/check", url.Values{"token": {tok}, "rid": {rid}})
	pull := r.pullAt(tok, rid, 0, "0")
	out := map[string]string{"status": rep.str("status"), "stream": rep.str("stream")}
	if o, ok := pull.JSON["offset"].(json.Number); ok {
		out["offset"] = o.String()
	}
	return out
}

func TestStreamThroughGateway(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+"/via/live/events", nil)
	require.NoError(t, err)
	type result struct {
		resp *http.Response
		err  error
	}
	answered := make(chan result, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		answered <- result{resp, err}
	}()
	var got []leased
	waitFor(t, 10*time.Second, func() bool { got = r.pullReqs("live", testKey, nil); return len(got) == 1 }, "the gateway request queued")
	rid := got[0].RID

	rep := r.head("live", rid, map[string]any{"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}, "")
	require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	res := <-answered
	require.NoError(t, res.err)
	defer res.resp.Body.Close()
	assert.Equal(t, "text/event-stream", res.resp.Header.Get("Content-Type"))
	assert.Equal(t, int64(-1), res.resp.ContentLength, "chunked: the length is not known")

	lines := bufio.NewReader(res.resp.Body)
	offset := 0
	for i := range 3 {
		event := "data: " + strconv.Itoa(i) + "\n\n"
		rep := r.part("live", rid, offset, []byte(event), false)
		require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
		offset += len(event)
		// The caller reads each event before the next is even posted.
		line, err := lines.ReadString('\n')
		require.NoError(t, err)
		assert.Equal(t, "data: "+strconv.Itoa(i)+"\n", line)
		_, err = lines.ReadString('\n')
		require.NoError(t, err)
	}
	require.Equal(t, http.StatusOK, r.part("live", rid, offset, nil, true).Status)
	rest, err := io.ReadAll(lines)
	require.NoError(t, err, "the body ends cleanly after the last part")
	assert.Empty(t, rest)

	t.Run("a HEAD gets the head, and the stream behind it is withdrawn", func(t *testing.T) {
		answered := make(chan result, 1)
		go func() {
			resp, err := http.Head(r.URL + "/via/live/events")
			answered <- result{resp, err}
		}()
		waitFor(t, 10*time.Second, func() bool { got = r.pullReqs("live", testKey, nil); return len(got) == 1 }, "queued")
		require.Equal(t, http.StatusOK, r.head("live", got[0].RID, map[string]any{"Content-Type": "text/event-stream"}, "").Status)
		res := <-answered
		require.NoError(t, res.err)
		res.resp.Body.Close()
		assert.Equal(t, "text/event-stream", res.resp.Header.Get("Content-Type"))
		waitFor(t, 5*time.Second, func() bool {
			return r.part("live", got[0].RID, 0, []byte("data: x\n\n"), false).errorCode() == "cancelled"
		}, "the SimServer told that nobody reads the parts")
	})
	t.Run("a declared Content-Length is kept", func(t *testing.T) {
		answered := make(chan result, 1)
		go func() {
			resp, err := http.Get(r.URL + "/via/live/file")
			answered <- result{resp, err}
		}()
		waitFor(t, 10*time.Second, func() bool { got = r.pullReqs("live", testKey, nil); return len(got) == 1 }, "queued")
		big := bytes.Repeat([]byte("0123456789abcdef"), 300_000) // 4.8 MB in parts of at most 1 MiB
		rep := r.head("live", got[0].RID, map[string]any{"Content-Length": strconv.Itoa(len(big))}, "")
		require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
		for off := 0; off < len(big); off += 1 << 20 {
			end := min(off+1<<20, len(big))
			require.Equal(t, http.StatusOK, r.part("live", got[0].RID, off, big[off:end], end == len(big)).Status)
		}
		res := <-answered
		require.NoError(t, res.err)
		defer res.resp.Body.Close()
		assert.Equal(t, int64(len(big)), res.resp.ContentLength)
		body, err := io.ReadAll(res.resp.Body)
		require.NoError(t, err)
		assert.True(t, bytes.Equal(big, body), "the body arrives byte for byte")
	})
}

func TestStreamAborted(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	answered := make(chan *http.Response, 1)
	go func() {
		resp, err := http.Get(r.URL + "/via/live/events")
		if err == nil {
			answered <- resp
		}
	}()
	var got []leased
	waitFor(t, 10*time.Second, func() bool { got = r.pullReqs("live", testKey, nil); return len(got) == 1 }, "queued")
	rid := got[0].RID
	rep := r.postJSON("/api/v1/server/pushres", testKey, map[string]any{"net": "live", "rid": rid, "more": true, "lease": 10,
		"sim_res": map[string]any{"simHeaders": map[string]any{"Content-Type": "text/plain"}, "simBody": "first "}})
	require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	resp := <-answered
	defer resp.Body.Close()
	buf := make([]byte, 6)
	_, err := io.ReadFull(resp.Body, buf)
	require.NoError(t, err)
	assert.Equal(t, "first ", string(buf))

	// extend keeps an open stream's lease, as it keeps a delivered request's.
	r.advance(9 * time.Second)
	rep = r.postJSON("/api/v1/server/extend", testKey, map[string]any{"net": "live", "rid": rid, "lease": 10})
	require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	r.advance(9 * time.Second)
	rep = r.postForm("/api/v1/server/pushpart", url.Values{"net": {"live"}, "key": {testKey}, "rid": {rid},
		"offset": {"6"}, "simBody": {"second"}, "lease": {"10"}})
	require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	buf = make([]byte, 6)
	_, err = io.ReadFull(resp.Body, buf)
	require.NoError(t, err)
	assert.Equal(t, "second", string(buf))

	// No part within the lease: the stream is aborted, and the caller's
	// body ends early rather than looking complete.
	r.advance(11 * time.Second)
	rest, err := io.ReadAll(resp.Body)
	assert.Empty(t, rest)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "an aborted stream must not look complete")
	rep = r.part("live", rid, 12, []byte("late"), false)
	assert.Equal(t, http.StatusGone, rep.Status)
	assert.Equal(t, "aborted", rep.errorCode())
}

func TestCancel(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	cancelReq := func(tok, rid string) reply {
		return r.postJSON("/api/v1/client/cancel", tok, map[string]any{"rid": rid})
	}

	t.Run("a queued request is never delivered", func(t *testing.T) {
		tok, _ := r.login("c1")
		rid := r.push(tok, map[string]any{"simEndpoint": "/x"})
		rep := cancelReq(tok, rid)
		require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
		assert.Equal(t, "cancelled", rep.str("status"))
		assert.Empty(t, r.pullReqs("c1", testKey, nil))
		assert.Equal(t, "cancelled", r.get("/api/v1/client/check", url.Values{"token": {tok}, "rid": {rid}}).str("status"))
		pull := r.get("/api/v1/client/pullsmart", url.Values{"token": {tok}, "rid": {rid}, "wait": {"0"}})
		assert.Equal(t, http.StatusGone, pull.Status)
		assert.Equal(t, "cancelled", pull.errorCode())
		assert.Equal(t, http.StatusOK, cancelReq(tok, rid).Status, "cancelling again is no error")
		assertCountsExact(t, r, "withdrawn while queued")
		assertUsageFromFile(t, r, "withdrawn while queued")
		assert.False(t, r.store.counts.stale.Load(), "kept exact, not left to a recount")
	})
	t.Run("another token cannot cancel it", func(t *testing.T) {
		tok, _ := r.login("c1")
		other, _ := r.login("c1")
		rid := r.push(tok, map[string]any{"simEndpoint": "/x"})
		assert.Equal(t, http.StatusNotFound, cancelReq(other, rid).Status)
		assert.Equal(t, "queued", r.get("/api/v1/client/check", url.Values{"token": {tok}, "rid": {rid}}).str("status"))
	})
	t.Run("a held request: the watch wakes, the answer is refused and not written", func(t *testing.T) {
		tok, rid := r.leaseFresh("c2")
		asleep := r.srv.poller.asleep.Load()
		watch := async(func() reply {
			return r.postJSON("/api/v1/server/watch", testKey, map[string]any{"net": "c2", "rids": []string{rid, "no-such-rid-but-held"}, "wait": 30})
		})
		// An unknown rid needs no work either: the first answer names it at once.
		first := within(t, 10*time.Second, watch, "the watch")
		assert.Equal(t, []any{"no-such-rid-but-held"}, first.JSON["cancelled"])

		watch = async(func() reply {
			return r.postJSON("/api/v1/server/watch", testKey, map[string]any{"net": "c2", "rids": []string{rid}, "wait": 30})
		})
		r.waitAsleep(asleep + 1)
		require.Equal(t, http.StatusOK, cancelReq(tok, rid).Status)
		woke := within(t, 5*time.Second, watch, "the watch, once the request was cancelled")
		assert.Equal(t, []any{rid}, woke.JSON["cancelled"])

		rep := r.answer("c2", testKey, rid, map[string]any{"simBody": "too late"})
		assert.Equal(t, http.StatusGone, rep.Status)
		assert.Equal(t, "cancelled", rep.errorCode())
		rep = r.postJSON("/api/v1/server/extend", testKey, map[string]any{"net": "c2", "rid": rid, "lease": 30})
		assert.Equal(t, "cancelled", rep.errorCode())
		var simRes *string
		require.NoError(t, r.store.r.QueryRow(`SELECT sim_res FROM requests WHERE rid = ?`, rid).Scan(&simRes))
		assert.Nil(t, simRes, "nothing written for a withdrawn request")
	})
	t.Run("a watch with nothing withdrawn ends empty when its wait runs out", func(t *testing.T) {
		_, rid := r.leaseFresh("c3")
		rep := r.afterWait(5*time.Second, func() reply {
			return r.postJSON("/api/v1/server/watch", testKey, map[string]any{"net": "c3", "rids": []string{rid}, "wait": 5})
		})
		require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
		assert.Equal(t, []any{}, rep.JSON["cancelled"])
	})
	t.Run("an open stream stops; what was committed stays readable", func(t *testing.T) {
		tok, rid := r.leaseFresh("c4")
		require.Equal(t, http.StatusOK, r.head("c4", rid, nil, "kept").Status)
		require.Equal(t, http.StatusOK, cancelReq(tok, rid).Status)
		rep := r.part("c4", rid, 4, []byte("dropped"), false)
		assert.Equal(t, "cancelled", rep.errorCode())
		pull := r.pullAt(tok, rid, 0, "0")
		assert.Equal(t, "kept", streamBody(t, pull))
		assert.Equal(t, "cancelled", pull.str("stream"))
	})
	t.Run("a complete answer cannot be cancelled", func(t *testing.T) {
		tok, rid := r.leaseFresh("c5")
		r.answer("c5", testKey, rid, map[string]any{"simBody": "done"})
		rep := cancelReq(tok, rid)
		assert.Equal(t, http.StatusConflict, rep.Status)
		assert.Equal(t, "already_answered", rep.errorCode())
	})
	t.Run("bad input", func(t *testing.T) {
		tok, _ := r.login("c6")
		assert.Equal(t, "missing_param", cancelReq(tok, "").errorCode())
		assert.Equal(t, http.StatusNotFound, cancelReq(tok, "nope").Status)
		assert.Equal(t, "invalid_param", r.postJSON("/api/v1/server/watch", testKey, map[string]any{"net": "c6", "rids": []string{}}).errorCode())
		assert.Equal(t, "invalid_param", r.postJSON("/api/v1/server/watch", testKey,
			map[string]any{"net": "c6", "rids": make([]string, maxWatched+1)}).errorCode())
		assert.Equal(t, http.StatusForbidden, r.postJSON("/api/v1/server/watch", "wrong-key-0123456789",
			map[string]any{"net": "c2", "rids": []string{"x"}}).Status)
	})
}

// TestViaCallerGoneWithdraws: a /via/ caller that goes away before its
// answer is complete withdraws its request, whether it is queued, held, or
// streaming.
func TestViaCallerGoneWithdraws(t *testing.T) {
	t.Parallel()
	onlyOneNode(t)
	r := newTestRelay(t)
	// call sends a gateway request and returns a func that abandons it.
	call := func(path string) (abandon func()) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+path, nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
		return func() { cancel(); <-done }
	}
	status := func(rid string) (status string, cancelled bool) {
		require.NoError(t, r.store.r.QueryRow(`SELECT status, cancelled_at IS NOT NULL FROM requests WHERE rid = ?`, rid).Scan(&status, &cancelled))
		return status, cancelled
	}

	t.Run("queued", func(t *testing.T) {
		asleep := r.srv.poller.asleep.Load()
		abandon := call("/via/g1/x")
		r.waitAsleep(asleep + 1)
		require.EqualValues(t, 1, r.srv.held.held.Load(), "held in memory while its caller waits")
		abandon()
		waitFor(t, 5*time.Second, func() bool { return r.srv.held.held.Load() == 0 }, "the abandoned request withdrawn")
		assert.Empty(t, r.pullReqs("g1", testKey, nil), "never delivered")
		assert.Zero(t, r.count(`requests WHERE net = 'g1'`), "nor stored")
	})
	t.Run("held", func(t *testing.T) {
		abandon := call("/via/g2/x")
		var got []leased
		waitFor(t, 10*time.Second, func() bool { got = r.pullReqs("g2", testKey, nil); return len(got) == 1 }, "queued")
		asleep := r.srv.poller.asleep.Load()
		watch := async(func() reply {
			return r.postJSON("/api/v1/server/watch", testKey, map[string]any{"net": "g2", "rids": []string{got[0].RID}, "wait": 30})
		})
		r.waitAsleep(asleep + 1)
		abandon()
		rep := within(t, 5*time.Second, watch, "the watch, once the caller went away")
		assert.Equal(t, []any{got[0].RID}, rep.JSON["cancelled"])
		late := r.answer("g2", testKey, got[0].RID, map[string]any{"simBody": "too late"})
		assert.Equal(t, http.StatusGone, late.Status)
		assert.Equal(t, "cancelled", late.errorCode())
		assert.Equal(t, "cancelled", r.postJSON("/api/v1/server/extend", testKey, map[string]any{"net": "g2", "rid": got[0].RID, "lease": 5}).errorCode())
		assert.Zero(t, r.count(`requests WHERE net = 'g2'`), "nothing stored")
	})
	t.Run("streaming", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		bodies := make(chan io.ReadCloser, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+"/via/g3/events", nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				bodies <- resp.Body
			}
		}()
		var got []leased
		waitFor(t, 10*time.Second, func() bool { got = r.pullReqs("g3", testKey, nil); return len(got) == 1 }, "queued")
		rid := got[0].RID
		require.Equal(t, http.StatusOK, r.head("g3", rid, nil, "one").Status)
		body := <-bodies
		buf := make([]byte, 3)
		_, err := io.ReadFull(body, buf)
		require.NoError(t, err)
		cancel()
		body.Close()
		waitFor(t, 5*time.Second, func() bool { _, c := status(rid); return c }, "the stream withdrawn")
		rep := r.part("g3", rid, 3, []byte("two"), false)
		assert.Equal(t, "cancelled", rep.errorCode())
	})
	t.Run("not after a 202", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodPost, r.URL+"/via/g4/x", strings.NewReader("kept"))
		req.Header.Set("Prefer", "respond-async")
		resp, _ := viaDo(t, req)
		require.Equal(t, http.StatusAccepted, resp.StatusCode)
		got := r.pullReqs("g4", testKey, nil)
		require.Len(t, got, 1, "handed over to the store: the caller's leaving does not withdraw it")
	})
}

// TestStreamSurvivesKill: every acknowledged part is there after a kill
// -9, and a SimClient reads on from the offset it had.
func TestStreamSurvivesKill(t *testing.T) {
	t.Parallel()
	db := filepath.Join(t.TempDir(), "relay.db")
	p := startRelayProcess(t, db)
	r := &testRelay{t: t, URL: p.URL}
	tok, rid := r.leaseFresh("dur")
	require.Equal(t, http.StatusOK, r.head("dur", rid, map[string]any{"Content-Type": "application/octet-stream"}, "").Status)
	var sent []byte
	for i := range 20 {
		part := bytes.Repeat([]byte{byte('a' + i)}, 50_000)
		rep := r.part("dur", rid, len(sent), part, false)
		require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
		sent = append(sent, part...)
	}
	first := r.pullAt(tok, rid, 0, "0")
	read := streamBody(t, first)
	require.Equal(t, string(sent[:len(read)]), read)
	p.kill(t)

	p = startRelayProcess(t, db)
	r.URL = p.URL
	for {
		rep := r.pullAt(tok, rid, len(read), "0")
		require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
		chunk := streamBody(t, rep)
		if chunk == "" {
			break
		}
		read += chunk
	}
	assert.Equal(t, len(sent), len(read))
	assert.True(t, string(sent) == read, "every acknowledged part is there after kill -9")
	// The stream goes on after the restart.
	require.Equal(t, http.StatusOK, r.part("dur", rid, len(sent), []byte("end"), true).Status)
	rep := r.pullAt(tok, rid, len(sent), "0")
	assert.Equal(t, "end", streamBody(t, rep))
	assert.Equal(t, "complete", rep.str("stream"))
}

// TestStreamRetention: an open stream whose SimServer keeps it (extend) is
// not removed under its caller, however long it idles; once it ends, its
// retention runs from its last part, and removing it removes its parts and
// gives their bytes back to the net's budget.
func TestStreamRetention(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	ctx := context.Background()
	tok, rid := r.leaseFresh("keep")
	require.Equal(t, http.StatusOK, r.head("keep", rid, nil, "0123456789").Status)
	require.Equal(t, http.StatusOK, r.part("keep", rid, 10, bytes.Repeat([]byte("x"), 5000), false).Status)
	usage := func() (n int64) {
		require.NoError(t, r.store.r.QueryRow(`SELECT coalesce(sum(bytes), 0) FROM net_usage WHERE net = 'keep'`).Scan(&n))
		return n
	}
	assert.Greater(t, usage(), int64(5010), "the parts count in the net's budget")
	// inspect, on the relay's clock: the stream's state and its bytes.
	detail, err := r.store.requestDetail(ctx, rid)
	require.NoError(t, err)
	var out bytes.Buffer
	printRequestDetail(&out, detail)
	assert.Contains(t, out.String(), "open, 5010 body bytes in parts", "inspect tells a stream from a whole answer")

	// Silence past --res-ttl since the last part, the lease kept by extend.
	for idle := time.Duration(0); idle < r.cfg.ResTTL+time.Minute; idle += 25 * time.Second {
		r.advance(25 * time.Second)
		rep := r.postJSON("/api/v1/server/extend", testKey, map[string]any{"net": "keep", "rid": rid, "lease": 30})
		require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	}
	_, err = r.store.purgeBatches(ctx, janitorBatch, nil)
	require.NoError(t, err)
	assert.Equal(t, "open", r.get("/api/v1/client/check", url.Values{"token": {tok}, "rid": {rid}}).str("stream"))

	require.Equal(t, http.StatusOK, r.part("keep", rid, 5010, nil, true).Status)
	r.advance(r.cfg.ResTTL + time.Second)
	_, err = r.store.purgeBatches(ctx, janitorBatch, nil)
	require.NoError(t, err)
	assert.Equal(t, 0, r.count("answer_parts"), "the parts went with their request")
	assert.Equal(t, int64(0), usage(), "and their bytes left the budget")
}

// TestStreamLeaseShortened: a SimServer that gives up on a stream cuts its
// lease short with extend; its readers see the end at the new moment, not
// at the old lease's.
func TestStreamLeaseShortened(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	bodies := make(chan io.ReadCloser, 1)
	go func() {
		if resp, err := http.Get(r.URL + "/via/cut/events"); err == nil {
			bodies <- resp.Body
		}
	}()
	var got []leased
	waitFor(t, 10*time.Second, func() bool { got = r.pullReqs("cut", testKey, nil); return len(got) == 1 }, "queued")
	require.Equal(t, http.StatusOK, r.head("cut", got[0].RID, nil, "begun").Status)
	body := <-bodies
	defer body.Close()
	buf := make([]byte, 5)
	_, err := io.ReadFull(body, buf)
	require.NoError(t, err)

	rep := r.postJSON("/api/v1/server/extend", testKey, map[string]any{"net": "cut", "rid": got[0].RID, "lease": 0.001})
	require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	r.advance(2 * time.Millisecond)
	ended := make(chan error, 1)
	go func() { _, err := io.ReadAll(body); ended <- err }()
	select {
	case err := <-ended:
		assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	case <-time.After(5 * time.Second):
		t.Fatal("the caller's body did not end when the shortened lease ran out")
	}
}

// TestStreamCutLogged: a reply cut short after its head (an aborted
// stream) still gets its access-log line, marked cut, and its count in
// the metrics.
func TestStreamCutLogged(t *testing.T) {
	t.Parallel()
	var logs syncBuffer
	r := newTestRelayLog(t, &logs)
	bodies := make(chan io.ReadCloser, 1)
	go func() {
		if resp, err := http.Get(r.URL + "/via/logged/events"); err == nil {
			bodies <- resp.Body
		}
	}()
	var got []leased
	waitFor(t, 10*time.Second, func() bool { got = r.pullReqs("logged", testKey, nil); return len(got) == 1 }, "queued")
	require.Equal(t, http.StatusOK, r.head("logged", got[0].RID, nil, "begun").Status)
	body := <-bodies
	defer body.Close()
	require.Equal(t, http.StatusOK, r.postJSON("/api/v1/server/extend", testKey, map[string]any{"net": "logged", "rid": got[0].RID, "lease": 0.001}).Status)
	r.advance(2 * time.Millisecond)
	_, err := io.ReadAll(body)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	waitFor(t, 5*time.Second, func() bool { return strings.Contains(logs.String(), "cut=true") }, "the cut call's log line")
	assert.Regexp(t, `route="?/via/\{net\}/\{path\.\.\.\}"? status=200 .*net=logged .*cut=true`, logs.String())
	metrics := r.get("/metrics", nil)
	assert.Regexp(t, `c2cvia_http_requests_total\{code="200",route="/via/\{net\}/\{path\.\.\.\}"\} 1`, string(metrics.Body))
}

// TestStreamBudgets: a streamed answer is stored for whoever asked, so its
// parts count in the asking address's budget as its request does (507
// past it, nothing written); like a whole answer, not in the net's, which
// others' requests may have filled.
// The parts a synchronous /via/ caller has been written are dropped as it
// reads, so a download many times the budgets passes while the SimServer
// waits out the 507s, and everything is given back at the end.
func TestStreamBudgets(t *testing.T) {
	t.Parallel()
	const kib = 1 << 10
	t.Run("not the net's budget: others' requests filling the net do not stop its answers", func(t *testing.T) {
		r := newTestRelay(t, func(c *config) { c.MaxNetStore, c.MaxAddrStore = 600*kib, 0 })
		_, rid := r.leaseFresh("full")
		tok, _ := r.login("full")
		for range 2 {
			r.push(tok, map[string]any{"simEndpoint": "/x", "simBody": strings.Repeat("q", 256*kib)})
		}
		assertFull(t, r.postJSON("/api/v1/client/pushreq", tok, map[string]any{"sim_req": map[string]any{
			"simEndpoint": "/x", "simBody": strings.Repeat("q", 256*kib)}}), "net_store_full")
		require.Equal(t, http.StatusOK, r.head("full", rid, nil, "").Status)
		part := bytes.Repeat([]byte("n"), 256*kib)
		for i := range 3 {
			require.Equal(t, http.StatusOK, r.part("full", rid, i*256*kib, part, false).Status, "part %d", i)
		}
		assertUsageExact(t, r)
		assertUsageFromFile(t, r, "parts past the net's budget")
	})
	t.Run("the asking address's budget", func(t *testing.T) {
		r := newTestRelay(t, func(c *config) { c.MaxAddrStore = 600 * kib })
		_, rid := r.leaseFresh("mine")
		require.Equal(t, http.StatusOK, r.head("mine", rid, nil, strings.Repeat("h", 256*kib)).Status)
		require.Equal(t, http.StatusOK, r.part("mine", rid, 256*kib, bytes.Repeat([]byte("a"), 256*kib), false).Status)
		assertFull(t, r.part("mine", rid, 512*kib, bytes.Repeat([]byte("a"), 256*kib), false), "addr_store_full")
		assertUsageFromFile(t, r, "refused part")
	})
	t.Run("a synchronous caller's parts are dropped as it reads", func(t *testing.T) {
		r := newTestRelay(t, func(c *config) { c.MaxNetStore, c.MaxAddrStore, c.ViaAddrShare = 1024*kib, 512*kib, 0 })
		type result struct {
			body []byte
			err  error
		}
		answered := make(chan result, 1)
		go func() {
			resp, err := http.Get(r.URL + "/via/dl/big")
			if err != nil {
				answered <- result{err: err}
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			answered <- result{b, err}
		}()
		var got []leased
		waitFor(t, 10*time.Second, func() bool { got = r.pullReqs("dl", testKey, nil); return len(got) == 1 }, "queued")
		rid := got[0].RID
		require.Equal(t, http.StatusOK, r.head("dl", rid, nil, "").Status)
		want := make([]byte, 0, 4<<20)
		for i := 0; len(want) < 4<<20; i++ { // 4 MiB: eight times the address's budget
			part := bytes.Repeat([]byte{byte('a' + i%26)}, 64*kib)
			waitFor(t, 10*time.Second, func() bool {
				rep := r.part("dl", rid, len(want), part, false)
				if rep.Status == http.StatusInsufficientStorage { // the caller has not read enough yet
					return false
				}
				require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
				return true
			}, "room for the next part once the caller has read")
			want = append(want, part...)
		}
		require.Equal(t, http.StatusOK, r.part("dl", rid, len(want), nil, true).Status)
		res := <-answered
		require.NoError(t, res.err)
		assert.True(t, bytes.Equal(want, res.body), "4 MiB through budgets of 512 KiB, byte for byte")
		waitFor(t, 10*time.Second, func() bool { return r.count("answer_parts") == 0 && r.count("requests") == 0 }, "the read stream gone")
		assertUsageExact(t, r)
		assertUsageFromFile(t, r, "after the download")
	})
}

// BenchmarkStreamRead: the gateway's reads of a streamed answer with a
// large backlog stored (100 parts of 512 KiB), 64 KiB at a time, as it
// writes them to a caller. Each read is one index step that copies only
// what it gives; a read that scanned the backlog would make this grow with
// its square.
func BenchmarkStreamRead(b *testing.B) {
	r := newTestRelay(b)
	tok, _ := r.login("bench")
	rid := r.push(tok, map[string]any{"simEndpoint": "/big"})
	got := r.pullReqs("bench", testKey, nil)
	require.Len(b, got, 1)
	require.Equal(b, http.StatusOK, r.head("bench", rid, nil, "").Status)
	part := bytes.Repeat([]byte("p"), 512<<10)
	const parts = 100
	for i := range parts {
		require.Equal(b, http.StatusOK, r.part("bench", rid, i*len(part), part, false).Status)
	}
	st, err := r.store.requestForOwner(context.Background(), token{Hash: secretHash(tok)}, rid)
	require.NoError(b, err)
	b.SetBytes(parts * int64(len(part)))
	b.ResetTimer()
	for range b.N {
		for offset := int64(0); offset < st.bodyBytes; {
			chunk, err := r.store.readBody(context.Background(), st.seq, offset, viaWriteBytes)
			if err != nil || len(chunk) == 0 {
				b.Fatal(err, offset)
			}
			offset += int64(len(chunk))
		}
	}
}

// TestAnswersInAskersBudget: an answer is stored for whoever asked, so it
// counts in the asking address's budget: a SimServer answering its own
// tiny requests with large answers is refused at that address's budget
// (507, the answer not written), while another address asks and is
// answered as before.
func TestAnswersInAskersBudget(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) {
		c.MaxAddrStore = 1 << 20
		c.TrustProxy = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	pushFrom := func(addr, tok string) string {
		req, err := http.NewRequest(http.MethodPost, r.URL+"/api/v1/client/pushreq", strings.NewReader(`{"sim_req":{"simEndpoint":"/x"}}`))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok)
		req.Header.Set("X-Forwarded-For", addr)
		rep := r.do(req)
		require.Equal(t, http.StatusCreated, rep.Status, string(rep.Body))
		return rep.str("rid")
	}
	big := strings.Repeat("a", 300<<10)
	tok, _ := r.login("self")
	refused := ""
	for range 5 {
		rid := pushFrom("203.0.113.5", tok)
		r.pullReqs("self", testKey, nil)
		if rep := r.answer("self", testKey, rid, map[string]any{"simBody": big}); rep.Status != http.StatusOK {
			assertFull(t, rep, "addr_store_full")
			refused = rid
			break
		}
	}
	require.NotEmpty(t, refused, "the asking address's budget refused an answer")
	var simRes *string
	require.NoError(t, r.store.r.QueryRow(`SELECT sim_res FROM requests WHERE rid = ?`, refused).Scan(&simRes))
	assert.Nil(t, simRes, "the refused answer was not written")

	other, _ := r.login("self")
	rid := pushFrom("198.51.100.7", other)
	r.pullReqs("self", testKey, nil)
	assert.Equal(t, http.StatusOK, r.answer("self", testKey, rid, map[string]any{"simBody": big}).Status, "another address is answered")
	assertUsageFromFile(t, r, "answers counted")
}

// TestStreamsThatNeverReadEnd: a caller of an event stream or of a
// streamed /via/ answer that never reads pins nothing for long: a write
// that does not reach it within --write-timeout ends the call, and a
// gateway caller's request is then withdrawn, so its SimServer stops.
func TestStreamsThatNeverReadEnd(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.Listen.WriteTimeout = 200 * time.Millisecond })
	addr := strings.TrimPrefix(r.URL, "http://")
	dial := func(request string) {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		require.NoError(t, c.(*net.TCPConn).SetReadBuffer(4096))
		_, err = io.WriteString(c, request)
		require.NoError(t, err)
	}
	t.Run("an event stream", func(t *testing.T) {
		from, to := r.peerLogin("silent"), r.peerLogin("silent")
		streams := r.srv.poller.kind(pollStream)
		open := streams.Load()
		dial("GET /api/v1/peer/stream?token=" + url.QueryEscape(to.tok) + " HTTP/1.1\r\nHost: relay\r\n\r\n")
		waitFor(t, 10*time.Second, func() bool { return streams.Load() > open }, "the stream open")
		data := strings.Repeat("z", 60_000)
		for range 100 { // 6 MB, far past the socket's buffers
			r.fanOut(from, "", data)
		}
		waitFor(t, 10*time.Second, func() bool { return streams.Load() == open }, "the stream that never reads ended")
	})
	t.Run("a streamed /via/ answer", func(t *testing.T) {
		dial("GET /via/silent/big HTTP/1.1\r\nHost: relay\r\n\r\n")
		var got []leased
		waitFor(t, 10*time.Second, func() bool { got = r.pullReqs("silent", testKey, nil); return len(got) == 1 }, "queued")
		rid := got[0].RID
		require.Equal(t, http.StatusOK, r.head("silent", rid, nil, "").Status)
		part := bytes.Repeat([]byte("b"), 256<<10)
		offset := 0
		waitFor(t, 10*time.Second, func() bool {
			rep := r.part("silent", rid, offset, part, false)
			if rep.errorCode() == "cancelled" {
				return true
			}
			require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
			offset += len(part)
			return false
		}, "the SimServer told its caller is gone")
		assert.Less(t, offset, 64<<20, "withdrawn long before the stream ended")
	})
}
