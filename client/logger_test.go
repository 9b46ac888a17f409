// Where the failures that do not end a call go: WithLogger's *slog.Logger
// with attributes, WithErrorLog's function, or slog.Default().

package client_test

import (
	"context"
	"log/slog"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/c2cvia/c2cvia/client"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// records is a slog.Handler that keeps what it gets, for a test to wait on.
type records struct {
	mu    sync.Mutex
	got   []slog.Record
	added chan struct{} // 1-buffered: a record came
}

func newRecords() *records { return &records{added: make(chan struct{}, 1)} }

func (h *records) logger() *slog.Logger { return slog.New(h) }

func (h *records) Enabled(context.Context, slog.Level) bool { return true }
func (h *records) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *records) WithGroup(string) slog.Handler            { return h }

func (h *records) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	h.got = append(h.got, r.Clone())
	h.mu.Unlock()
	select {
	case h.added <- struct{}{}:
	default:
	}
	return nil
}

// await waits for a record whose message is msg and returns its level and
// attributes.
func (h *records) await(t *testing.T, msg string) (slog.Level, map[string]slog.Value) {
	t.Helper()
	deadline := time.After(within)
	for {
		h.mu.Lock()
		for _, r := range h.got {
			if r.Message == msg {
				attrs := map[string]slog.Value{}
				r.Attrs(func(a slog.Attr) bool {
					attrs[a.Key] = a.Value
					return true
				})
				h.mu.Unlock()
				return r.Level, attrs
			}
		}
		h.mu.Unlock()
		select {
		case <-h.added:
		case <-deadline:
			t.Fatalf("nothing logged as %q", msg)
		}
	}
}

// TestLoggerPanic: a handler's panic is logged at Error with the net, the
// rid, the panic as err, and the stack.
func TestLoggerPanic(t *testing.T) {
	t.Parallel()
	h := newRecords()
	net := testNet(t)
	serve(t, relayURL, net, testKey, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("boom") }),
		client.WithLogger(h.logger()))
	token, _ := rawLogin(t, net)
	rid := rawPush(t, token, `{"simEndpoint":"/"}`)
	assert.Contains(t, string(rawResult(t, token, rid)), `"simStatus":500`)
	level, attrs := h.await(t, "c2cvia: handler panicked: answering 500")
	assert.Equal(t, slog.LevelError, level)
	assert.Equal(t, net, attrs["net"].String())
	assert.Equal(t, rid, attrs["rid"].String())
	assert.Equal(t, "panic: boom", attrs["err"].String())
	assert.Contains(t, attrs["stack"].String(), "goroutine")
}

// TestLoggerRetry: a retried poll is logged at Warn with the net, the
// relay's status and code, and the *Error as err; with WithErrorLog too,
// both get it.
func TestLoggerRetry(t *testing.T) {
	t.Parallel()
	h := newRecords()
	errs := newErrorLog()
	f := newFront(t)
	net := testNet(t)
	f.failNext(pathPullReqSmart, 1, relayReply(http.StatusServiceUnavailable, "server_busy"))
	serve(t, f.URL, net, testKey, served, client.WithLogger(h.logger()), errs.option(),
		client.WithBackoff(time.Millisecond, time.Millisecond))
	level, attrs := h.await(t, "c2cvia: polling for requests: retrying")
	assert.Equal(t, slog.LevelWarn, level)
	assert.Equal(t, net, attrs["net"].String())
	assert.Equal(t, int64(503), attrs["status"].Int64())
	assert.Equal(t, "server_busy", attrs["code"].String())
	err, ok := attrs["err"].Any().(error)
	require.True(t, ok)
	assert.ErrorIs(t, err, client.ErrServerBusy)
	logged := errs.next(t)
	assert.ErrorIs(t, logged, client.ErrServerBusy)
	assert.Contains(t, logged.Error(), "net="+net)
}

// TestLoggerRefusedAnswer: an answer the relay refuses (a status past
// 599) is logged at Error with its rid.
func TestLoggerRefusedAnswer(t *testing.T) {
	t.Parallel()
	h := newRecords()
	net := testNet(t)
	serve(t, relayURL, net, testKey, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(999) }),
		client.WithLogger(h.logger()))
	token, _ := rawLogin(t, net)
	rid := rawPush(t, token, `{"simEndpoint":"/"}`)
	assert.Contains(t, string(rawResult(t, token, rid)), `"simStatus":502`)
	level, attrs := h.await(t, "c2cvia: the relay refused an answer: answering 502")
	assert.Equal(t, slog.LevelError, level)
	assert.Equal(t, rid, attrs["rid"].String())
	assert.Equal(t, "invalid_sim_res", attrs["code"].String())
}

// TestLoggerRelogin: a Session's new login is logged at Info with both
// peer_ids.
func TestLoggerRelogin(t *testing.T) {
	t.Parallel()
	h := newRecords()
	f := expiringFront(t)
	s := login(t, f.URL, testNet(t), client.WithLogger(h.logger()))
	old := s.PeerID()
	f.advance(tokenTTL)
	_, err := s.Peers(context.Background())
	require.NoError(t, err)
	level, attrs := h.await(t, "c2cvia: logged in again: the token expired")
	assert.Equal(t, slog.LevelInfo, level)
	assert.Equal(t, old, attrs["old_peer_id"].String())
	assert.Equal(t, s.PeerID(), attrs["peer_id"].String())
}

// TestLoggerDefault: without WithLogger or WithErrorLog, slog.Default()
// as it is when the line is logged gets it; WithErrorLog alone replaces
// it. Not parallel: it sets the default logger.
func TestLoggerDefault(t *testing.T) {
	h := newRecords()
	prev := slog.Default()
	t.Cleanup(func() { slog.SetDefault(prev) })

	slog.SetDefault(h.logger())
	f := newFront(t)
	f.failNext(pathPullReqSmart, 1, relayReply(http.StatusServiceUnavailable, "server_busy"))
	errs := newErrorLog()
	quiet := serve(t, f.URL, testNet(t), testKey, served, errs.option(), client.WithBackoff(time.Millisecond, time.Millisecond))
	assert.ErrorIs(t, errs.next(t), client.ErrServerBusy)
	assert.ErrorIs(t, quiet.stop(), context.Canceled)
	h.mu.Lock()
	assert.Empty(t, h.got, "WithErrorLog alone: nothing on the default logger")
	h.mu.Unlock()

	f = newFront(t)
	f.failNext(pathPullReqSmart, 1, relayReply(http.StatusServiceUnavailable, "server_busy"))
	serve(t, f.URL, testNet(t), testKey, served, client.WithBackoff(time.Millisecond, time.Millisecond))
	level, _ := h.await(t, "c2cvia: polling for requests: retrying")
	assert.Equal(t, slog.LevelWarn, level)
}
