// The Go client package (c2cvia/client) end to end against a relay on a real
// SQLite file: Serve, Session.HTTPClient, peer messaging and Login.

package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/c2cvia/c2cvia/client"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

const pullReqSmartPath = "/api/v1/server/pullreqsmart"

// testHTTPClient makes the client package talk through http.DefaultClient,
// whose idle connections noLeaks can close; the package's own default keeps
// a pool that a test cannot reach. A later WithHTTPClient still wins.
var testHTTPClient = client.WithHTTPClient(http.DefaultClient)

// serving is client.Serve running in the background.
type serving struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when Serve has returned
	err    error         // what Serve returned, once done is closed
}

// serveClient runs client.Serve in the background until stop, or the
// test's end.
func serveClient(t *testing.T, relayURL, net, key string, h http.Handler, opts ...client.Option) *serving {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &serving{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.err = client.Serve(ctx, relayURL, net, key, h, append([]client.Option{testHTTPClient}, opts...)...)
	}()
	t.Cleanup(func() { _ = s.stop() })
	return s
}

// stop cancels Serve's context and returns what Serve returned.
func (s *serving) stop() error {
	s.cancel()
	select {
	case <-s.done:
		return s.err
	case <-time.After(30 * time.Second):
		return errors.New("Serve did not return within 30s of its context ending")
	}
}

// clientLogin logs in a client.Session, requiring success.
func clientLogin(t *testing.T, relayURL, net string, opts ...client.Option) *client.Session {
	t.Helper()
	s, err := client.Login(context.Background(), relayURL, net, append([]client.Option{testHTTPClient}, opts...)...)
	require.NoError(t, err)
	return s
}

// relayError requires err to be (or wrap) a *client.Error and returns it.
func relayError(t *testing.T, err error) *client.Error {
	t.Helper()
	var e *client.Error
	require.ErrorAs(t, err, &e)
	return e
}

// noLeaks takes a goroutine snapshot; the returned func checks that every
// goroutine started since is gone, after closing idle keep-alive
// connections (their goroutines are the client's, not a leak).
func noLeaks(t *testing.T) func() {
	t.Helper()
	before := goleak.IgnoreCurrent()
	return func() {
		t.Helper()
		http.DefaultClient.CloseIdleConnections()
		goleak.VerifyNone(t, before)
	}
}

// echoed is what the /echo/ handler reports about the request it got.
type echoed struct {
	Method  string              `json:"method"`
	Path    string              `json:"path"`
	Query   url.Values          `json:"query"`
	XTest   string              `json:"x_test"`
	XMulti  []string            `json:"x_multi"`
	From    []string            `json:"from"`
	RID     string              `json:"rid"`
	Remote  string              `json:"remote"`
	Type    string              `json:"content_type"`
	Body    string              `json:"body"`
	Form    map[string][]string `json:"form"`
	Request string              `json:"request_uri"`
}

