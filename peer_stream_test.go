// The peer event stream: its events, resuming, keep-alives, and how it ends.

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// TestPeerStream: events with id and data, resumable with Last-Event-ID or
// since, keep-alive comments while idle, counted as an open poll, and no
// goroutine left when the client goes.
func TestPeerStream(t *testing.T) {
	r := newTestRelay(t)
	a, b := r.peerLogin("alpha"), r.peerLogin("alpha")
	first := r.sendTo(a, b.id, map[string]any{"n": 1})
	http.DefaultClient.CloseIdleConnections()
	before := goleak.IgnoreCurrent()

	ctx, cancel := context.WithCancel(context.Background())
	s := openStream(t, ctx, r.URL+"/api/v1/peer/stream?token="+url.QueryEscape(b.tok), nil)
	assert.Equal(t, int64(1), r.srv.poller.open.Load(), "the stream counts as an open poll")

	ev := s.next(t, false)
	assert.Equal(t, strconv.FormatInt(first, 10), ev.id)
	var m peerMsg
	require.NoError(t, json.Unmarshal([]byte(ev.data), &m))
	assert.Equal(t, first, m.ID)
	assert.JSONEq(t, `{"n":1}`, string(m.Data))
	assert.JSONEq(t, string(r.pullMsgs(b, nil).Messages[0].Data), string(m.Data))
	// The same object as pullsmart's, byte for byte.
	pulled := r.get("/api/v1/peer/pullsmart", url.Values{"token": {b.tok}, "wait": {"0"}})
	assert.Contains(t, string(pulled.Body), ev.data)

	// Idle: a keep-alive comment each keepAlive of the relay's clock; then a
	// message is written the moment it is sent.
	r.waitAsleep(1)
	r.advance(keepAlive)
	s.next(t, true)
	second := r.sendTo(a, b.id, "two")
	ev = s.next(t, false)
	assert.Equal(t, strconv.FormatInt(second, 10), ev.id)
	assert.Contains(t, ev.data, `"data":"two"`)

	cancel() // the client goes
	s.body.Close()
	r.waitPolling(0)
	assert.Equal(t, 0, r.srv.poller.hub.size())
	http.DefaultClient.CloseIdleConnections()
	goleak.VerifyNone(t, before)

	// Resume after the first event: Last-Event-ID wins over since.
	third := r.sendTo(a, b.id, "three")
	for name, c := range map[string]struct {
		query  string
		header http.Header
	}{
		"Last-Event-ID": {"", http.Header{"Last-Event-Id": {strconv.FormatInt(first, 10)}}},
		"since":         {"&since=" + strconv.FormatInt(first, 10), nil},
		"both":          {"&since=0", http.Header{"Last-Event-Id": {strconv.FormatInt(first, 10)}}},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			s := openStream(t, ctx, r.URL+"/api/v1/peer/stream?token="+url.QueryEscape(b.tok)+c.query, c.header)
			defer s.body.Close()
			assert.Equal(t, strconv.FormatInt(second, 10), s.next(t, false).id)
			assert.Equal(t, strconv.FormatInt(third, 10), s.next(t, false).id)
		})
	}
}

// TestPeerStreamShutdown: shutting down ends an open stream cleanly.
func TestPeerStreamShutdown(t *testing.T) {
	r := newTestRelay(t)
	b := r.peerLogin("alpha")
	http.DefaultClient.CloseIdleConnections()
	before := goleak.IgnoreCurrent()
	s := openStream(t, context.Background(), r.URL+"/api/v1/peer/stream?token="+url.QueryEscape(b.tok), nil)
	r.waitPolling(1)
	r.srv.shutdown()
	s.end(t)
	r.waitPolling(0)
	assert.Equal(t, 0, r.srv.poller.hub.size())
	http.DefaultClient.CloseIdleConnections()
	goleak.VerifyNone(t, before)
}

// TestPeerStreamTokenExpires: a stream ends when its token expires, and the
// reconnect is refused with 401.
func TestPeerStreamTokenExpires(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	b := r.peerLogin("alpha")
	u := r.URL + "/api/v1/peer/stream?token=" + url.QueryEscape(b.tok)
	s := openStream(t, context.Background(), u, nil)
	r.waitAsleep(1)
	r.advance(24 * time.Hour) // the token's TTL, in one step: past every keep-alive
	s.end(t)
	rep := r.get("/api/v1/peer/stream", url.Values{"token": {b.tok}})
	assertErrorShape(t, rep, http.StatusUnauthorized, "token_expired")
}

// sseEvent is one event, or a comment when comment is set.
type sseEvent struct {
	id, data string
	comment  bool
}

// sseStream reads an event stream; its lines come from a goroutine, so a
// read can wait with a deadline.
type sseStream struct {
	body  interface{ Close() error }
	lines chan string
}

func openStream(t *testing.T, ctx context.Context, u string, header http.Header) *sseStream {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	require.NoError(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	assert.Equal(t, "no-store", resp.Header.Get("Cache-Control"))
	s := &sseStream{body: resp.Body, lines: make(chan string, 64)}
	go func() {
		defer close(s.lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			s.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() { resp.Body.Close() })
	return s
}

// next returns the next event (comment false) or keep-alive comment
// (comment true), skipping keep-alives while waiting for an event.
func (s *sseStream) next(t *testing.T, comment bool) sseEvent {
	t.Helper()
	deadline := time.After(10 * time.Second)
	var ev sseEvent
	for {
		select {
		case line, ok := <-s.lines:
			require.True(t, ok, "the stream ended")
			switch {
			case line == ": keep-alive":
				if comment {
					return sseEvent{comment: true}
				}
			case strings.HasPrefix(line, "id: "):
				ev.id = strings.TrimPrefix(line, "id: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = strings.TrimPrefix(line, "data: ")
			case line == "":
				if ev.id != "" && !comment {
					require.NotEmpty(t, ev.data, "an event has data")
					return ev
				}
				ev = sseEvent{}
			default:
				t.Fatalf("unexpected stream line %q", line)
			}
		case <-deadline:
			t.Fatalf("no %s within 10s", map[bool]string{true: "keep-alive", false: "event"}[comment])
		}
	}
}

// end waits for the relay to end the stream.
func (s *sseStream) end(t *testing.T) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-s.lines:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("the stream did not end within 10s")
		}
	}
}
