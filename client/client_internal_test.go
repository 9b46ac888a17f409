// What every call shares: the relay's failures as *Error, which of them are
// retried, the backoff between retries, the JSON sent, and the options'
// defaults and checks.

package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestReplyError(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		status int
		body   string
		header http.Header
		want   Error
	}{
		{"the relay's error shape", http.StatusForbidden, `{"error":{"code":"wrong_key","message":"this net is claimed by another key"}}`,
			nil, Error{Status: 403, Code: "wrong_key", Message: "this net is claimed by another key"}},
		{"a rate limit", http.StatusTooManyRequests, `{"error":{"code":"rate_limited","message":"too many calls"}}` + "\n", http.Header{"Retry-After": {"7"}},
			Error{RetryAfter: 7 * time.Second, Status: 429, Code: "rate_limited", Message: "too many calls"}},
		{"a proxy's page", http.StatusBadGateway, "<html><body>Bad Gateway</body></html>\n",
			nil, Error{Status: 502, Code: "http_502", Message: "<html><body>Bad Gateway</body></html>"}},
		{"an empty body", http.StatusServiceUnavailable, "", nil, Error{Status: 503, Code: "http_503", Message: "Service Unavailable"}},
		{"the shape without a code", http.StatusBadRequest, `{"error":{"message":"no code"}}`,
			nil, Error{Status: 400, Code: "http_400", Message: `{"error":{"message":"no code"}}`}},
		{"a long page is cut at 200 bytes", http.StatusInternalServerError, strings.Repeat("x", 300),
			nil, Error{Status: 500, Code: "http_500", Message: strings.Repeat("x", 200)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, &tc.want, replyError(tc.status, tc.header, []byte(tc.body)))
		})
	}
}

func TestErrorString(t *testing.T) {
	t.Parallel()
	err := error(&Error{Status: 403, Code: "wrong_key", Message: "this net is claimed by another key"})
	assert.Equal(t, "c2cvia: 403 wrong_key: this net is claimed by another key", err.Error())
}

// TestTransient: which failures Serve, Messages and a waiting request
// retry, and which end them.
func TestTransient(t *testing.T) {
	t.Parallel()
	netErr := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	for _, tc := range []struct {
		name      string
		err       error
		cancelled bool // the call's context has ended
		want      bool
	}{
		{"connection refused", netErr, false, true},
		{"connection reset", fmt.Errorf("read: %w", syscall.ECONNRESET), false, true},
		{"a reply cut short", io.ErrUnexpectedEOF, false, true},
		{"500", &Error{Status: 500}, false, true},
		{"502", &Error{Status: 502}, false, true},
		{"503", &Error{Status: 503}, false, true},
		{"504", &Error{Status: 504}, false, true},
		{"429", &Error{Status: 429}, false, true},
		{"408", &Error{Status: 408}, false, true},
		{"a wrapped 503", fmt.Errorf("polling: %w", &Error{Status: 503}), false, true},
		{"400 bad net", &Error{Status: 400, Code: "invalid_net"}, false, false},
		{"401 missing key", &Error{Status: 401, Code: "missing_key"}, false, false},
		{"401 expired token", &Error{Status: 401, Code: "token_expired"}, false, false},
		{"403 wrong key", &Error{Status: 403, Code: "wrong_key"}, false, false},
		{"404", &Error{Status: 404}, false, false},
		{"409", &Error{Status: 409}, false, false},
		{"410 expired", &Error{Status: 410, Code: "expired"}, false, false},
		{"413", &Error{Status: 413}, false, false},
		{"a wrapped 403", fmt.Errorf("polling: %w", &Error{Status: 403}), false, false},
		{"503 after the context ended", &Error{Status: 503}, true, false},
		{"a network error after the context ended", netErr, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tc.cancelled {
				cancel()
			}
			assert.Equal(t, tc.want, transient(ctx, tc.err))
		})
	}
}

