// The /via/ gateway, end to end: plain HTTP clients on one side, a SimServer
// on the relay's API on the other.

package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// simServer answers the requests of a net with handle until the test ends.
// It speaks the API over HTTP like any SimServer.
func (r *testRelay) simServer(net string, handle func(sim map[string]any) map[string]any) {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	r.t.Cleanup(func() { cancel(); wg.Wait() })
	wg.Go(func() {
		for ctx.Err() == nil {
			q := url.Values{"net": {net}, "key": {testKey}, "wait": {"5"}, "max": {"10"}}
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+"/api/v1/server/pullreqsmart?"+q.Encode(), nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				continue // the test is ending
			}
			var out struct {
				Requests []struct {
					RID    string         `json:"rid"`
					SimReq map[string]any `json:"sim_req"`
				} `json:"requests"`
			}
			err = json.NewDecoder(resp.Body).Decode(&out)
			resp.Body.Close()
			if err != nil {
				continue
			}
			for _, l := range out.Requests {
				body, _ := json.Marshal(map[string]any{"net": net, "rid": l.RID, "sim_res": handle(l.SimReq)})
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, r.URL+"/api/v1/server/pushres", strings.NewReader(string(body)))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Bearer "+testKey)
				if resp, err := http.DefaultClient.Do(req); err == nil {
					resp.Body.Close()
				}
			}
		}
	})
}

// echoSimReq answers with the sim_req it got, as JSON.
func echoSimReq(sim map[string]any) map[string]any {
	return map[string]any{"simStatus": 200, "simBody": sim}
}

// viaDo sends req and returns the reply with its raw body.
func viaDo(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, body
}

// TestViaRequestMapping: the path after the net, the query with repeated
// keys as arrays, the method, and the headers minus hop-by-hop ones. The
// request is written raw so that hop-by-hop headers reach the relay as sent.
func TestViaRequestMapping(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	r.simServer("demo", echoSimReq)

	u, err := url.Parse(r.URL)
	require.NoError(t, err)
	conn, err := net.Dial("tcp", u.Host)
	require.NoError(t, err)
	defer conn.Close()
	raw := "PUT /via/demo/items/7/a%2Fb?tag=x&tag=y&one=1&empty= HTTP/1.1\r\n" +
		"Host: " + u.Host + "\r\n" +
		"Connection: keep-alive, X-Hop-Named\r\n" +
		"Keep-Alive: timeout=5\r\n" +
		"TE: trailers\r\n" +
		"Trailer: X-Sum\r\n" +
		"Upgrade: websocket\r\n" +
		"Proxy-Authorization: Basic Zm9vOmJhcg==\r\n" +
		"Proxy-Connection: keep-alive\r\n" +
		"X-Hop-Named: gone\r\n" +
		"X-Trace: abc\r\n" +
		"X-Forwarded-For: 203.0.113.7\r\n" +
		"Accept: text/plain\r\n" +
		"Accept: application/json\r\n" +
		"Authorization: Bearer the-simservers-own-auth\r\n" +
		"Content-Type: text/plain\r\n" +
		"Content-Length: 5\r\n" +
		"\r\nhello"
	_, err = io.WriteString(conn, raw)
	require.NoError(t, err)
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	var sim map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&sim))

	assert.Equal(t, "/items/7/a%2Fb", sim["simEndpoint"], "the escaped path after the net")
	assert.Equal(t, "PUT", sim["simMethod"])
	assert.Equal(t, map[string]any{"tag": []any{"x", "y"}, "one": "1", "empty": ""}, sim["simQueryParams"])
	assert.Equal(t, map[string]any{}, sim["simRouteParams"])
	assert.Equal(t, "hello", sim["simBody"])
	headers := sim["simHeaders"].(map[string]any)
	for _, gone := range []string{"Connection", "Keep-Alive", "Te", "Trailer", "Upgrade",
		"Proxy-Authorization", "Proxy-Connection", "X-Hop-Named", "Transfer-Encoding"} {
		assert.NotContains(t, headers, gone, "hop-by-hop header %s", gone)
	}
	assert.Equal(t, "abc", headers["X-Trace"])
	assert.Equal(t, "203.0.113.7, 127.0.0.1", headers["X-Forwarded-For"], "the client's address is appended")
	assert.Equal(t, []any{"text/plain", "application/json"}, headers["Accept"], "a repeated header is an array")
	assert.Equal(t, "Bearer the-simservers-own-auth", headers["Authorization"], "end-to-end headers pass")
}

