// Failures as the caller sees them: what the relay (or a proxy in front of
// it) answers becomes an *Error with the status, code, message and
// Retry-After; bad arguments to Login and Serve fail at once.

package client_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/c2cvia/c2cvia/client"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestCallReplies: one call to the relay, through a front that can answer
// in its place, and what it decodes to.
func TestCallReplies(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		net        string
		inject     *reply // the front's answer instead of the relay's
		status     int
		retryAfter time.Duration
		err        *client.Error // nil: success, unless otherError
		otherErr   bool          // an error that is not an *Error
	}{
		{name: "success", net: "fine", status: 200},
		{name: "the relay's refusal", net: "no spaces", status: 400,
			err: &client.Error{Status: 400, Code: "invalid_net", Message: "net must be 1-64 characters of A-Z a-z 0-9 . _ -"}},
		{name: "429 with Retry-After", net: "fine",
			inject: &reply{status: 429, header: map[string]string{"Retry-After": "7", "Content-Type": "application/json"},
				body: `{"error":{"code":"rate_limited","message":"too many calls"}}`},
			status: 429, retryAfter: 7 * time.Second, err: &client.Error{Status: 429, Code: "rate_limited", Message: "too many calls", RetryAfter: 7 * time.Second}},
		{name: "a proxy's 503 with Retry-After", net: "fine",
			inject: &reply{status: 503, header: map[string]string{"Retry-After": "2"}, body: "relay down for maintenance\n"},
			status: 503, retryAfter: 2 * time.Second, err: &client.Error{Status: 503, Code: "http_503", Message: "relay down for maintenance", RetryAfter: 2 * time.Second}},
		{name: "a proxy's 502 page", net: "fine",
			inject: &reply{status: 502, header: map[string]string{"Content-Type": "text/html"}, body: "<html><body>Bad Gateway</body></html>\n"},
			status: 502, err: &client.Error{Status: 502, Code: "http_502", Message: "<html><body>Bad Gateway</body></html>"}},
		{name: "an empty 500", net: "fine", inject: &reply{status: 500},
			status: 500, err: &client.Error{Status: 500, Code: "http_500", Message: "Internal Server Error"}},
		{name: "a long page is cut at 200 bytes", net: "fine", inject: &reply{status: 502, body: strings.Repeat("x", 300)},
			status: 502, err: &client.Error{Status: 502, Code: "http_502", Message: strings.Repeat("x", 200)}},
		{name: "a 200 that is not JSON", net: "fine", inject: &reply{status: 200, body: "<html>a captive portal</html>"},
			status: 200, otherErr: true},
		{name: "a dropped connection", net: "fine", inject: &reply{drop: true}, otherErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFront(t)
			if tc.inject != nil {
				f.failNext(pathLogin, 1, *tc.inject)
			}
			var out struct {
				Token string `json:"token"`
			}
			status, retryAfter, err := client.Call(context.Background(), f.URL, pathLogin, "", map[string]string{"net": tc.net}, &out)
			assert.Equal(t, tc.status, status)
			assert.Equal(t, tc.retryAfter, retryAfter)
			switch {
			case tc.otherErr:
				require.Error(t, err)
				var e *client.Error
				assert.NotErrorAs(t, err, &e)
			case tc.err != nil:
				assert.Equal(t, tc.err, relayError(t, err))
			default:
				require.NoError(t, err)
				assert.NotEmpty(t, out.Token)
			}
		})
	}
}

// TestLoginArguments: what Login makes of its arguments.
func TestLoginArguments(t *testing.T) {
	t.Parallel()
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name      string
		ctx       context.Context
		relay     string
		net       string
		status    int    // an *Error with this status and code
		code      string //
		otherErr  bool   // an error that is not an *Error
		cancelled bool   // context.Canceled
	}{
		{name: "a net", relay: relayURL, net: "fine"},
		{name: "a relay URL with a trailing slash", relay: relayURL + "/", net: "fine"},
		{name: "a net with a space", relay: relayURL, net: "no spaces", status: 400, code: "invalid_net"},
		{name: "no net", relay: relayURL, net: "", status: 400, code: "missing_param"},
		{name: "a net of 65 characters", relay: relayURL, net: strings.Repeat("n", 65), status: 400, code: "invalid_net"},
		{name: "no relay URL", relay: "", net: "fine", otherErr: true},
		{name: "a relay URL that does not parse", relay: "http://[::1", net: "fine", otherErr: true},
		{name: "a relay that is not there", relay: "http://127.0.0.1:1", net: "fine", otherErr: true},
		{name: "a context that has ended", ctx: cancelled, relay: relayURL, net: "fine", cancelled: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := tc.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			s, err := client.Login(ctx, tc.relay, tc.net)
			switch {
			case tc.cancelled:
				assert.ErrorIs(t, err, context.Canceled)
				assert.Nil(t, s)
			case tc.otherErr:
				require.Error(t, err)
				var e *client.Error
				assert.NotErrorAs(t, err, &e)
				assert.Nil(t, s)
			case tc.code != "":
				e := relayError(t, err)
				assert.Equal(t, tc.status, e.Status)
				assert.Equal(t, tc.code, e.Code)
				assert.NotEmpty(t, e.Message)
				assert.Nil(t, s)
			default:
				require.NoError(t, err)
				assert.Equal(t, tc.net, s.Net)
				assert.Len(t, s.PeerID(), 16)
				assert.NotEmpty(t, s.Token())
				assert.NotEqual(t, s.Token(), s.PeerID())
				assert.WithinRange(t, s.ExpiresAt(), time.Now().Add(23*time.Hour), time.Now().Add(25*time.Hour), "the relay's 24h token TTL")
			}
		})
	}
}

