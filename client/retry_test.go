// Retries, through a front that fails the calls a test names: network
// errors, 5xx, 408 and 429 are retried with backoff; any other 4xx ends
// the call that got it.

package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/c2cvia/c2cvia/client"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// failure is a reply a call may meet, and whether it is retried.
type failure struct {
	name      string
	reply     reply
	transient bool
	status    int    // of the *Error reported; 0: a network error
	code      string // of the *Error reported
}

// failures a call may meet, and whether Serve, Messages and a waiting
// request retry it.
var failures = []failure{
	{"a proxy's 503", reply{status: 503, body: "relay down for maintenance"}, true, 503, "http_503"},
	{"a proxy's 502 page", reply{status: 502, header: map[string]string{"Content-Type": "text/html"}, body: "<html>Bad Gateway</html>"}, true, 502, "http_502"},
	{"the relay's 500", relayReply(500, "internal"), true, 500, "internal"},
	// Without Retry-After, which would make the test wait: TestCallReplies
	// checks that it is read.
	{"429", relayReply(429, "queue_full"), true, 429, "queue_full"},
	{"408", relayReply(408, "body_timeout"), true, 408, "body_timeout"},
	{"a dropped connection", reply{drop: true}, true, 0, ""},
	{"400", relayReply(400, "invalid_net"), false, 400, "invalid_net"},
	{"401", relayReply(401, "missing_key"), false, 401, "missing_key"},
	{"403 wrong key", relayReply(403, "wrong_key"), false, 403, "wrong_key"},
	{"a proxy's 404", reply{status: 404, body: "404 page not found"}, false, 404, "http_404"},
}

// checkReported requires err to be the failure reported as it should be.
func checkReported(t *testing.T, err error, status int, code string) {
	t.Helper()
	var e *client.Error
	if status == 0 {
		require.Error(t, err)
		assert.NotErrorAs(t, err, &e, "a network error: %v", err)
		return
	}
	require.ErrorAs(t, err, &e)
	assert.Equal(t, status, e.Status)
	assert.Equal(t, code, e.Code)
}

// eachFailure runs check for each of cases in a parallel subtest, with a
// net of its own and a front that fails the first call to path with it.
func eachFailure(t *testing.T, cases []failure, path string, check func(t *testing.T, tc failure, net string, f *front)) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			net := testNet(t)
			f := newFront(t)
			f.failNext(path, 1, tc.reply)
			check(t, tc, net, f)
		})
	}
}

// served is a handler that answers "served".
var served = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "served") })

// TestServeRetries: Serve's poll for requests meets each failure. It
// retries what may pass, reporting the failure to its error log, and then
// serves; anything else ends Serve with that *Error at once.
func TestServeRetries(t *testing.T) {
	t.Parallel()
	eachFailure(t, failures, pathPullReqSmart, func(t *testing.T, tc failure, net string, f *front) {
		errs := newErrorLog()
		srv := serve(t, f.URL, net, testKey, served, errs.option())
		if !tc.transient {
			checkReported(t, srv.ended(t), tc.status, tc.code)
			assert.Equal(t, 1, f.count(pathPullReqSmart), "not retried")
			errs.empty(t)
			return
		}
		checkReported(t, errs.next(t), tc.status, tc.code)
		token, _ := rawLogin(t, net)
		rid := rawPush(t, token, `{"simEndpoint":"/","simMethod":"GET"}`)
		assert.JSONEq(t, `{"simStatus":200,"simHeaders":{"Content-Type":"text/plain; charset=utf-8"},"simBody":"served"}`,
			string(rawResult(t, token, rid)))
		assert.True(t, srv.running())
		assert.ErrorIs(t, srv.stop(), context.Canceled)
		assert.GreaterOrEqual(t, f.count(pathPullReqSmart), 2)
	})
}

// TestHTTPClientRetries: a request's long poll for its answer meets each
// failure; it retries what may pass and gets the answer, and fails with
// anything else at once.
func TestHTTPClientRetries(t *testing.T) {
	t.Parallel()
	eachFailure(t, failures, pathPullSmart, func(t *testing.T, tc failure, net string, f *front) {
		s := login(t, f.URL, net)
		done := make(chan error, 1)
		go func() {
			resp, err := s.HTTPClient().Get("http://c2cvia/x")
			if err == nil {
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				if string(b) != "answered" {
					err = errors.New("the answer was " + string(b))
				}
			}
			done <- err
		}()
		if tc.transient {
			l := rawPull(t, net)
			rawAnswer(t, net, l.RID, `{"simBody":"answered"}`)
		}
		select {
		case err := <-done:
			if tc.transient {
				assert.NoError(t, err)
				assert.Equal(t, 2, f.count(pathPullSmart), "a failure, then the answer")
			} else {
				checkReported(t, err, tc.status, tc.code)
				assert.Equal(t, 1, f.count(pathPullSmart), "not retried")
			}
		case <-time.After(within):
			t.Fatal("the request did not end")
		}
	})
	t.Run("WithRetries(4): five failures in a row end the request", func(t *testing.T) {
		t.Parallel()
		f := newFront(t)
		f.failNext(pathPullSmart, 5, reply{status: 503, body: "down"})
		s := login(t, f.URL, testNet(t), client.WithRetries(4), client.WithBackoff(time.Millisecond, 10*time.Millisecond))
		ctx, cancel := context.WithTimeout(context.Background(), within) // not the relay's 5 min TTL
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://c2cvia/x", nil)
		require.NoError(t, err)
		resp, err := s.HTTPClient().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		checkReported(t, err, 503, "http_503")
		assert.Equal(t, 5, f.count(pathPullSmart))
	})
}

