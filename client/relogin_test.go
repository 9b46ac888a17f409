// A Session's new login when its token expires: the relay's clock, as far
// as logins go, is a front's (expireTokens), which the tests move past the
// token's time to live.

package client_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/c2cvia/c2cvia/client"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tokenTTL is the login's time to live by the front's clock in these tests.
const tokenTTL = time.Hour

// expiringFront is a front whose logins expire after tokenTTL by its clock.
func expiringFront(t *testing.T) *front {
	t.Helper()
	f := newFront(t)
	f.expireTokens(tokenTTL)
	return f
}

// TestReloginCalls: each kind of call that meets token_expired logs in
// again once and is made again, and works; the Session's token, peer_id
// and expiry are the new login's.
func TestReloginCalls(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		path string
		do   func(ctx context.Context, s *client.Session, net string) error
	}{
		{"Send", pathPeerSend, func(ctx context.Context, s *client.Session, _ string) error {
			_, err := s.Send(ctx, s.PeerID(), "to myself")
			return err
		}},
		{"Publish", "/api/v1/peer/publish", func(ctx context.Context, s *client.Session, _ string) error {
			_, _, err := s.Publish(ctx, "news", "x")
			return err
		}},
		{"Broadcast", "/api/v1/peer/broadcast", func(ctx context.Context, s *client.Session, _ string) error {
			_, _, err := s.Broadcast(ctx, "x")
			return err
		}},
		{"Subscribe", pathSubscribe, func(ctx context.Context, s *client.Session, _ string) error { return s.Subscribe(ctx, "news") }},
		{"Unsubscribe", "/api/v1/peer/unsubscribe", func(ctx context.Context, s *client.Session, _ string) error {
			return s.Unsubscribe(ctx, "news")
		}},
		{"Peers", pathPeers, func(ctx context.Context, s *client.Session, _ string) error {
			_, err := s.Peers(ctx)
			return err
		}},
		{"HTTPClient", pathPushReq, func(ctx context.Context, s *client.Session, net string) error {
			srv := serve(t, relayURL, net, testKey, served)
			defer srv.stop()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://c2cvia/", nil)
			resp, err := s.HTTPClient().Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			body, err := io.ReadAll(resp.Body)
			assert.Equal(t, "served", string(body))
			return err
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := expiringFront(t)
			net := testNet(t)
			ctx, cancel := context.WithTimeout(context.Background(), within)
			defer cancel()
			s, err := client.Login(ctx, f.URL, net)
			require.NoError(t, err)
			token, peer, expires := s.Token(), s.PeerID(), s.ExpiresAt()

			f.advance(tokenTTL)
			require.NoError(t, tc.do(ctx, s, net))
			assert.Equal(t, 2, f.count(pathLogin), "one new login")
			assert.Equal(t, 2, f.count(tc.path), "the call, and the call again")
			assert.NotEqual(t, token, s.Token())
			assert.NotEqual(t, peer, s.PeerID())
			assert.False(t, s.ExpiresAt().Before(expires))
		})
	}
}

// TestReloginOnlyForTokenExpired: another 401 (unknown_token) is the
// caller's to handle: no new login.
func TestReloginOnlyForTokenExpired(t *testing.T) {
	t.Parallel()
	f := expiringFront(t)
	s := login(t, f.URL, testNet(t))
	f.failNext(pathPeerSend, 1, relayReply(http.StatusUnauthorized, "unknown_token"))
	_, err := s.Send(context.Background(), s.PeerID(), "x")
	assert.ErrorIs(t, err, client.ErrUnknownToken)
	assert.Equal(t, 1, f.count(pathLogin))
	assert.Equal(t, 1, f.count(pathPeerSend))
}

// TestReloginOnce: a call whose new login's token is refused as expired
// too gives up with token_expired, after one new login.
func TestReloginOnce(t *testing.T) {
	t.Parallel()
	f := expiringFront(t)
	s := login(t, f.URL, testNet(t))
	f.advance(tokenTTL)
	f.failNext(pathPeers, 2, relayReply(http.StatusUnauthorized, "token_expired"))
	_, err := s.Peers(context.Background())
	assert.ErrorIs(t, err, client.ErrTokenExpired)
	assert.Equal(t, 2, f.count(pathLogin))
	assert.Equal(t, 2, f.count(pathPeers))
}

