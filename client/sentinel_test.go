// The sentinels callers test failures against with errors.Is, and the
// network's failures, which stay what they are.

package client_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/c2cvia/c2cvia/client"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sentinels are every sentinel and the relay codes it matches.
var sentinels = []struct {
	name   string
	err    error
	codes  []string // with status, each an *Error that errors.Is matches
	status int
}{
	{"ErrTokenExpired", client.ErrTokenExpired, []string{"token_expired"}, 401},
	{"ErrUnknownToken", client.ErrUnknownToken, []string{"unknown_token"}, 401},
	{"ErrWrongKey", client.ErrWrongKey, []string{"wrong_key"}, 403},
	{"ErrNotFound", client.ErrNotFound, []string{"not_found"}, 404},
	{"ErrUnknownPeer", client.ErrUnknownPeer, []string{"unknown_peer"}, 404},
	{"ErrAnswered", client.ErrAnswered, []string{"already_answered"}, 409},
	{"ErrExpired", client.ErrExpired, []string{"expired"}, 410},
	{"ErrCancelled", client.ErrCancelled, []string{"cancelled"}, 410},
	{"ErrGone", client.ErrGone, []string{"expired", "failed", "cancelled", "aborted"}, 410},
	{"ErrRateLimited", client.ErrRateLimited, []string{"rate_limited"}, 429},
	{"ErrQueueFull", client.ErrQueueFull, []string{"queue_full"}, 429},
	{"ErrNetFull", client.ErrNetFull, []string{"net_full"}, 429},
	{"ErrServerBusy", client.ErrServerBusy, []string{"server_busy"}, 503},
	{"ErrStorageFull", client.ErrStorageFull, []string{"store_full", "net_store_full", "addr_store_full", "unserved_store_full", "disk_full"}, 507},
}

// TestSentinels: errors.Is matches each sentinel's codes, wrapped or not,
// and no other sentinel's; errors.As reaches the *Error.
func TestSentinels(t *testing.T) {
	t.Parallel()
	for _, tc := range sentinels {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, code := range tc.codes {
				var err error = &client.Error{Status: tc.status, Code: code, Message: "from the relay", RetryAfter: time.Second}
				err = fmt.Errorf("c2cvia: a call: %w", err)
				assert.ErrorIs(t, err, tc.err, code)
				var e *client.Error
				require.ErrorAs(t, err, &e)
				assert.Equal(t, code, e.Code)
				for _, other := range sentinels {
					if other.err != tc.err && !sameFamily(other.codes, code) {
						assert.NotErrorIs(t, err, other.err, "%s is not %s", code, other.name)
					}
				}
			}
			if e := tc.err.(*client.Error); e.Code != "" {
				assert.NotErrorIs(t, &client.Error{Status: tc.status, Code: "something_else"}, tc.err)
			} else { // a sentinel of a status matches every code of it
				assert.ErrorIs(t, &client.Error{Status: tc.status, Code: "something_else"}, tc.err)
				assert.NotErrorIs(t, &client.Error{Status: 500, Code: tc.codes[0]}, tc.err)
			}
			assert.NotErrorIs(t, errors.New(tc.codes[0]), tc.err)
		})
	}
}

func sameFamily(codes []string, code string) bool {
	for _, c := range codes {
		if c == code {
			return true
		}
	}
	return false
}

// TestSentinelsLive: what the relay answers matches the sentinels.
func TestSentinelsLive(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	net := testNet(t)
	s := login(t, relayURL, net)

	_, err := s.Send(ctx, "no-such-peer-000", "x")
	assert.ErrorIs(t, err, client.ErrUnknownPeer)

	other := login(t, relayURL, net)
	client.SetToken(other, "not-a-token")
	_, err = other.Peers(ctx)
	assert.ErrorIs(t, err, client.ErrUnknownToken)

	status, _ := call(t, "/api/v1/server/pullreqsmart", testKey, map[string]any{"net": net, "wait": 0}) // claims the net
	require.Equal(t, http.StatusOK, status)
	err = client.Serve(ctx, relayURL, net, "another-key-0123456789", served)
	assert.ErrorIs(t, err, client.ErrWrongKey)

	_, err = client.Login(ctx, relayURL, "no spaces")
	var e *client.Error
	require.ErrorAs(t, err, &e)
	assert.Equal(t, "invalid_net", e.Code)
	assert.NotErrorIs(t, err, client.ErrNotFound)
}

// TestRetryAfter: the relay's Retry-After reaches the *Error of a call that
// gave up, and the retry waited at least that long.
func TestRetryAfter(t *testing.T) {
	t.Parallel()
	f := newFront(t)
	s := login(t, f.URL, testNet(t), client.WithRetries(1), client.WithBackoff(time.Millisecond, time.Millisecond))
	f.failNext(pathPeerSend, 2, reply{status: 429, header: map[string]string{"Retry-After": "1", "Content-Type": "application/json"},
		body: `{"error":{"code":"queue_full","message":"injected by the test"}}`})
	began := time.Now()
	_, err := s.Send(context.Background(), s.PeerID(), "x")
	assert.ErrorIs(t, err, client.ErrQueueFull)
	assert.Equal(t, time.Second, relayError(t, err).RetryAfter)
	assert.GreaterOrEqual(t, time.Since(began), time.Second, "the retry waited for Retry-After")
	assert.Equal(t, 2, f.count(pathPeerSend))
}

// TestNetworkErrors: a failure of the network or of the caller's context
// is no *Error: it stays what it is, for errors.Is and errors.As.
func TestNetworkErrors(t *testing.T) {
	t.Parallel()
	s := login(t, relayURL, testNet(t))

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Send(ctx, s.PeerID(), "x")
	assert.ErrorIs(t, err, context.Canceled)
	resp, err := s.HTTPClient().Do(mustRequest(t, ctx, "http://c2cvia/"))
	if err == nil {
		resp.Body.Close()
	}
	assert.ErrorIs(t, err, context.Canceled)

	dctx, dcancel := context.WithTimeout(context.Background(), time.Nanosecond)
	defer dcancel()
	<-dctx.Done()
	_, err = s.Peers(dctx)
	assert.ErrorIs(t, err, context.DeadlineExceeded)

	// A port nobody listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	closed := "http://" + l.Addr().String()
	require.NoError(t, l.Close())
	_, err = client.Login(context.Background(), closed, "x", client.WithRetries(0))
	var op *net.OpError
	assert.ErrorAs(t, err, &op)
	var e *client.Error
	assert.NotErrorAs(t, err, &e)
}

func mustRequest(t *testing.T, ctx context.Context, u string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	require.NoError(t, err)
	return req
}