// TestServeRefusals: refusals that will not pass end Serve with the
// relay's *client.Error, before any handler runs.
func TestServeRefusals(t *testing.T) {
	t.Parallel()
	claimed := testNet(t)
	status, reply := call(t, pathPullReqSmart, testKey, map[string]any{"net": claimed, "wait": 0}) // claims it
	require.Equal(t, http.StatusOK, status, "%s", reply["error"])
	for _, tc := range []struct {
		name, net, key string
		status         int
		code           string
	}{
		{"a wrong key", claimed, "another-key-0123456789", 403, "wrong_key"},
		{"no key", claimed, "", 401, "missing_key"},
		{"a key under 16 characters", "unclaimed-" + claimed, "short", 400, "weak_key"},
		{"a bad net", "no spaces", testKey, 400, "invalid_net"},
		{"no net", "", testKey, 400, "missing_param"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			handled := make(chan struct{}, 1)
			h := http.HandlerFunc(func(http.ResponseWriter, *http.Request) { handled <- struct{}{} })
			e := relayError(t, serve(t, relayURL, tc.net, tc.key, h).ended(t))
			assert.Equal(t, tc.status, e.Status)
			assert.Equal(t, tc.code, e.Code)
			assert.NotEmpty(t, e.Message)
			assert.Empty(t, handled)
		})
	}
	t.Run("a context that has ended", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := client.Serve(ctx, relayURL, testNet(t), testKey, http.NotFoundHandler())
		assert.ErrorIs(t, err, context.Canceled)
	})
}

// TestSessionRefusals: what a Session's calls make of the relay's
// refusals, and of data that is no JSON.
func TestSessionRefusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		do     func(s *client.Session) error
		status int
		code   string // "": an error that is not an *Error
	}{
		{"Send to a peer not in the net", func(s *client.Session) error {
			_, err := s.Send(ctx, "no-such-peer-000", "hello?")
			return err
		}, 404, "unknown_peer"},
		{"Subscribe to a bad topic", func(s *client.Session) error { return s.Subscribe(ctx, "no spaces") }, 400, "invalid_topic"},
		{"Publish to a bad topic", func(s *client.Session) error {
			_, _, err := s.Publish(ctx, "a/b", "x")
			return err
		}, 400, "invalid_topic"},
		{"Send data that is no JSON", func(s *client.Session) error {
			_, err := s.Send(ctx, s.PeerID(), make(chan int))
			return err
		}, 0, ""},
		{"Send with a token the relay does not know", func(s *client.Session) error {
			client.SetToken(s, "not-a-token")
			_, err := s.Send(ctx, s.PeerID(), "x")
			return err
		}, 401, "unknown_token"},
		{"Broadcast with no token", func(s *client.Session) error {
			client.SetToken(s, "")
			_, _, err := s.Broadcast(ctx, "x")
			return err
		}, 401, "missing_token"},
		{"HTTPClient with a token the relay does not know", func(s *client.Session) error {
			client.SetToken(s, "not-a-token")
			resp, err := s.HTTPClient().Get("http://c2cvia/x")
			if err == nil {
				resp.Body.Close()
			}
			return err
		}, 401, "unknown_token"},
		{"Messages with a token the relay does not know", func(s *client.Session) error {
			client.SetToken(s, "not-a-token")
			var errs []error
			for _, err := range s.Messages(ctx) {
				errs = append(errs, err) // a refusal ends the iteration
			}
			if len(errs) != 1 {
				return errors.New("not exactly one error before the end")
			}
			return errs[0]
		}, 401, "unknown_token"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tc.do(login(t, relayURL, testNet(t)))
			if tc.code == "" {
				require.Error(t, err)
				var e *client.Error
				assert.NotErrorAs(t, err, &e)
				return
			}
			e := relayError(t, err)
			assert.Equal(t, tc.status, e.Status)
			assert.Equal(t, tc.code, e.Code)
		})
	}
}