// TestViaBodies: each kind of request body as simBody, and each kind of
// simBody written back; binary both ways byte for byte.
func TestViaBodies(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	binary := make([]byte, 4096)
	_, _ = rand.Read(binary)
	for i := range 256 {
		binary[i] = byte(i) // every byte value at least once
	}
	// The SimServer answers according to the endpoint.
	r.simServer("demo", func(sim map[string]any) map[string]any {
		switch sim["simEndpoint"] {
		case "/echo":
			return echoSimReq(sim)
		case "/text":
			return map[string]any{"simStatus": 201, "simBody": "plain <b>text</b>", "simHeaders": map[string]any{"Content-Type": "text/html; charset=utf-8"}}
		case "/json":
			return map[string]any{"simBody": json.RawMessage(`{"n":12345678901234567890,"list":[1,"two",null]}`)}
		case "/json-typed":
			return map[string]any{"simBody": []any{1, 2}, "simHeaders": map[string]any{"content-type": "application/vnd.api+json"}}
		case "/binary":
			// Return what was sent, as base64 the SimServer made itself.
			return map[string]any{"simBody": sim["simBody"], "simBodyEncoding": sim["simBodyEncoding"],
				"simHeaders": map[string]any{"Content-Type": "application/octet-stream"}}
		case "/empty":
			return map[string]any{"simStatus": 204}
		}
		return map[string]any{"simStatus": 404}
	})
	post := func(path, contentType string, body []byte) (*http.Response, []byte) {
		req, err := http.NewRequest(http.MethodPost, r.URL+"/via/demo"+path, strings.NewReader(string(body)))
		require.NoError(t, err)
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		return viaDo(t, req)
	}
	echoed := func(contentType string, body []byte) map[string]any {
		resp, raw := post("/echo", contentType, body)
		require.Equal(t, http.StatusOK, resp.StatusCode, string(raw))
		var sim map[string]any
		require.NoError(t, json.Unmarshal(raw, &sim))
		return sim
	}

	t.Run("request JSON is its exact text", func(t *testing.T) {
		body := "{\n  \"a\": [1, 2, {\"b\": null}],\n  \"n\": 1.50,\n  \"s\": \"é\"\n}\n"
		sim := echoed("application/json; charset=utf-8", []byte(body))
		assert.Equal(t, body, sim["simBody"], "not parsed, not compacted")
		assert.NotContains(t, sim, "simBodyEncoding")
	})
	t.Run("request form is its exact text", func(t *testing.T) {
		sim := echoed("application/x-www-form-urlencoded", []byte("z=1&a=2&z=3&tag=a+b"))
		assert.Equal(t, "z=1&a=2&z=3&tag=a+b", sim["simBody"], "not parsed, not reordered")
	})
	t.Run("request text is a string", func(t *testing.T) {
		sim := echoed("text/csv", []byte("a,b\n1,2\n"))
		assert.Equal(t, "a,b\n1,2\n", sim["simBody"])
		sim = echoed("application/json", []byte(`{not json`))
		assert.Equal(t, "{not json", sim["simBody"], "JSON that does not parse stays text")
	})
	t.Run("request binary is base64", func(t *testing.T) {
		sim := echoed("image/png", binary)
		assert.Equal(t, "base64", sim["simBodyEncoding"])
		assert.Equal(t, base64.StdEncoding.EncodeToString(binary), sim["simBody"])
		sim = echoed("", binary[:300])
		assert.Equal(t, "base64", sim["simBodyEncoding"], "no type: binary")
	})
	t.Run("no body is null", func(t *testing.T) {
		sim := echoed("", nil)
		assert.Nil(t, sim["simBody"])
		assert.Contains(t, sim, "simBody")
	})
	t.Run("binary round-trips byte for byte", func(t *testing.T) {
		resp, raw := post("/binary", "application/octet-stream", binary)
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, binary, raw)
		assert.Equal(t, "application/octet-stream", resp.Header.Get("Content-Type"))
		assert.Equal(t, fmt.Sprint(len(binary)), resp.Header.Get("Content-Length"))
	})
	t.Run("a string reply is written as is", func(t *testing.T) {
		resp, raw := post("/text", "", nil)
		assert.Equal(t, http.StatusCreated, resp.StatusCode)
		assert.Equal(t, "plain <b>text</b>", string(raw))
		assert.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))
	})
	t.Run("a JSON reply is JSON", func(t *testing.T) {
		resp, raw := post("/json", "", nil)
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, "application/json", resp.Header.Get("Content-Type"))
		assert.JSONEq(t, `{"n":12345678901234567890,"list":[1,"two",null]}`, string(raw))
		assert.Contains(t, string(raw), "12345678901234567890", "digit for digit")

		resp, raw = post("/json-typed", "", nil)
		assert.Equal(t, "application/vnd.api+json", resp.Header.Get("Content-Type"), "the SimServer's type wins")
		assert.Equal(t, "[1,2]", string(raw))
	})
	t.Run("status without a body", func(t *testing.T) {
		resp, raw := post("/empty", "", nil)
		assert.Equal(t, http.StatusNoContent, resp.StatusCode)
		assert.Empty(t, raw)
		resp, _ = post("/nothing-here", "", nil)
		assert.Equal(t, http.StatusNotFound, resp.StatusCode, "the SimServer's status")
	})
}