// TestServeAnswerRetries: posting a handler's answer by pushres meets a
// failure; what may pass is retried until the answer is in, anything else
// is reported and given up. The handler answers once the next poll waits
// at the relay, so its answer goes by pushres.
func TestServeAnswerRetries(t *testing.T) {
	t.Parallel()
	eachFailure(t, []failure{
		{name: "503", reply: reply{status: 503, body: "down"}, transient: true},
		{name: "a dropped connection", reply: reply{drop: true}, transient: true},
		{name: "409 already answered", reply: relayReply(409, "already_answered")},
	}, pathPushRes, func(t *testing.T, tc failure, net string, f *front) {
		errs := newErrorLog()
		parked := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// The poll that brought the request has ended, the next one waits.
			if !f.until(func(calls, open map[string]int) bool {
				return calls[pathPullReqSmart] >= 2 && open[pathPullReqSmart] == 1
			}) {
				panic("no poll waited at the relay while the handler ran")
			}
			_, _ = io.WriteString(w, "served")
		})
		serve(t, f.URL, net, testKey, parked, errs.option())
		token, _ := rawLogin(t, net)
		rid := rawPush(t, token, `{"simEndpoint":"/"}`)
		if tc.transient {
			assert.Contains(t, string(rawResult(t, token, rid)), `"simBody":"served"`)
			assert.Equal(t, 2, f.count(pathPushRes))
			errs.empty(t)
			return
		}
		e := relayError(t, errs.next(t))
		assert.Equal(t, 409, e.Status)
		assert.Equal(t, 1, f.count(pathPushRes), "not retried")
		status, _ := ridState(t, token, rid)
		assert.Equal(t, "delivered", status, "the answer was not posted")
	})
}

// TestMessagesRetries: Messages' long poll meets each failure; it
// retries what may pass, reporting it, and yields the message; anything
// else it yields as its error and ends.
func TestMessagesRetries(t *testing.T) {
	t.Parallel()
	eachFailure(t, failures, pathPeerPull, func(t *testing.T, tc failure, net string, f *front) {
		errs := newErrorLog()
		bob := login(t, f.URL, net, errs.option())
		ada := login(t, relayURL, net)
		_, err := ada.Send(context.Background(), bob.PeerID(), "hello")
		require.NoError(t, err)

		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		var got []json.RawMessage
		var ended []error
		for m, err := range bob.Messages(ctx) {
			if err != nil {
				ended = append(ended, err)
				continue
			}
			got = append(got, m.Data)
			break
		}
		if !tc.transient {
			require.Len(t, ended, 1, "one error, then the end")
			checkReported(t, ended[0], tc.status, tc.code)
			assert.Empty(t, got)
			assert.Equal(t, 1, f.count(pathPeerPull), "not retried")
			return
		}
		assert.Empty(t, ended)
		require.Len(t, got, 1)
		assert.Equal(t, `"hello"`, string(got[0]))
		checkReported(t, errs.next(t), tc.status, tc.code)
	})
}