// TestReloginConcurrent: calls that meet the expiry at once share one new
// login, and reading the Session meanwhile is no data race.
func TestReloginConcurrent(t *testing.T) {
	t.Parallel()
	f := expiringFront(t)
	s := login(t, f.URL, testNet(t))
	f.advance(tokenTTL)
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			_, err := s.Peers(context.Background())
			errs <- err
			// What a caller reads while others log in again (go test -race).
			_, _, _, _ = s.Net, s.Token(), s.PeerID(), s.ExpiresAt()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		assert.NoError(t, err)
	}
	assert.Equal(t, 2, f.count(pathLogin))
}

// TestReloginMessages: a running Messages goes on after its last message
// under the new login, which is subscribed to the old one's topics again;
// what was sent to the old peer_id after it expired does not come.
func TestReloginMessages(t *testing.T) {
	t.Parallel()
	f := expiringFront(t)
	net := testNet(t)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	// A short wait: the poll open when the clock moves ends soon, and the
	// next one meets the expiry.
	bob, err := client.Login(ctx, f.URL, net, client.WithWait(100*time.Millisecond))
	require.NoError(t, err)
	require.NoError(t, bob.Subscribe(ctx, "news"))
	require.NoError(t, bob.Subscribe(ctx, "sport"))
	require.NoError(t, bob.Unsubscribe(ctx, "sport"))
	ada := login(t, relayURL, net)
	oldPeer := bob.PeerID()

	got := make(chan string, 10)
	go func() {
		for m, err := range bob.Messages(ctx) {
			if err != nil {
				got <- "error: " + err.Error()
				return
			}
			var text string
			_ = json.Unmarshal(m.Data, &text)
			got <- text
		}
	}()
	next := func() string {
		t.Helper()
		select {
		case text := <-got:
			return text
		case <-ctx.Done():
			t.Fatal("no message")
			return ""
		}
	}
	_, err = ada.Send(ctx, oldPeer, "before")
	require.NoError(t, err)
	assert.Equal(t, "before", next())

	f.advance(tokenTTL)
	f.awaitCalls(t, pathLogin, 2)
	f.awaitCalls(t, pathSubscribe, 3) // news, sport, and news again
	assert.Equal(t, map[string]any{"topic": "news"}, f.body(t, pathSubscribe, 2))
	require.NotEqual(t, oldPeer, bob.PeerID())

	_, err = ada.Send(ctx, oldPeer, "to the old login") // it may still be valid at the relay: nobody reads it
	require.NoError(t, err)
	_, err = ada.Send(ctx, bob.PeerID(), "after")
	require.NoError(t, err)
	_, _, err = ada.Publish(ctx, "news", "published")
	require.NoError(t, err)
	assert.Equal(t, "after", next())
	assert.Equal(t, "published", next())
	assert.Equal(t, 2, f.count(pathLogin))
}

// TestReloginHTTPClientWaiting: the token expires while a request waits
// for its answer. A GET is pushed again under the new login and answered;
// a POST fails with ErrTokenExpired (only the old token reads its answer),
// and the Session works on with the new login.
func TestReloginHTTPClientWaiting(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		method string
		header http.Header
		again  bool
	}{
		{http.MethodGet, nil, true},
		{http.MethodPost, nil, false},
		{http.MethodPost, http.Header{"Idempotency-Key": {"k1"}}, true},
	} {
		t.Run(tc.method+" "+tc.header.Get("Idempotency-Key"), func(t *testing.T) {
			t.Parallel()
			f := expiringFront(t)
			net := testNet(t)
			ctx, cancel := context.WithTimeout(context.Background(), within)
			defer cancel()
			s, err := client.Login(ctx, f.URL, net, client.WithWait(100*time.Millisecond))
			require.NoError(t, err)
			done := make(chan error, 1)
			go func() {
				req, _ := http.NewRequestWithContext(ctx, tc.method, "http://c2cvia/x", nil)
				for k, v := range tc.header {
					req.Header[k] = v
				}
				resp, err := s.HTTPClient().Do(req)
				if err == nil {
					resp.Body.Close()
				}
				done <- err
			}()
			f.awaitCalls(t, pathPullSmart, 1) // pushed, and waiting
			f.advance(tokenTTL)
			f.awaitCalls(t, pathLogin, 2)
			if !tc.again {
				err := <-done
				assert.ErrorIs(t, err, client.ErrTokenExpired)
				assert.Equal(t, 1, f.count(pathPushReq), "not pushed again")
				_, err = s.Peers(ctx)
				assert.NoError(t, err, "the session works with its new login")
				return
			}
			serve(t, relayURL, net, testKey, served)
			select {
			case err := <-done:
				assert.NoError(t, err)
			case <-ctx.Done():
				t.Fatal("the request did not end")
			}
			assert.Equal(t, 2, f.count(pathPushReq), "pushed again under the new login")
		})
	}
}
