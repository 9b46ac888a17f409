// front: a reverse proxy in front of the test relay that fails on demand, for
// the retry and error tests. Everything it does not fail reaches the real
// relay.

package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Paths of the relay's API that the tests fail or watch.
const (
	pathLogin        = "/api/v1/client/login"
	pathPushReq      = "/api/v1/client/pushreq"
	pathPullSmart    = "/api/v1/client/pullsmart"
	pathPullReqSmart = "/api/v1/server/pullreqsmart"
	pathPushRes      = "/api/v1/server/pushres"
	pathExtend       = "/api/v1/server/extend"
	pathPushPart     = "/api/v1/server/pushpart"
	pathWatch        = "/api/v1/server/watch"
	pathCancel       = "/api/v1/client/cancel"
	pathPeerPull     = "/api/v1/peer/pullsmart"
	pathPeerSend     = "/api/v1/peer/send"
	pathSubscribe    = "/api/v1/peer/subscribe"
	pathPeers        = "/api/v1/peer/peers"
)

// reply is what the front answers instead of the relay: a status, headers
// and body, or (drop) a connection closed without an answer.
type reply struct {
	status int
	header map[string]string
	body   string
	drop   bool
}

// relayReply is a failure in the relay's own JSON error shape.
func relayReply(status int, code string) reply {
	return reply{status: status, header: map[string]string{"Content-Type": "application/json"},
		body: `{"error":{"code":"` + code + `","message":"injected by the test"}}`}
}

// front counts the calls per path, keeps their bodies, knows how many are
// open, and answers the next calls to a path with replies set by failNext.
type front struct {
	URL string

	mu       sync.Mutex
	calls    map[string]int
	open     map[string]int
	bodies   map[string][]json.RawMessage
	queries  map[string][]url.Values
	fails    map[string][]reply
	holds    map[string]chan struct{} // replies to path wait until it is closed
	changed  chan struct{}            // closed and replaced whenever a call starts or ends
	proxy    *httputil.ReverseProxy
	upstream *http.Transport

	// The relay's clock as far as logins go (expireTokens): a login's
	// token expires ttl after its login, by this clock, which only
	// advance moves.
	ttl    time.Duration
	now    time.Duration            // since the front started
	issued map[string]time.Duration // by token: when it logged in
}

func newFront(t testing.TB) *front {
	t.Helper()
	return newFrontTo(t, relayURL)
}

// newFrontTo is a front for the relay at relay.
func newFrontTo(t testing.TB, relay string) *front {
	t.Helper()
	target, err := url.Parse(relay)
	require.NoError(t, err)
	f := &front{calls: map[string]int{}, open: map[string]int{}, bodies: map[string][]json.RawMessage{},
		queries: map[string][]url.Values{},
		fails:   map[string][]reply{}, holds: map[string]chan struct{}{}, changed: make(chan struct{})}
	f.upstream = http.DefaultTransport.(*http.Transport).Clone()
	f.proxy = httputil.NewSingleHostReverseProxy(target)
	f.proxy.Transport = f.upstream
	f.proxy.ErrorLog = log.New(io.Discard, "", 0) // a caller that gives up is no news
	ts := httptest.NewServer(f)
	t.Cleanup(func() {
		ts.CloseClientConnections()
		ts.Close()
		f.upstream.CloseIdleConnections()
	})
	f.URL = ts.URL
	return f
}

// failNext answers the next times calls to path with r.
func (f *front) failNext(path string, times int, r reply) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range times {
		f.fails[path] = append(f.fails[path], r)
	}
}

func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	r.Body = io.NopCloser(bytes.NewReader(body))
	path := r.URL.Path

	f.mu.Lock()
	f.calls[path]++
	f.open[path]++
	f.bodies[path] = append(f.bodies[path], body)
	f.queries[path] = append(f.queries[path], r.URL.Query())
	fail, failing := reply{}, len(f.fails[path]) > 0
	hold := f.holds[path]
	if failing {
		fail, f.fails[path] = f.fails[path][0], f.fails[path][1:]
	}
	f.notify()
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.open[path]--
		f.notify()
		f.mu.Unlock()
	}()

	if f.ttl > 0 && !failing {
		if path == pathLogin {
			f.login(w, r)
			return
		}
		if f.expired(r) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":{"code":"token_expired","message":"the token has expired; log in again"}}`)
			return
		}
	}
	switch {
	case failing && fail.drop:
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	case failing:
		for k, v := range fail.header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(fail.status)
		_, _ = io.WriteString(w, fail.body)
	case hold != nil:
		// The relay does the call now; its reply waits for the test.
		rec := httptest.NewRecorder()
		f.proxy.ServeHTTP(rec, r.WithContext(context.WithoutCancel(r.Context())))
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	default:
		f.proxy.ServeHTTP(w, r)
	}
}