// TestViaTimeout: no answer within --via-timeout is a JSON 504, and the
// request stays stored like any other.
func TestViaTimeout(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.ViaTimeout = 200 * time.Millisecond })
	req, err := http.NewRequest(http.MethodGet, r.URL+"/via/quiet/slow", nil)
	require.NoError(t, err)
	rep := r.afterWait(200*time.Millisecond, func() reply { return r.do(req) })
	assert.Equal(t, http.StatusGatewayTimeout, rep.Status)
	assert.Equal(t, "gateway_timeout", rep.errorCode())
	assert.Equal(t, "application/json", rep.Header.Get("Content-Type"))
	assert.Equal(t, 1, r.count(`requests WHERE net = 'quiet' AND from_peer = 'via' AND status = 'queued'`))
	assert.Zero(t, r.count(`tokens`), "a plain gateway request leaves no token behind")
	waitFor(t, 5*time.Second, func() bool { return r.srv.poller.open.Load() == 0 }, "the gateway poll to end")
}

// TestViaClientGone: a client that hangs up ends its waiting handler; no
// goroutine or hub entry is left.
func TestViaClientGone(t *testing.T) {
	r := newTestRelay(t)
	before := goleak.IgnoreCurrent()
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.URL+"/via/demo/x", nil)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	waitFor(t, 5*time.Second, func() bool { return r.srv.poller.open.Load() == 1 }, "the gateway request to wait")
	cancel()
	require.Error(t, <-done)
	waitFor(t, 5*time.Second, func() bool {
		return r.srv.poller.open.Load() == 0 && r.srv.poller.hub.size() == 0
	}, "the waiting handler to end and leave the hub")
	http.DefaultClient.CloseIdleConnections()
	goleak.VerifyNone(t, before) // no handler, timer or connection goroutine left
}