// TestBackoff: each delay lies between half and all of 250 ms doubled per
// retry, capped at 30 s, at least Retry-After, and reset starts over; the
// options' own initial and cap count.
func TestBackoff(t *testing.T) {
	t.Parallel()
	ceiling := func(n int, initial, most time.Duration) time.Duration {
		d := initial
		for range n {
			d = min(d*2, most)
		}
		return d
	}
	for _, tc := range []struct {
		name          string
		opts          []Option
		initial, most time.Duration
	}{
		{"the defaults", nil, 250 * time.Millisecond, 30 * time.Second},
		{"WithBackoff", []Option{WithBackoff(10*time.Millisecond, 100*time.Millisecond)}, 10 * time.Millisecond, 100 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := newOptions(tc.opts)
			for range 50 { // the delays are drawn at random: try many
				b := o.backoff()
				for n := range 40 {
					d, c := b.next(0), ceiling(n, tc.initial, tc.most)
					require.GreaterOrEqual(t, d, c/2, "retry %d", n)
					require.LessOrEqual(t, d, c, "retry %d", n)
				}
				b.reset()
				d := b.next(0)
				require.GreaterOrEqual(t, d, tc.initial/2, "after reset")
				require.LessOrEqual(t, d, tc.initial, "after reset")
				assert.Equal(t, time.Hour, b.next(time.Hour), "Retry-After")
			}
		})
	}
}

func TestSleep(t *testing.T) {
	t.Parallel()
	assert.True(t, sleep(context.Background(), 0), "a delay that passed")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	assert.False(t, sleep(ctx, time.Hour), "a context that ended first")
}

func TestMarshal(t *testing.T) {
	t.Parallel()
	got, err := marshal(map[string]any{"s": "<a&b>", "raw": json.RawMessage(`{"n":12345678901234567890}`)})
	require.NoError(t, err)
	assert.Equal(t, `{"raw":{"n":12345678901234567890},"s":"<a&b>"}`, string(got), "compact, no HTML escaping, no newline")
	_, err = marshal(map[string]any{"data": make(chan int)})
	assert.Error(t, err)
	assert.Equal(t, 1.5, seconds(1500*time.Millisecond))
}