// expireTokens makes the front play the relay's clock for logins: a token
// the relay hands out through it expires ttl later by the front's clock,
// which stands still until advance moves it. Calls with an expired token
// get the relay's 401 token_expired; the relay's own --token-ttl should be
// no shorter, so that it does not expire them first.
func (f *front) expireTokens(ttl time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ttl, f.issued = ttl, map[string]time.Duration{}
}

// advance moves the front's clock by d.
func (f *front) advance(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now += d
}

// login passes a login on to the relay and notes when its token was
// issued.
func (f *front) login(w http.ResponseWriter, r *http.Request) {
	rec := httptest.NewRecorder()
	f.proxy.ServeHTTP(rec, r)
	var out struct {
		Token string `json:"token"`
	}
	if json.Unmarshal(rec.Body.Bytes(), &out) == nil && out.Token != "" {
		f.mu.Lock()
		f.issued[out.Token] = f.now
		f.mu.Unlock()
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// expired reports whether r's bearer token has expired by the front's
// clock.
func (f *front) expired(r *http.Request) bool {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		token = r.URL.Query().Get("token")
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	at, known := f.issued[token]
	return known && at+f.ttl <= f.now
}

// holdReplies makes the relay's replies to path wait until the returned
// release is called (or their caller gives up); the relay has done the
// calls meanwhile.
func (f *front) holdReplies(path string) (release func()) {
	ch := make(chan struct{})
	f.mu.Lock()
	f.holds[path] = ch
	f.mu.Unlock()
	return sync.OnceFunc(func() { close(ch) })
}

// notify wakes every await; f.mu is held.
func (f *front) notify() {
	close(f.changed)
	f.changed = make(chan struct{})
}

// count is the number of calls to path so far.
func (f *front) count(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[path]
}

// body is the body of the i-th call to path, decoded.
func (f *front) body(t testing.TB, path string, i int) map[string]any {
	t.Helper()
	f.mu.Lock()
	require.Greater(t, len(f.bodies[path]), i, "calls to %s", path)
	raw := f.bodies[path][i]
	f.mu.Unlock()
	var m map[string]any
	require.NoError(t, json.Unmarshal(raw, &m), "%s", raw)
	return m
}

// call is the query and raw body of the i-th call to path.
func (f *front) call(t testing.TB, path string, i int) (url.Values, []byte) {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	require.Greater(t, len(f.bodies[path]), i, "calls to %s", path)
	return f.queries[path][i], f.bodies[path][i]
}

// await waits until cond holds for the calls so far and those still open,
// per path.
func (f *front) await(t testing.TB, what string, cond func(calls, open map[string]int) bool) {
	t.Helper()
	if !f.until(cond) {
		t.Fatalf("waited %s for %s", within, what)
	}
}

// until waits up to within until cond holds, as await does, and reports
// whether it did: for a handler's goroutine, which may not end the test.
func (f *front) until(cond func(calls, open map[string]int) bool) bool {
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		f.mu.Lock()
		ok, changed := cond(f.calls, f.open), f.changed
		f.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-changed:
		case <-deadline.C:
			return false
		}
	}
}

// awaitCalls waits until path has had at least n calls.
func (f *front) awaitCalls(t testing.TB, path string, n int) {
	t.Helper()
	f.await(t, "calls to "+path, func(calls, _ map[string]int) bool { return calls[path] >= n })
}

// awaitOpen waits until exactly n calls to path are open.
func (f *front) awaitOpen(t testing.TB, path string, n int) {
	t.Helper()
	f.await(t, "open calls to "+path, func(_, open map[string]int) bool { return open[path] == n })
}