// TestViaPreferAsync: Prefer: respond-async answers 202 at once with a
// Location that later reads the answer through pullsmart; Prefer: wait=N
// answers 202 when N runs out, and the real reply when the answer is quicker.
func TestViaPreferAsync(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	req, err := http.NewRequest(http.MethodPost, r.URL+"/via/demo/jobs?size=3", strings.NewReader(`{"job":1}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Prefer", "respond-async")
	rep := r.do(req)
	require.Equal(t, http.StatusAccepted, rep.Status, string(rep.Body))
	assert.Equal(t, "respond-async", rep.Header.Get("Preference-Applied"))
	assert.Equal(t, "queued", rep.str("status"))
	rid := rep.str("rid")
	loc, err := url.Parse(rep.Header.Get("Location"))
	require.NoError(t, err)
	assert.Equal(t, "/api/v1/client/result", loc.Path)
	assert.Equal(t, rid, loc.Query().Get("rid"))
	capability := loc.Query().Get("token")
	require.NotEmpty(t, capability)

	// Before the answer, a plain GET of the Location says it is pending.
	pending := doRequest(t, mustRequest(t, http.MethodGet, r.URL+loc.String()))
	assert.Equal(t, http.StatusAccepted, pending.Status)
	assert.Equal(t, "queued", pending.str("status"))
	assert.NotEmpty(t, pending.Header.Get("Retry-After"))

	// The SimServer answers; the Location now gives the HTTP response
	// itself, as the gateway writes it on the relay's origin.
	got := r.pullReqs("demo", testKey, nil)
	require.Len(t, got, 1)
	assert.Equal(t, "via", got[0].From)
	require.Equal(t, http.StatusOK, r.answer("demo", testKey, rid, map[string]any{"simStatus": 201, "simBody": "done",
		"simHeaders": map[string]any{"Content-Type": "text/plain", "Location": "/jobs/1", "Set-Cookie": "s=1"}}).Status)
	resp, body := viaDo(t, mustRequest(t, http.MethodGet, r.URL+loc.String()))
	assert.Equal(t, http.StatusCreated, resp.StatusCode)
	assert.Equal(t, "done", string(body))
	assert.Equal(t, "text/plain", resp.Header.Get("Content-Type"))
	assert.Equal(t, "/via/demo/jobs/1", resp.Header.Get("Location"), "under the net's prefix")
	assert.Empty(t, resp.Header.Values("Set-Cookie"), "the relay's origin")
	assert.Equal(t, sandboxCSP, resp.Header.Get("Content-Security-Policy"))
	// The same answer stays readable as JSON with that token.
	rep = r.get("/api/v1/client/pullsmart", url.Values{"rid": {rid}, "token": {capability}})
	require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	assert.Equal(t, "done", rep.JSON["sim_res"].(map[string]any)["simBody"])

	// The capability reads its one request and does nothing else.
	assert.Equal(t, http.StatusForbidden, r.postJSON("/api/v1/client/pushreq", capability,
		map[string]any{"sim_req": map[string]any{"simEndpoint": "/x"}}).Status)
	tok, _ := r.login("demo")
	other := r.push(tok, map[string]any{"simEndpoint": "/y"})
	assert.Equal(t, http.StatusNotFound, r.get(loc.Path, url.Values{"rid": {other}, "token": {capability}}).Status)

	t.Run("wait=N runs out", func(t *testing.T) {
		req := mustRequest(t, http.MethodGet, r.URL+"/via/demo/later")
		req.Header.Set("Prefer", "wait=1")
		rep := r.afterWait(time.Second, func() reply { return r.do(req) })
		assert.Equal(t, http.StatusAccepted, rep.Status, "not 504: the client asked to come back")
		assert.NotEmpty(t, rep.Header.Get("Location"))
		assert.Equal(t, "wait=1", rep.Header.Get("Preference-Applied"))
	})
	t.Run("wait=N with an answer in time", func(t *testing.T) {
		r.simServer("quick", func(map[string]any) map[string]any { return map[string]any{"simBody": "now"} })
		req := mustRequest(t, http.MethodGet, r.URL+"/via/quick/x")
		req.Header.Set("Prefer", "respond-async, wait=30")
		resp, body := viaDo(t, req)
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, "now", string(body))
	})
}

// TestViaOrigins: path mode drops Set-Cookie and adds the sandbox CSP; a
// net's own host (--via-host) keeps both as the SimServer sent them.
func TestViaOrigins(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.ViaHost = ".via.example.com" })
	r.simServer("demo", func(sim map[string]any) map[string]any {
		return map[string]any{"simBody": sim["simEndpoint"], "simHeaders": map[string]any{
			"Set-Cookie":   []string{"a=1; Path=/", "b=2"},
			"X-Served-By":  "tab",
			"Content-Type": "text/plain",
		}}
	})

	resp, body := viaDo(t, mustRequest(t, http.MethodGet, r.URL+"/via/demo/page"))
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, "/page", string(body))
	assert.Empty(t, resp.Header.Values("Set-Cookie"), "path mode: nets share the origin")
	assert.Equal(t, sandboxCSP, resp.Header.Get("Content-Security-Policy"))
	assert.Equal(t, "tab", resp.Header.Get("X-Served-By"))

	req := mustRequest(t, http.MethodGet, r.URL+"/page?q=1")
	req.Host = "demo.via.example.com"
	resp, body = viaDo(t, req)
	require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
	assert.Equal(t, "/page", string(body), "the whole path belongs to the net")
	assert.Equal(t, []string{"a=1; Path=/", "b=2"}, resp.Header.Values("Set-Cookie"), "host mode: its own origin")
	assert.Empty(t, resp.Header.Get("Content-Security-Policy"))

	// A net nobody serves: respond-async may be answered at once (200) when
	// the answer is already there, and demo's SimServer can be that quick.
	req = mustRequest(t, http.MethodGet, r.URL+"/api/v1/client/login?net=idle")
	req.Host = "IDLE.Via.Example.com:8443"
	req.Header.Set("Prefer", "respond-async")
	rep := r.do(req)
	assert.Equal(t, http.StatusAccepted, rep.Status, "on a net's host even /api/ goes to the SimServer")
	assert.True(t, strings.HasPrefix(rep.Header.Get("Location"), "http://via.example.com:8443/api/v1/client/result?"),
		"the result URL names the relay's host: %s", rep.Header.Get("Location"))

	req = mustRequest(t, http.MethodGet, r.URL+"/api/v1/client/login?net=demo")
	req.Host = "via.example.com"
	rep = r.do(req)
	assert.Equal(t, http.StatusOK, rep.Status, "the suffix host itself is the relay")
	assert.NotEmpty(t, rep.str("token"))
}

// TestViaConcurrentClients: 50 plain clients through one net, 3 SimServer
// workers; every reply reaches the client that asked.
func TestViaConcurrentClients(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	for range 3 {
		r.simServer("busy", func(sim map[string]any) map[string]any {
			q := sim["simQueryParams"].(map[string]any)
			return map[string]any{"simBody": "for " + q["client"].(string), "simHeaders": map[string]any{"Content-Type": "text/plain"}}
		})
	}
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for i := range 50 {
		wg.Go(func() {
			want := fmt.Sprintf("for c%d", i)
			resp, err := http.Get(fmt.Sprintf("%s/via/busy/who?client=c%d", r.URL, i))
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || string(body) != want {
				errs <- fmt.Errorf("client %d got %d %q, want %q", i, resp.StatusCode, body, want)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// No token reads a synchronous request's answer again: each is deleted
	// once written.
	waitFor(t, 10*time.Second, func() bool { return r.count(`requests WHERE net = 'busy'`) == 0 },
		"the answered synchronous requests to be deleted")
}

// TestViaEdges: the method travels (HEAD, OPTIONS), /via/NET redirects to
// /via/NET/, a preflight is answered by the relay, and bad input is refused
// with nothing written.
func TestViaEdges(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.MaxBody = 1000 })
	r.simServer("demo", func(sim map[string]any) map[string]any {
		if sim["simEndpoint"] == "/info" {
			return map[string]any{"simStatus": 101}
		}
		return map[string]any{"simBody": sim["simMethod"], "simHeaders": map[string]any{"Allow": "GET, OPTIONS"}}
	})

	resp, body := viaDo(t, mustRequest(t, http.MethodOptions, r.URL+"/via/demo/x"))
	assert.Equal(t, "OPTIONS", string(body), "a plain OPTIONS goes to the SimServer")
	assert.Equal(t, "GET, OPTIONS", resp.Header.Get("Allow"))

	resp, body = viaDo(t, mustRequest(t, http.MethodHead, r.URL+"/via/demo/x"))
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Empty(t, body)
	assert.Equal(t, "4", resp.Header.Get("Content-Length"), "HEAD travels: the SimServer answered HEAD")

	req := mustRequest(t, http.MethodOptions, r.URL+"/via/demo/x")
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "DELETE")
	req.Header.Set("Access-Control-Request-Headers", "x-custom")
	resp, _ = viaDo(t, req)
	assert.Equal(t, http.StatusNoContent, resp.StatusCode)
	assert.Equal(t, "DELETE", resp.Header.Get("Access-Control-Allow-Methods"))
	assert.Equal(t, "x-custom", resp.Header.Get("Access-Control-Allow-Headers"))

	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(r.URL + "/via/demo?x=1")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusPermanentRedirect, resp.StatusCode)
	assert.Equal(t, "/via/demo/?x=1", resp.Header.Get("Location"))

	before := storeRows(t, r)
	rep := r.do(mustRequest(t, http.MethodGet, r.URL+"/via/bad%20net/x"))
	assert.Equal(t, http.StatusBadRequest, rep.Status)
	assert.Equal(t, "invalid_net", rep.errorCode())
	big, err := http.NewRequest(http.MethodPost, r.URL+"/via/demo/x", strings.NewReader(strings.Repeat("x", 1001)))
	require.NoError(t, err)
	rep = r.do(big)
	assert.Equal(t, http.StatusRequestEntityTooLarge, rep.Status)
	assert.Equal(t, "body_too_large", rep.errorCode())
	assert.Equal(t, before, storeRows(t, r), "refused gateway requests write nothing")

	rep = r.do(mustRequest(t, http.MethodGet, r.URL+"/via/demo/info"))
	assert.Equal(t, http.StatusBadGateway, rep.Status, "a 1xx is not a final answer")
	assert.Equal(t, "bad_gateway", rep.errorCode())
}

// TestViaInspect: inspect lists gateway requests with from "via".
func TestViaInspect(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.ViaTimeout = 50 * time.Millisecond })
	rep := r.afterWait(50*time.Millisecond, func() reply { return r.do(mustRequest(t, http.MethodGet, r.URL+"/via/demo/hello")) })
	require.Equal(t, http.StatusGatewayTimeout, rep.Status)
	out, err := runCLI(t, nil, "inspect", "--db", r.DBPath, "--json", "demo")
	require.NoError(t, err)
	assert.Contains(t, out, `"from": "via"`)
	out, err = runCLI(t, nil, "inspect", "--db", r.DBPath, "demo")
	require.NoError(t, err)
	assert.Regexp(t, `(?m)\bvia\b`, out)

	// A store-and-forward request's result token is in no net: the summary
	// lists no net without a name.
	moveClockTo(r, realNowMS()) // inspect reads the real clock
	req := mustRequest(t, http.MethodGet, r.URL+"/via/demo/later")
	req.Header.Set("Prefer", "respond-async")
	require.Equal(t, http.StatusAccepted, r.do(req).Status)
	require.Equal(t, 1, r.count(`tokens WHERE net = ''`), "the result token is stored")
	out, err = runCLI(t, nil, "inspect", "--db", r.DBPath, "--json")
	require.NoError(t, err)
	assert.NotContains(t, out, `"net": ""`)
	assert.Contains(t, out, `"net": "demo"`)
}

func mustRequest(t *testing.T, method, url string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	require.NoError(t, err)
	return req
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return b
}

// TestViaShutdown: a relay shutting down answers a waiting gateway request
// with 503 at once (its request stays stored), not a misleading 504.
func TestViaShutdown(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	got := make(chan reply, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, r.URL+"/via/demo/x", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			got <- reply{}
			return
		}
		rep, _ := readReply(resp)
		got <- rep
	}()
	waitFor(t, 5*time.Second, func() bool { return r.srv.poller.open.Load() == 1 }, "the gateway request to wait")
	r.srv.shutdown()
	select {
	case rep := <-got:
		assert.Equal(t, http.StatusServiceUnavailable, rep.Status)
		assert.Equal(t, "shutting_down", rep.errorCode())
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown did not answer the gateway request")
	}
	assert.Equal(t, 1, r.count(`requests WHERE from_peer = 'via' AND status = 'queued'`))
}

// TestViaQueueFull: gateway requests count against --max-queue, in a
// queue of their own (TestViaCannotStarveSimClients); a refused one is 429 with Retry-After and writes nothing.
func TestViaQueueFull(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.MaxQueue = 1 })
	req := mustRequest(t, http.MethodGet, r.URL+"/via/demo/one")
	req.Header.Set("Prefer", "respond-async")
	require.Equal(t, http.StatusAccepted, r.do(req).Status)
	before := storeRows(t, r)
	req = mustRequest(t, http.MethodGet, r.URL+"/via/demo/two")
	req.Header.Set("Prefer", "respond-async")
	rep := r.do(req)
	assert.Equal(t, http.StatusTooManyRequests, rep.Status)
	assert.Equal(t, "queue_full", rep.errorCode())
	assert.NotEmpty(t, rep.Header.Get("Retry-After"))
	assert.Equal(t, before, storeRows(t, r), "neither the request nor its result token is stored")
}