// TestOptions: the defaults, and what each option does with a value it
// does not take.
func TestOptions(t *testing.T) {
	t.Parallel()
	mine := &http.Client{}
	logged := errors.New("logged")
	var got error
	for _, tc := range []struct {
		name  string
		opts  []Option
		check func(t *testing.T, o options)
	}{
		{"defaults", nil, func(t *testing.T, o options) {
			assert.Equal(t, 4, o.concurrency)
			assert.Equal(t, 30*time.Second, o.lease)
			assert.Equal(t, 25*time.Second, o.wait)
			assert.Same(t, defaultHTTPClient, o.httpClient)
			assert.Nil(t, o.onError)
			assert.Nil(t, o.logger, "slog.Default() when a line is logged")
			assert.Equal(t, 2*time.Millisecond, o.linger)
			assert.Equal(t, 9, o.retries)
			assert.Equal(t, 250*time.Millisecond, o.backoffMin)
			assert.Equal(t, 30*time.Second, o.backoffMax)
		}},
		{"WithConcurrency", []Option{WithConcurrency(8)}, func(t *testing.T, o options) { assert.Equal(t, 8, o.concurrency) }},
		{"WithConcurrency(0) is 1", []Option{WithConcurrency(0)}, func(t *testing.T, o options) { assert.Equal(t, 1, o.concurrency) }},
		{"WithConcurrency(-3) is 1", []Option{WithConcurrency(-3)}, func(t *testing.T, o options) { assert.Equal(t, 1, o.concurrency) }},
		{"WithLease", []Option{WithLease(90 * time.Second)}, func(t *testing.T, o options) { assert.Equal(t, 90*time.Second, o.lease) }},
		{"WithLease(0) keeps the default", []Option{WithLease(0)}, func(t *testing.T, o options) { assert.Equal(t, 30*time.Second, o.lease) }},
		{"WithLease(-1s) keeps the default", []Option{WithLease(-time.Second)}, func(t *testing.T, o options) { assert.Equal(t, 30*time.Second, o.lease) }},
		{"WithWait", []Option{WithWait(5 * time.Second)}, func(t *testing.T, o options) { assert.Equal(t, 5*time.Second, o.wait) }},
		{"WithWait(0) keeps the default", []Option{WithWait(0)}, func(t *testing.T, o options) { assert.Equal(t, 25*time.Second, o.wait) }},
		{"WithLinger", []Option{WithLinger(time.Second)}, func(t *testing.T, o options) { assert.Equal(t, time.Second, o.linger) }},
		{"WithLinger(0) polls at once", []Option{WithLinger(0)}, func(t *testing.T, o options) { assert.Zero(t, o.linger) }},
		{"WithLinger(-1ms) keeps the default", []Option{WithLinger(-time.Millisecond)}, func(t *testing.T, o options) {
			assert.Equal(t, 2*time.Millisecond, o.linger)
		}},
		{"WithHTTPClient", []Option{WithHTTPClient(mine)}, func(t *testing.T, o options) { assert.Same(t, mine, o.httpClient) }},
		{"WithHTTPClient(nil) keeps the default", []Option{WithHTTPClient(nil)}, func(t *testing.T, o options) {
			assert.Same(t, defaultHTTPClient, o.httpClient)
		}},
		{"WithErrorLog", []Option{WithErrorLog(func(err error) { got = err })}, func(t *testing.T, o options) {
			o.onError(logged)
			assert.Same(t, logged, got)
		}},
		{"WithErrorLog(nil) keeps the default", []Option{WithErrorLog(nil)}, func(t *testing.T, o options) { assert.Nil(t, o.onError) }},
		{"WithRetries", []Option{WithRetries(2)}, func(t *testing.T, o options) { assert.Equal(t, 2, o.retries) }},
		{"WithRetries(0) tries once", []Option{WithRetries(0)}, func(t *testing.T, o options) { assert.Zero(t, o.retries) }},
		{"WithRetries(-1) keeps the default", []Option{WithRetries(-1)}, func(t *testing.T, o options) { assert.Equal(t, 9, o.retries) }},
		{"WithBackoff", []Option{WithBackoff(time.Second, time.Minute)}, func(t *testing.T, o options) {
			assert.Equal(t, time.Second, o.backoffMin)
			assert.Equal(t, time.Minute, o.backoffMax)
		}},
		{"WithBackoff(0, 0) keeps the defaults", []Option{WithBackoff(0, -time.Second)}, func(t *testing.T, o options) {
			assert.Equal(t, 250*time.Millisecond, o.backoffMin)
			assert.Equal(t, 30*time.Second, o.backoffMax)
		}},
		{"WithBackoff with a cap under the start", []Option{WithBackoff(time.Minute, time.Second)}, func(t *testing.T, o options) {
			assert.Equal(t, time.Minute, o.backoffMin)
			assert.Equal(t, time.Minute, o.backoffMax)
		}},
		{"the last one wins", []Option{WithConcurrency(2), WithConcurrency(6)}, func(t *testing.T, o options) { assert.Equal(t, 6, o.concurrency) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel() // got is WithErrorLog's case's alone
			tc.check(t, newOptions(tc.opts))
		})
	}
}

// TestDefaultHTTPClient: the default client keeps 100 idle connections to
// the relay, and has no timeout that would cut a long poll.
func TestDefaultHTTPClient(t *testing.T) {
	t.Parallel()
	tr, ok := defaultHTTPClient.Transport.(*http.Transport)
	require.True(t, ok)
	assert.NotSame(t, http.DefaultTransport, tr)
	assert.Equal(t, 100, tr.MaxIdleConnsPerHost)
	assert.NotNil(t, tr.Proxy, "HTTP_PROXY and friends still count")
	assert.Zero(t, defaultHTTPClient.Timeout)
}