// testMux is an ordinary Go web app: JSON and binary echoes, a 201 with
// headers, a 204 and the mux's own 404.
func testMux(blob []byte) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/echo/", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		e := echoed{Method: r.Method, Path: r.URL.EscapedPath(), Query: r.URL.Query(), XTest: r.Header.Get("X-Test"),
			XMulti: r.Header.Values("X-Multi"), From: r.Header.Values("C2cvia-From"), RID: r.Header.Get("C2cvia-Rid"),
			Remote: r.RemoteAddr, Type: r.Header.Get("Content-Type"), Body: string(body), Request: r.RequestURI}
		if strings.HasPrefix(e.Type, "application/x-www-form-urlencoded") {
			e.Form, _ = url.ParseQuery(string(body))
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(e)
	})
	mux.HandleFunc("POST /json", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
	mux.HandleFunc("POST /bin", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(body)
	})
	mux.HandleFunc("GET /bin", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(blob)
	})
	mux.HandleFunc("POST /created", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Custom", "yes")
		w.Header().Add("X-Multi", "a")
		w.Header().Add("X-Multi", "b")
		w.WriteHeader(http.StatusCreated)
		w.WriteHeader(http.StatusInternalServerError) // ignored, as net/http does
		w.Header().Set("X-Late", "ignored")           // after WriteHeader: not sent
		_, _ = io.WriteString(w, "made")
	})
	mux.HandleFunc("DELETE /empty", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

// TestClientServeAndHTTPClient: an http.ServeMux served with client.Serve
// answers, with the same mapping, a Session's HTTPClient and plain net/http
// through the /via/ gateway.
func TestClientServeAndHTTPClient(t *testing.T) {
	r := newTestRelay(t)
	leaks := noLeaks(t)
	blob := make([]byte, 4<<10)
	_, _ = rand.Read(blob)
	srv := serveClient(t, r.URL, "demo", testKey, testMux(blob))
	sess := clientLogin(t, r.URL, "demo")
	assert.Equal(t, "demo", sess.Net)
	assert.Len(t, sess.PeerID(), 16)
	assert.NotEmpty(t, sess.Token())
	assert.Equal(t, r.clock.Now().Add(24*time.Hour), sess.ExpiresAt())

	const bigJSON = `{"n":12345678901234567890,"f":0.10000000000000000001,"s":"<a&b>"}`
	callers := []struct {
		name string
		base string // the URL a path is appended to
		hc   *http.Client
		from string // C2cvia-From as the handler sees it
		// prefer: the gateway's calls ask to wait with their answer kept, so
		// that storedSimReq can read them (a synchronous one is deleted once
		// answered).
		prefer string
	}{
		{"HTTPClient", "http://c2cvia", sess.HTTPClient(), sess.PeerID(), ""},
		{"gateway", r.URL + "/via/demo", http.DefaultClient, "via", "wait=30"},
	}
	for _, c := range callers {
		t.Run(c.name, func(t *testing.T) {
			call := func(method, path, contentType string, body []byte, header http.Header) (*http.Response, []byte) {
				t.Helper()
				req, err := http.NewRequest(method, c.base+path, bytes.NewReader(body))
				require.NoError(t, err)
				if body == nil {
					req.Body = nil
				}
				for k, v := range header {
					req.Header[k] = v
				}
				if c.prefer != "" {
					req.Header.Set("Prefer", c.prefer)
				}
				if contentType != "" {
					req.Header.Set("Content-Type", contentType)
				}
				resp, err := c.hc.Do(req)
				require.NoError(t, err)
				defer resp.Body.Close()
				got, err := io.ReadAll(resp.Body)
				require.NoError(t, err)
				assert.Same(t, req, resp.Request)
				assert.Equal(t, "HTTP/1.1", resp.Proto)
				if resp.StatusCode != http.StatusNoContent {
					assert.Equal(t, int64(len(got)), resp.ContentLength)
				}
				return resp, got
			}
			echo := func(resp *http.Response, body []byte) echoed {
				t.Helper()
				require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
				assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
				var e echoed
				require.NoError(t, json.Unmarshal(body, &e), string(body))
				return e
			}

			// Method, escaped path, repeated query names, headers; the
			// caller's own C2cvia-From is dropped.
			e := echo(call(http.MethodGet, "/echo/a%2Fb/c?x=1&x=2&y=z%26w", "", nil, http.Header{
				"X-Test": {"one"}, "X-Multi": {"a", "b"}, "C2cvia-From": {"mallory"}, "C2cvia-Rid": {"forged"},
			}))
			assert.Equal(t, http.MethodGet, e.Method)
			assert.Equal(t, "/echo/a%2Fb/c", e.Path, "an escaped path stays escaped")
			assert.Equal(t, url.Values{"x": {"1", "2"}, "y": {"z&w"}}, e.Query)
			assert.Equal(t, "one", e.XTest)
			assert.Equal(t, []string{"a", "b"}, e.XMulti)
			assert.Equal(t, []string{c.from}, e.From, "the relay's from, the spoofed one dropped")
			remote, port, err := net.SplitHostPort(e.Remote)
			assert.NoError(t, err, "RemoteAddr is the caller's IP:port, as net/http gives it: %q", e.Remote)
			assert.Equal(t, "127.0.0.1", remote)
			assert.NotEqual(t, "0", port)
			assert.NotEqual(t, "forged", e.RID)
			assert.NotEmpty(t, e.RID)
			assert.True(t, strings.HasPrefix(e.Request, "/echo/a%2Fb/c?"), e.Request)

			// A JSON body reaches the handler and comes back digit for digit.
			e = echo(call(http.MethodPut, "/echo/json", "application/json", []byte(bigJSON), nil))
			assert.Equal(t, http.MethodPut, e.Method)
			assert.Equal(t, bigJSON, e.Body)
			assert.Equal(t, "application/json", e.Type)
			stored, _ := encodeJSON(bigJSON)
			assert.Contains(t, storedSimReq(t, r, e.RID), `"simBody":`+string(stored), "JSON travels as its exact text")
			resp, got := call(http.MethodPost, "/json", "application/json", []byte(bigJSON), nil)
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, bigJSON, string(got))

			// A form arrives as a form.
			e = echo(call(http.MethodPost, "/echo/form", "application/x-www-form-urlencoded", []byte("a=1&a=2&b=x+y"), nil))
			assert.Equal(t, map[string][]string{"a": {"1", "2"}, "b": {"x y"}}, e.Form)

			// 4 KiB of random bytes, both ways.
			e = echo(call(http.MethodPost, "/echo/bin", "application/octet-stream", blob, nil))
			assert.Contains(t, storedSimReq(t, r, e.RID), `"simBodyEncoding":"base64"`)
			resp, got = call(http.MethodPost, "/bin", "application/octet-stream", blob, nil)
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, "application/octet-stream", resp.Header.Get("Content-Type"))
			assert.True(t, bytes.Equal(blob, got), "the bytes came back unchanged")
			resp, got = call(http.MethodGet, "/bin", "", nil, nil)
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.True(t, bytes.Equal(blob, got), "the handler's bytes arrived unchanged")

			// A status with headers; the second WriteHeader is ignored.
			resp, got = call(http.MethodPost, "/created", "", nil, nil)
			assert.Equal(t, http.StatusCreated, resp.StatusCode)
			assert.Equal(t, "201 Created", resp.Status)
			assert.Equal(t, "yes", resp.Header.Get("X-Custom"))
			assert.Equal(t, []string{"a", "b"}, resp.Header.Values("X-Multi"))
			assert.Empty(t, resp.Header.Get("X-Late"))
			assert.Equal(t, "made", string(got))

			// 204 without a body; the mux's own 404.
			resp, got = call(http.MethodDelete, "/empty", "", nil, nil)
			assert.Equal(t, http.StatusNoContent, resp.StatusCode)
			assert.Empty(t, got)
			resp, got = call(http.MethodGet, "/nope", "", nil, nil)
			assert.Equal(t, http.StatusNotFound, resp.StatusCode)
			assert.Equal(t, "404 page not found\n", string(got))
			assert.Equal(t, "text/plain; charset=utf-8", resp.Header.Get("Content-Type"))
		})
	}
	require.NoError(t, ignoreCanceled(srv.stop()))
	leaks()
}