// TestRetriesOption: each call of its own is tried WithRetries+1 times in
// all while the relay refuses it for now, and gives up with the last
// refusal; without the option, ten times.
func TestRetriesOption(t *testing.T) {
	t.Parallel()
	quick := client.WithBackoff(time.Millisecond, 5*time.Millisecond)
	for _, tc := range []struct {
		name string
		path string
		do   func(ctx context.Context, s *client.Session) error
	}{
		{"Send", pathPeerSend, func(ctx context.Context, s *client.Session) error {
			_, err := s.Send(ctx, s.PeerID(), "x")
			return err
		}},
		{"Publish", "/api/v1/peer/publish", func(ctx context.Context, s *client.Session) error {
			_, _, err := s.Publish(ctx, "news", "x")
			return err
		}},
		{"Broadcast", "/api/v1/peer/broadcast", func(ctx context.Context, s *client.Session) error {
			_, _, err := s.Broadcast(ctx, "x")
			return err
		}},
		{"Subscribe", pathSubscribe, func(ctx context.Context, s *client.Session) error { return s.Subscribe(ctx, "news") }},
		{"Unsubscribe", "/api/v1/peer/unsubscribe", func(ctx context.Context, s *client.Session) error { return s.Unsubscribe(ctx, "news") }},
		{"Peers", pathPeers, func(ctx context.Context, s *client.Session) error {
			_, err := s.Peers(ctx)
			return err
		}},
		{"HTTPClient", pathPushReq, func(ctx context.Context, s *client.Session) error {
			resp, err := s.HTTPClient().Do(mustRequest(t, ctx, "http://c2cvia/"))
			if err == nil {
				resp.Body.Close()
			}
			return err
		}},
	} {
		for _, retries := range []int{0, 2, -1} {
			t.Run(fmt.Sprintf("%s with WithRetries(%d)", tc.name, retries), func(t *testing.T) {
				t.Parallel()
				f := newFront(t)
				s := login(t, f.URL, testNet(t), client.WithRetries(retries), quick)
				f.failNext(tc.path, 12, relayReply(http.StatusServiceUnavailable, "server_busy"))
				ctx, cancel := context.WithTimeout(context.Background(), within)
				defer cancel()
				assert.ErrorIs(t, tc.do(ctx, s), client.ErrServerBusy)
				want := retries + 1
				if retries < 0 {
					want = client.DefaultRetries + 1
				}
				assert.Equal(t, want, f.count(tc.path))
			})
		}
	}
	t.Run("Login", func(t *testing.T) {
		t.Parallel()
		f := newFront(t)
		f.failNext(pathLogin, 3, relayReply(http.StatusTooManyRequests, "net_full"))
		_, err := client.Login(context.Background(), f.URL, testNet(t), client.WithRetries(2), quick)
		assert.ErrorIs(t, err, client.ErrNetFull)
		assert.Equal(t, 3, f.count(pathLogin))
		s, err := client.Login(context.Background(), f.URL, testNet(t), client.WithRetries(2), quick)
		require.NoError(t, err, "a refusal that passed")
		assert.NotEmpty(t, s.Token())
	})
}

// TestRetriesResend: after a network error, a call is sent again unless it
// is a request net/http would not send again (a POST without an
// Idempotency-Key): the relay may have stored it.
func TestRetriesResend(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		method string
		header http.Header
		calls  int
	}{
		{"GET", http.MethodGet, nil, 2},
		{"POST", http.MethodPost, nil, 1},
		{"POST with an Idempotency-Key", http.MethodPost, http.Header{"Idempotency-Key": {"k"}}, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFront(t)
			net := testNet(t)
			s := login(t, f.URL, net, client.WithBackoff(time.Millisecond, time.Millisecond))
			serve(t, relayURL, net, testKey, served)
			f.failNext(pathPushReq, 1, reply{drop: true})
			ctx, cancel := context.WithTimeout(context.Background(), within)
			defer cancel()
			req := mustRequest(t, ctx, "http://c2cvia/")
			req.Method, req.Header = tc.method, tc.header
			resp, err := s.HTTPClient().Do(req)
			if tc.calls == 1 {
				require.Error(t, err)
				var e *client.Error
				assert.NotErrorAs(t, err, &e, "the network's error")
			} else {
				require.NoError(t, err)
				resp.Body.Close()
			}
			assert.Equal(t, tc.calls, f.count(pathPushReq))
		})
	}
	t.Run("Send", func(t *testing.T) {
		t.Parallel()
		f := newFront(t)
		s := login(t, f.URL, testNet(t), client.WithBackoff(time.Millisecond, time.Millisecond))
		f.failNext(pathPeerSend, 1, reply{drop: true})
		_, err := s.Send(context.Background(), s.PeerID(), "x")
		require.NoError(t, err)
		assert.Equal(t, 2, f.count(pathPeerSend))
	})
}

// TestServeAnswerGivesUp: an answer the relay keeps refusing for now is
// posted WithRetries+1 times, then given up and logged.
func TestServeAnswerGivesUp(t *testing.T) {
	t.Parallel()
	f := newFront(t)
	net := testNet(t)
	errs := newErrorLog()
	parked := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The poll that brought the request has ended, the next one waits:
		// the answer goes by pushres.
		if !f.until(func(calls, open map[string]int) bool {
			return calls[pathPullReqSmart] >= 2 && open[pathPullReqSmart] == 1
		}) {
			panic("no poll waited at the relay while the handler ran")
		}
		_, _ = io.WriteString(w, "served")
	})
	f.failNext(pathPushRes, 10, relayReply(http.StatusServiceUnavailable, "server_busy"))
	serve(t, f.URL, net, testKey, parked, errs.option(), client.WithRetries(2), client.WithBackoff(time.Millisecond, time.Millisecond))
	token, _ := rawLogin(t, net)
	rid := rawPush(t, token, `{"simEndpoint":"/"}`)
	err := errs.next(t)
	assert.ErrorIs(t, err, client.ErrServerBusy)
	assert.Contains(t, err.Error(), "rid="+rid)
	assert.Equal(t, 3, f.count(pathPushRes))
}