// storedSimReq is the sim_req of rid as the relay stored it.
func storedSimReq(t *testing.T, r *testRelay, rid string) string {
	t.Helper()
	var simReq string
	require.NoError(t, r.store.r.QueryRow(`SELECT sim_req FROM requests WHERE rid = ?`, rid).Scan(&simReq))
	return simReq
}

// ignoreCanceled is nil for context.Canceled: Serve's ordinary end.
func ignoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// clientGet calls GET path through s's HTTPClient and returns the status and body.
func clientGet(t *testing.T, s *client.Session, path string) (int, string, http.Header) {
	t.Helper()
	resp, err := s.HTTPClient().Get("http://c2cvia" + path)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b), resp.Header
}

// TestClientServePanic: a handler that panics answers 500 with a fixed
// body, the panic goes to the error log and not to the caller, and the
// loop keeps serving.
func TestClientServePanic(t *testing.T) {
	r := newTestRelay(t)
	leaks := noLeaks(t)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /panic", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "half an answer")
		panic("boom: secret detail")
	})
	mux.HandleFunc("GET /abort", func(w http.ResponseWriter, r *http.Request) { panic(http.ErrAbortHandler) })
	mux.HandleFunc("GET /ok", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "fine") })
	logged := make(chan error, 100)
	srv := serveClient(t, r.URL, "demo", testKey, mux, client.WithErrorLog(func(err error) {
		select {
		case logged <- err:
		default:
		}
	}))
	sess := clientLogin(t, r.URL, "demo")

	for _, path := range []string{"/panic", "/abort", "/panic"} {
		status, body, h := clientGet(t, sess, path)
		assert.Equal(t, http.StatusInternalServerError, status, path)
		assert.Equal(t, "internal server error", body, path)
		assert.Equal(t, "text/plain; charset=utf-8", h.Get("Content-Type"))
	}
	select {
	case err := <-logged:
		assert.Contains(t, err.Error(), "boom: secret detail")
	case <-time.After(10 * time.Second):
		t.Fatal("the panic was not reported to the error log")
	}
	status, body, _ := clientGet(t, sess, "/ok")
	assert.Equal(t, http.StatusOK, status)
	assert.Equal(t, "fine", body)

	// The gateway sees the same 500.
	rep := r.get("/via/demo/panic", nil)
	assert.Equal(t, http.StatusInternalServerError, rep.Status)
	assert.Equal(t, "internal server error", string(rep.Body))
	require.NoError(t, ignoreCanceled(srv.stop()))
	leaks()
}

// TestClientServeConcurrency: WithConcurrency(N) runs N slow handlers at
// once and never asks the relay for more requests than it has free slots,
// so an N+1st waits until one finishes.
func TestClientServeConcurrency(t *testing.T) {
	const n = 3
	r := newTestRelay(t)
	front := newRelayFront(t, r.srv)
	leaks := noLeaks(t)
	var inFlight, most atomic.Int64
	var overAsked atomic.Value // a description of a poll that asked for too many
	front.setOnCall(func(path string, raw []byte) {
		if path != pullReqSmartPath {
			return
		}
		var body map[string]any
		_ = json.Unmarshal(raw, &body)
		asked, _ := body["max"].(float64)
		if running := inFlight.Load(); running+int64(asked) > n {
			overAsked.Store(fmt.Sprintf("asked for %v with %d handlers running", asked, running))
		}
	})
	entered := make(chan string, n+1)
	release := make(chan struct{})
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); now > m && !most.CompareAndSwap(m, now); m = most.Load() {
		}
		entered <- r.URL.Path
		<-release
		_, _ = io.WriteString(w, "done "+r.URL.Path)
	})

	// N+1 requests wait before the SimServer starts.
	tok, _ := r.login("demo")
	rids := make([]string, n+1)
	for i := range rids {
		rids[i] = r.push(tok, map[string]any{"simEndpoint": fmt.Sprintf("/r%d", i), "simMethod": "GET"})
	}
	srv := serveClient(t, front.URL, "demo", testKey, slow, client.WithConcurrency(n))
	for range n {
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatalf("not %d handlers in flight at once", n)
		}
	}
	assert.Equal(t, int64(n), inFlight.Load(), "N handlers in flight at once")
	assert.Equal(t, "queued", ridStatus(t, r, tok, rids[n]), "the N+1st waits in the relay")

	// One finishes: its slot takes the N+1st.
	release <- struct{}{}
	select {
	case p := <-entered:
		assert.Equal(t, fmt.Sprintf("/r%d", n), p)
	case <-time.After(10 * time.Second):
		t.Fatal("the N+1st request did not start when a slot freed")
	}
	close(release)
	for _, rid := range rids {
		rep := r.get("/api/v1/client/pullsmart", url.Values{"token": {tok}, "rid": {rid}, "wait": {"10"}})
		require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	}
	require.NoError(t, ignoreCanceled(srv.stop()))
	assert.Equal(t, int64(n), most.Load(), "never more than N at once")
	assert.Nil(t, overAsked.Load(), "a poll asked for more requests than free slots")
	leaks()
}

// TestClientServeLease: a handler slower than the lease keeps its request:
// Serve renews the lease every lease/2, so as the relay's clock passes the
// first lease's end the request is not handed out again.
func TestClientServeLease(t *testing.T) {
	r := newTestRelay(t)
	leaks := noLeaks(t)
	entered := make(chan string, 1)
	release := make(chan struct{})
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- r.Header.Get("C2cvia-Rid")
		<-release
		_, _ = io.WriteString(w, "slow but sure")
	})
	const lease = 2 * time.Second
	srv := serveClient(t, r.URL, "demo", testKey, slow, client.WithLease(lease), client.WithConcurrency(1))
	tok, _ := r.login("demo")
	rid := r.push(tok, map[string]any{"simEndpoint": "/slow"})
	var got string
	select {
	case got = <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler did not start")
	}
	require.Equal(t, rid, got)

	leaseEnd := func() int64 {
		var ms int64
		require.NoError(t, r.store.r.QueryRow(`SELECT lease_expires_at FROM requests WHERE rid = ?`, rid).Scan(&ms))
		return ms
	}
	// The relay's clock moves only here. Each round waits for a renewal
	// from the relay's present (now + lease), then moves the clock 1.5 s:
	// 4.5 s in all, well past the first lease's end at 2 s.
	for range 3 {
		waitFor(t, 10*time.Second, func() bool {
			return leaseEnd() == r.clock.Now().Add(lease).UnixMilli()
		}, "the lease renewed to now + lease")
		r.clock.Advance(1500 * time.Millisecond)
	}
	assert.Empty(t, r.pullReqs("demo", testKey, nil), "a renewed lease is not handed out again")
	close(release)
	rep := r.get("/api/v1/client/pullsmart", url.Values{"token": {tok}, "rid": {rid}, "wait": {"10"}})
	require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	assert.Contains(t, string(rep.Body), "slow but sure")
	check := r.get("/api/v1/client/check", url.Values{"token": {tok}, "rid": {rid}})
	assert.Equal(t, "1", fmt.Sprint(check.JSON["attempt"]), "delivered once")
	require.NoError(t, ignoreCanceled(srv.stop()))
	leaks()
}

// TestClientServeBackoff: while the relay is down (503, then connections
// closed unanswered) Serve keeps retrying with growing delays, and serves
// as soon as it is back.
func TestClientServeBackoff(t *testing.T) {
	r := newTestRelay(t)
	front := newRelayFront(t, r.srv)
	front.setMode(front503)
	polls := func() int { return front.count(pullReqSmartPath) }
	leaks := noLeaks(t)
	down := time.Now()
	srv := serveClient(t, front.URL, "demo", testKey, testMux(nil), client.WithErrorLog(func(error) {}))
	waitFor(t, 20*time.Second, func() bool { return polls() >= 3 }, "three polls while the relay answers 503")
	front.setMode(frontDrop)
	at := polls()
	waitFor(t, 20*time.Second, func() bool { return polls() > at }, "a poll while connections are dropped")
	attempts, elapsed := polls(), time.Since(down)
	// Each delay is at least half of 250 ms, doubling: a loop without
	// backoff would have called thousands of times.
	assert.LessOrEqual(t, attempts, 1+int(elapsed/(125*time.Millisecond)), "%d polls in %s", attempts, elapsed)
	front.setMode(frontUp)

	sess := clientLogin(t, r.URL, "demo")
	status, body, _ := clientGet(t, sess, "/echo/back")
	assert.Equal(t, http.StatusOK, status)
	assert.Contains(t, body, `"path":"/echo/back"`)
	require.NoError(t, ignoreCanceled(srv.stop()))
	leaks()
}

// TestClientServeFatal: refusals that will not pass end Serve with the
// relay's *client.Error.
func TestClientServeFatal(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	r.pullReqs("demo", testKey, nil) // testKey claims demo
	for _, tc := range []struct {
		name, net, key string
		status         int
		code           string
	}{
		{"wrong key", "demo", "another-key-0123456789", http.StatusForbidden, "wrong_key"},
		{"missing key", "demo", "", http.StatusUnauthorized, "missing_key"},
		{"bad net", "no such net", testKey, http.StatusBadRequest, "invalid_net"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := serveClient(t, r.URL, tc.net, tc.key, testMux(nil))
			select {
			case <-srv.done:
				e := relayError(t, srv.err)
				assert.Equal(t, tc.status, e.Status)
				assert.Equal(t, tc.code, e.Code)
				assert.NotEmpty(t, e.Message)
			case <-time.After(10 * time.Second):
				t.Fatal("Serve did not return")
			}
		})
	}
}

// TestClientServeStop: when Serve's context ends, a handler in flight keeps
// an uncancelled context, its answer is delivered, and only then does
// Serve return ctx.Err().
func TestClientServeStop(t *testing.T) {
	r := newTestRelay(t)
	leaks := noLeaks(t)
	entered := make(chan struct{})
	release := make(chan struct{})
	handlerCtxErr := make(chan error, 1)
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		handlerCtxErr <- r.Context().Err()
		_, _ = io.WriteString(w, "answered after stop")
	})
	srv := serveClient(t, r.URL, "demo", testKey, slow, client.WithConcurrency(2))
	tok, _ := r.login("demo")
	rid := r.push(tok, map[string]any{"simEndpoint": "/slow"})
	select {
	case <-entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler did not start")
	}
	r.waitPolling(1) // Serve's poll for its second slot
	stopped := make(chan error, 1)
	go func() { stopped <- srv.stop() }()
	r.waitPolling(0) // the poll is over: Serve has seen its context end
	select {
	case <-srv.done:
		t.Fatalf("Serve returned (%v) before its handler answered", srv.err)
	default:
	}
	close(release)
	select {
	case err := <-stopped:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after its handler answered")
	}
	assert.NoError(t, <-handlerCtxErr, "the handler's context outlives Serve's")
	assert.Equal(t, "answered", ridStatus(t, r, tok, rid), "answered before Serve returned")
	rep := r.get("/api/v1/client/pullres", url.Values{"token": {tok}, "rid": {rid}})
	assert.Contains(t, string(rep.Body), "answered after stop")
	leaks()
}
