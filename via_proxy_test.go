package main

// The gateway as a faithful reverse proxy (docs/API.md, "Gateway"): what a
// SimServer receives is what the caller sent, byte for byte, with what a
// reverse proxy adds; what the caller receives is what a web server would
// have sent.

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// rawVia writes raw to the relay as is (no client cleans or re-encodes
// it) and reads the reply to a request of method.
func rawVia(t *testing.T, relayURL, method, raw string) (*http.Response, []byte) {
	t.Helper()
	u, err := url.Parse(relayURL)
	require.NoError(t, err)
	conn, err := net.Dial("tcp", u.Host)
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetDeadline(time.Now().Add(20*time.Second)))
	_, err = io.WriteString(conn, raw)
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, body
}

// leaseOne waits for the one request of net and returns it with its
// sim_req decoded.
func (r *testRelay) leaseOne(net string, extra url.Values) (leased, map[string]any) {
	r.t.Helper()
	q := url.Values{"wait": {"10"}}
	for k, v := range extra {
		q[k] = v
	}
	got := r.pullReqs(net, testKey, q)
	require.Len(r.t, got, 1)
	var sim map[string]any
	require.NoError(r.t, json.Unmarshal(got[0].SimReq, &sim))
	return got[0], sim
}

// viaAsync sends req in the background; the reply comes on the channel.
func viaAsync(t *testing.T, relayURL, method, raw string) <-chan *http.Response {
	done := make(chan *http.Response, 1)
	go func() {
		resp, body := rawVia(t, relayURL, method, raw)
		resp.Body = io.NopCloser(strings.NewReader(string(body)))
		done <- resp
	}()
	return done
}

func readAll(t *testing.T, resp *http.Response) string {
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return string(b)
}

func hostOf(t *testing.T, relayURL string) string {
	u, err := url.Parse(relayURL)
	require.NoError(t, err)
	return u.Host
}

// TestViaExactBytes: a webhook's body reaches the SimServer as the exact
// bytes sent, so its signature verifies: pretty JSON, a form with repeated
// and unordered fields, JSON in Latin-1 (base64, and every reply of the
// relay stays valid UTF-8).
func TestViaExactBytes(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	secret := []byte("whsec_test")
	sign := func(b []byte) string {
		m := hmac.New(sha256.New, secret)
		m.Write(b)
		return "sha256=" + hex.EncodeToString(m.Sum(nil))
	}
	webhook := "{\n  \"event\": \"push\",\n  \"id\": 7,\n  \"ok\": true\n}\n"
	webhook += strings.Repeat(" ", 50-len(webhook))
	latin1 := []byte("{\"name\":\"Jos\xe9\"}")
	for _, c := range []struct {
		name, contentType string
		body              []byte
	}{
		{"pretty JSON", "application/json", []byte(webhook)},
		{"form", "application/x-www-form-urlencoded", []byte("z=1&a=2&z=3")},
		{"JSON in Latin-1", "application/json; charset=iso-8859-1", latin1},
		{"no type", "", []byte("plain\r\nlines\x00")},
	} {
		t.Run(c.name, func(t *testing.T) {
			raw := "POST /via/hooks/x HTTP/1.1\r\nHost: hooks.example.com\r\n" +
				"X-Signature: " + sign(c.body) + "\r\n" +
				"Content-Length: " + strconv.Itoa(len(c.body)) + "\r\n"
			if c.contentType != "" {
				raw += "Content-Type: " + c.contentType + "\r\n"
			}
			reply := viaAsync(t, r.URL, "POST", raw+"\r\n"+string(c.body))

			rep := r.get("/api/v1/server/pullreqsmart", url.Values{"net": {"hooks"}, "key": {testKey}, "wait": {"10"}})
			require.Equal(t, http.StatusOK, rep.Status)
			assert.True(t, utf8.Valid(rep.Body), "the relay only emits valid UTF-8 JSON")
			var out struct {
				Requests []struct {
					RID    string `json:"rid"`
					SimReq struct {
						Headers  map[string]any `json:"simHeaders"`
						Body     string         `json:"simBody"`
						Encoding string         `json:"simBodyEncoding"`
					} `json:"sim_req"`
				} `json:"requests"`
			}
			require.NoError(t, json.Unmarshal(rep.Body, &out))
			require.Len(t, out.Requests, 1)
			sim := out.Requests[0].SimReq
			got := []byte(sim.Body)
			if sim.Encoding == "base64" {
				var err error
				got, err = base64.StdEncoding.DecodeString(sim.Body)
				require.NoError(t, err)
			} else {
				assert.True(t, utf8.Valid(c.body), "a string only for UTF-8 bytes")
			}
			assert.Equal(t, c.body, got, "the exact bytes")
			assert.Equal(t, sim.Headers["X-Signature"], sign(got), "the signature verifies over what arrived")
			assert.Equal(t, strconv.Itoa(len(c.body)), sim.Headers["Content-Length"], "the length says what arrived")

			require.Equal(t, http.StatusOK, r.answer("hooks", testKey, out.Requests[0].RID, map[string]any{"simStatus": 204}).Status)
			assert.Equal(t, http.StatusNoContent, (<-reply).StatusCode)
		})
	}

	t.Run("headers a web server would refuse are refused", func(t *testing.T) {
		tok, _ := r.login("hooks")
		before := r.count("requests")
		for _, headers := range []map[string]any{
			{"X-Inj": "a\r\nX-Admin: 1"}, {"X-Nul": "a\x00b"}, {"Bad Name": "x"}, {"X-List": []string{"ok", "b\nad"}},
		} {
			rep := r.postJSON("/api/v1/client/pushreq", tok, map[string]any{"simEndpoint": "/x", "simHeaders": headers})
			assertErrorShape(t, rep, http.StatusBadRequest, "invalid_sim_req")
			rep = r.answer("hooks", testKey, "no-such-rid", map[string]any{"simHeaders": headers})
			assertErrorShape(t, rep, http.StatusBadRequest, "invalid_sim_res")
		}
		assert.Equal(t, before, r.count("requests"), "nothing written")
	})
	t.Run("pushreq refuses JSON that is not UTF-8", func(t *testing.T) {
		tok, _ := r.login("hooks")
		before := r.count("requests")
		rep := badCall{method: http.MethodPost, path: "/api/v1/client/pushreq", contentType: "application/json",
			bearer: tok, body: "{\"simEndpoint\":\"/x\",\"simBody\":\"Jos\xe9\"}"}.send(t, r.URL)
		assertErrorShape(t, rep, http.StatusBadRequest, "invalid_body")
		assert.Equal(t, before, r.count("requests"), "nothing written")
	})
}

// TestViaTargetAsSent: the path and query reach the SimServer exactly as
// sent: no 307 to a cleaned path, dot segments and escapes kept, the raw
// query in simQuery, in both modes; the net segment is unescaped.
func TestViaTargetAsSent(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.ViaHost = ".via.example" })
	for _, c := range []struct {
		name, target, host, net, endpoint, query string
	}{
		{"double slash", "/via/shop/api//items?x=1", "", "shop", "/api//items", "x=1"},
		{"dot segments", "/via/shop/a/./b/../c", "", "shop", "/a/./b/../c", ""},
		{"escapes", "/via/shop/a%2Fb/%7e?q=%20x+y", "", "shop", "/a%2Fb/%7e", "q=%20x+y"},
		{"odd query", "/via/shop/list?a=1;b=2&discount=100%&ok=yes", "", "shop", "/list", "a=1;b=2&discount=100%&ok=yes"},
		{"query order", "/via/shop/s?b=2&a=1&a=0", "", "shop", "/s", "b=2&a=1&a=0"},
		{"escaped net", "/via/%64emo/x", "", "demo", "/x", ""},
		{"host mode double slash", "//x//y?z", "shop.via.example", "shop", "//x//y", "z"},
		{"host mode any case", "/p", "MyShop.Via.Example", "myshop", "/p", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			host := c.host
			if host == "" {
				host = hostOf(t, r.URL)
			}
			reply := viaAsync(t, r.URL, "POST", "POST "+c.target+" HTTP/1.1\r\nHost: "+host+"\r\nContent-Length: 2\r\n\r\nhi")
			l, sim := r.leaseOne(c.net, nil)
			assert.Equal(t, c.endpoint, sim["simEndpoint"])
			assert.Equal(t, c.query, sim["simQuery"])
			require.Equal(t, http.StatusOK, r.answer(c.net, testKey, l.RID, map[string]any{"simBody": "ok"}).Status)
			resp := <-reply
			assert.Equal(t, http.StatusOK, resp.StatusCode, "forwarded, not redirected")
			assert.Equal(t, "ok", readAll(t, resp))
		})
	}
	t.Run("decoded query fields", func(t *testing.T) {
		reply := viaAsync(t, r.URL, "GET", "GET /via/q/list?a=1;b=2&discount=100%&ok=yes&t=1&t=2 HTTP/1.1\r\nHost: h\r\n\r\n")
		l, sim := r.leaseOne("q", nil)
		assert.Equal(t, map[string]any{"a": "1;b=2", "discount": "100%", "ok": "yes", "t": []any{"1", "2"}}, sim["simQueryParams"])
		r.answer("q", testKey, l.RID, map[string]any{"simStatus": 204})
		<-reply
	})
}

// TestViaForwardedHeaders: the SimServer learns the host and URL asked
// for, as behind any reverse proxy, and the caller's address.
func TestViaForwardedHeaders(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.ViaHost = ".via.example" })
	t.Run("path mode", func(t *testing.T) {
		reply := viaAsync(t, r.URL, "GET", "GET /via/hooks/x HTTP/1.1\r\nHost: hooks.example.com\r\n"+
			"X-Forwarded-For: 198.51.100.1\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Proto: https\r\n"+
			"Forwarded: for=10.0.0.1\r\nX-Real-IP: 10.0.0.1\r\nX-Forwarded-Port: 443\r\n\r\n")
		l, sim := r.leaseOne("hooks", nil)
		h := sim["simHeaders"].(map[string]any)
		for _, name := range []string{"Forwarded", "X-Real-Ip", "X-Forwarded-Port"} {
			assert.NotContains(t, h, name, "only a trusted proxy speaks of the client")
		}
		assert.Equal(t, "hooks.example.com", h["Host"])
		assert.Equal(t, "hooks.example.com", h["X-Forwarded-Host"], "a client's own X-Forwarded-Host is replaced")
		assert.Equal(t, "http", h["X-Forwarded-Proto"])
		assert.Equal(t, "/via/hooks", h["X-Forwarded-Prefix"])
		assert.Equal(t, "198.51.100.1, 127.0.0.1", h["X-Forwarded-For"], "appended")
		ap, err := net.ResolveTCPAddr("tcp", l.RemoteAddr)
		require.NoError(t, err, "remote_addr is host:port: %q", l.RemoteAddr)
		assert.Equal(t, "127.0.0.1", ap.IP.String())
		assert.NotZero(t, ap.Port)
		r.answer("hooks", testKey, l.RID, map[string]any{"simStatus": 204})
		<-reply
	})
	t.Run("host mode", func(t *testing.T) {
		reply := viaAsync(t, r.URL, "GET", "GET /x HTTP/1.1\r\nHost: shop.via.example:8080\r\nX-Forwarded-Prefix: /no\r\n\r\n")
		l, sim := r.leaseOne("shop", nil)
		h := sim["simHeaders"].(map[string]any)
		assert.Equal(t, "shop.via.example:8080", h["Host"])
		assert.Equal(t, "shop.via.example:8080", h["X-Forwarded-Host"])
		assert.NotContains(t, h, "X-Forwarded-Prefix", "the net has its own origin")
		r.answer("shop", testKey, l.RID, map[string]any{"simStatus": 204})
		<-reply
		// The metrics name the gateway's route in host mode too.
		assert.Positive(t, r.scrape()[series(httpRequests, "route", "/via/{net}/{path...}", "code", "204")])
	})
	t.Run("pushreq records the sender too", func(t *testing.T) {
		tok, _ := r.login("peers")
		r.push(tok, map[string]any{"simEndpoint": "/y"})
		l, _ := r.leaseOne("peers", nil)
		assert.True(t, strings.HasPrefix(l.RemoteAddr, "127.0.0.1:"), l.RemoteAddr)
	})
}

// TestViaTrustedProxyForwarding: behind a proxy named by --trust-proxy,
// its X-Forwarded-Host and -Proto stand, and the sender's address is the
// client it forwards for.
func TestViaTrustedProxyForwarding(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) {
		require.NoError(t, prefixList{&c.TrustProxy}.Set("127.0.0.1"))
	})
	reply := viaAsync(t, r.URL, "GET", "GET /via/hooks/x HTTP/1.1\r\nHost: relay.internal\r\n"+
		"X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Host: hooks.example.com\r\nX-Forwarded-Proto: https\r\n"+
		"X-Real-IP: 203.0.113.9\r\n\r\n")
	l, sim := r.leaseOne("hooks", nil)
	h := sim["simHeaders"].(map[string]any)
	assert.Equal(t, "203.0.113.9", h["X-Real-Ip"], "a trusted proxy's word stands")
	assert.Equal(t, "hooks.example.com", h["X-Forwarded-Host"])
	assert.Equal(t, "https", h["X-Forwarded-Proto"])
	assert.Equal(t, "203.0.113.9:0", l.RemoteAddr, "the client behind the proxy; its port is not known")
	r.answer("hooks", testKey, l.RID, map[string]any{"simStatus": 204})
	<-reply
}

// TestViaResponseRules: RFC 9110's body rules on the way back, and what
// path mode does to a response on the shared origin.
func TestViaResponseRules(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.ViaHost = ".via.example" })
	answers := map[string]map[string]any{
		"/file":  {"simHeaders": map[string]any{"Content-Length": "5242880", "Content-Type": "application/zip"}},
		"/login": {"simStatus": 302, "simHeaders": map[string]any{"Location": "/dashboard?x=1"}},
		"/abs":   {"simStatus": 302, "simHeaders": map[string]any{"Location": "https://elsewhere.example/x"}},
		"/known": {"simStatus": 302, "simHeaders": map[string]any{"Location": "/via/site/dashboard"}},
		"/proto": {"simStatus": 302, "simHeaders": map[string]any{"Location": "//cdn.example/x"}},
		// Absolute, built from the request's own URL (a fetch handler's req.url).
		"/self":       {"simStatus": 302, "simHeaders": map[string]any{"Location": "http://h/next?a=1"}},
		"/self-root":  {"simStatus": 302, "simHeaders": map[string]any{"Location": "https://H"}},
		"/self-known": {"simStatus": 302, "simHeaders": map[string]any{"Location": "http://h/via/site/x"}},
		"/self-port":  {"simStatus": 302, "simHeaders": map[string]any{"Location": "http://h:81/x"}},
		"/origin-wide": {"simBody": "page", "simHeaders": map[string]any{
			"Clear-Site-Data": `"storage"`, "NEL": `{"report_to":"x"}`, "Report-To": `{}`,
			"Reporting-Endpoints": `a="https://x"`, "Service-Worker-Allowed": "/", "Set-Cookie": "a=1",
			"Strict-Transport-Security": "max-age=1", "Alt-Svc": "clear", "Accept-CH": "DPR", "X-Kept": "1"}},
		"/reset":    {"simStatus": 205},
		"/nothing":  {"simStatus": 204, "simHeaders": map[string]any{"Content-Length": "12"}, "simBody": "dropped body"},
		"/notmod":   {"simStatus": 304, "simHeaders": map[string]any{"Content-Length": "10", "Etag": `"v1"`}},
		"/liar":     {"simHeaders": map[string]any{"Content-Length": "99"}, "simBody": "abc"},
		"/info":     {"simStatus": 103},
		"/cors":     {"simHeaders": map[string]any{"Access-Control-Allow-Origin": "https://app.example", "Vary": "Accept-Encoding"}},
		"/cors-any": {"simHeaders": map[string]any{"Access-Control-Allow-Origin": "*"}},
		"/untyped":  {"simBody": "<html><script>alert(1)</script>", "simHeaders": map[string]any{"X-Content-Type-Options": "nosniff"}},
		"/refresh":  {"simHeaders": map[string]any{"Refresh": "0; url=/next"}},
		"/spaced":   {"simStatus": 302, "simHeaders": map[string]any{"Location": " /x"}},
		"/more-wide": {"simHeaders": map[string]any{"Set-Login": "logged-in", "Access-Control-Allow-Origin": "https://evil.example",
			"Access-Control-Allow-Credentials": "true", "Activate-Storage-Access": "load"}},
		"/cookies": {"simHeaders": map[string]any{
			"Set-Cookie":      []string{"a=1; Path=/", "b=2; Domain=via.example; Path=/", "c=3; domain=.OWN.via.example"},
			"Clear-Site-Data": `"cache", "cookies", "storage"`}},
	}
	for _, net := range []string{"site", "own"} {
		r.simServer(net, func(sim map[string]any) map[string]any {
			if a, ok := answers[sim["simEndpoint"].(string)]; ok {
				return a
			}
			return map[string]any{"simStatus": 404}
		})
	}
	get := func(method, path string) (*http.Response, string) {
		resp, body := rawVia(t, r.URL, method, method+" /via/site"+path+" HTTP/1.1\r\nHost: h\r\n\r\n")
		return resp, string(body)
	}
	getOwn := func(path string) *http.Response {
		resp, _ := rawVia(t, r.URL, "GET", "GET "+path+" HTTP/1.1\r\nHost: own.via.example\r\n\r\n")
		return resp
	}

	resp, body := get("HEAD", "/file")
	assert.Equal(t, "5242880", resp.Header.Get("Content-Length"), "HEAD keeps the declared length")
	assert.Empty(t, body)

	resp, _ = get("GET", "/login")
	assert.Equal(t, "/via/site/dashboard?x=1", resp.Header.Get("Location"), "root-relative: under the prefix")
	assert.Equal(t, "/dashboard?x=1", getOwn("/login").Header.Get("Location"), "host mode: the net's own origin")
	resp, _ = get("GET", "/abs")
	assert.Equal(t, "https://elsewhere.example/x", resp.Header.Get("Location"))
	resp, _ = get("GET", "/known")
	assert.Equal(t, "/via/site/dashboard", resp.Header.Get("Location"), "already under the prefix")
	resp, _ = get("GET", "/proto")
	assert.Equal(t, "//cdn.example/x", resp.Header.Get("Location"))
	for path, want := range map[string]string{"/self": "http://h/via/site/next?a=1", "/self-root": "https://H/via/site/",
		"/self-known": "http://h/via/site/x", "/self-port": "http://h:81/x"} {
		resp, _ = get("GET", path)
		assert.Equal(t, want, resp.Header.Get("Location"), "%s: the relay's own origin goes under the prefix, another stays", path)
	}
	resp, _ = rawVia(t, r.URL, "GET", "GET /self HTTP/1.1\r\nHost: own.via.example\r\n\r\n")
	assert.Equal(t, "http://h/next?a=1", resp.Header.Get("Location"), "host mode: as the net answered")

	resp, body = get("GET", "/origin-wide")
	assert.Equal(t, "page", body)
	for _, name := range []string{"Clear-Site-Data", "Nel", "Report-To", "Reporting-Endpoints", "Service-Worker-Allowed",
		"Set-Cookie", "Strict-Transport-Security", "Alt-Svc", "Accept-Ch"} {
		assert.Empty(t, resp.Header.Values(name), "path mode drops %s", name)
	}
	assert.Equal(t, "1", resp.Header.Get("X-Kept"))
	own := getOwn("/origin-wide")
	assert.Equal(t, `"storage"`, own.Header.Get("Clear-Site-Data"), "host mode keeps what the net's own origin may set")
	assert.Equal(t, "a=1", own.Header.Get("Set-Cookie"))

	resp, body = get("POST", "/reset")
	assert.Equal(t, http.StatusResetContent, resp.StatusCode)
	assert.Equal(t, "0", resp.Header.Get("Content-Length"))
	assert.Empty(t, body)
	resp, body = get("DELETE", "/nothing")
	assert.Equal(t, http.StatusNoContent, resp.StatusCode)
	assert.Empty(t, resp.Header.Values("Content-Length"))
	assert.Empty(t, body)
	resp, body = get("GET", "/notmod")
	assert.Equal(t, http.StatusNotModified, resp.StatusCode)
	assert.Equal(t, `"v1"`, resp.Header.Get("Etag"))
	assert.Empty(t, body)
	resp, body = get("GET", "/liar")
	assert.Equal(t, "3", resp.Header.Get("Content-Length"), "the body's own length")
	assert.Equal(t, "abc", body)
	resp, _ = get("GET", "/info")
	assert.Equal(t, http.StatusBadGateway, resp.StatusCode)

	resp, _ = get("GET", "/cors")
	assert.Equal(t, "https://app.example", resp.Header.Get("Access-Control-Allow-Origin"))
	assert.Equal(t, []string{"Accept-Encoding", "Origin"}, resp.Header.Values("Vary"), "Origin added, not replacing")
	resp, _ = get("GET", "/cors-any")
	assert.Empty(t, resp.Header.Values("Vary"))

	resp, body = get("GET", "/untyped")
	assert.Equal(t, "<html><script>alert(1)</script>", body)
	assert.Empty(t, resp.Header.Values("Content-Type"), "sent as answered: no type sniffed")
	assert.Empty(t, getOwn("/untyped").Header.Values("Content-Type"))
	resp, _ = get("GET", "/refresh")
	assert.Equal(t, "0; url=/via/site/next", resp.Header.Get("Refresh"))
	resp, _ = get("GET", "/spaced")
	assert.Equal(t, "/via/site/x", resp.Header.Get("Location"), "a browser ignores the space")
	resp, _ = get("GET", "/more-wide")
	for _, name := range []string{"Set-Login", "Access-Control-Allow-Credentials", "Activate-Storage-Access"} {
		assert.Empty(t, resp.Header.Values(name), "path mode drops %s", name)
	}

	// Host mode: the net's own origin, but not its parent domain's.
	own = getOwn("/cookies")
	assert.Equal(t, []string{"a=1; Path=/", "c=3; domain=.OWN.via.example"}, own.Header.Values("Set-Cookie"),
		"a cookie for via.example would reach every net")
	assert.Equal(t, `"cache", "storage"`, own.Header.Get("Clear-Site-Data"), `"cookies" clears every net's`)
	resp, raw := rawVia(t, r.URL, "GET", "GET /cookies HTTP/1.1\r\nHost: x.own.via.example\r\n\r\n")
	assert.Equal(t, http.StatusNotFound, resp.StatusCode, "a dotted net has no host under another net's: %s", raw)
}

// TestViaPreflights: the relay answers browser preflights unless the net's
// SimServer asks to see them (pullreqsmart preflight=true); then a
// credentialed preflight gets the SimServer's own answer.
func TestViaPreflights(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.ViaHost = ".via.example" })
	preflight := "OPTIONS /api HTTP/1.1\r\nHost: app.via.example\r\nOrigin: https://web.example\r\n" +
		"Access-Control-Request-Method: PUT\r\nAccess-Control-Request-Headers: x-csrf\r\n\r\n"

	resp, _ := rawVia(t, r.URL, "OPTIONS", preflight)
	assert.Equal(t, http.StatusNoContent, resp.StatusCode, "answered by the relay")
	assert.Equal(t, "PUT", resp.Header.Get("Access-Control-Allow-Methods"))
	assert.Equal(t, 0, r.count("requests"))

	// The SimServer asks to see them.
	require.Empty(t, r.pullReqs("app", testKey, url.Values{"preflight": {"true"}}))
	reply := viaAsync(t, r.URL, "OPTIONS", preflight)
	l, sim := r.leaseOne("app", url.Values{"preflight": {"true"}})
	assert.Equal(t, "OPTIONS", sim["simMethod"])
	assert.Equal(t, "https://web.example", sim["simHeaders"].(map[string]any)["Origin"])
	require.Equal(t, http.StatusOK, r.answer("app", testKey, l.RID, map[string]any{"simStatus": 204, "simHeaders": map[string]any{
		"Access-Control-Allow-Origin": "https://web.example", "Access-Control-Allow-Credentials": "true",
		"Access-Control-Allow-Methods": "PUT", "Access-Control-Allow-Headers": "x-csrf",
	}}).Status)
	resp = <-reply
	assert.Equal(t, http.StatusNoContent, resp.StatusCode)
	assert.Equal(t, "https://web.example", resp.Header.Get("Access-Control-Allow-Origin"), "not *: the credentialed request may go")
	assert.Equal(t, "true", resp.Header.Get("Access-Control-Allow-Credentials"))
	assert.Equal(t, []string{"Origin"}, resp.Header.Values("Vary"))

	// A later poll without it gives them back to the relay.
	require.Empty(t, r.pullReqs("app", testKey, nil))
	resp, _ = rawVia(t, r.URL, "OPTIONS", preflight)
	assert.Equal(t, http.StatusNoContent, resp.StatusCode)
	flushStoreWrites(t, r) // the forwarded one, answered, is deleted: no token reads it
	assert.Equal(t, 0, r.count("requests"), "answered by the relay again")

	rep := r.get("/api/v1/server/pullreqsmart", url.Values{"net": {"app"}, "key": {testKey}, "wait": {"0"}, "preflight": {"perhaps"}})
	assertErrorShape(t, rep, http.StatusBadRequest, "invalid_param")
}

// TestViaBodyErrors: reading the caller's body fails as the API's calls
// do: 408 when it stalls, 400 when the chunked framing is broken, 413 at
// once when Content-Length is over the limit, before any 100 Continue.
func TestViaBodyErrors(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.MaxBody = 1000; c.Listen.ReadBodyTimeout = 200 * time.Millisecond })

	resp, body := rawVia(t, r.URL, "POST", "POST /via/up/x HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nonly part")
	assert.Equal(t, http.StatusRequestTimeout, resp.StatusCode, body)
	assert.Contains(t, string(body), `"body_timeout"`)

	resp, body = rawVia(t, r.URL, "POST", "POST /via/up/x HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nbroken\r\n0\r\n\r\n")
	assert.Equal(t, http.StatusBadRequest, resp.StatusCode, body)
	assert.Contains(t, string(body), `"unreadable_body"`)

	resp, body = rawVia(t, r.URL, "POST", "POST /via/up/x HTTP/1.1\r\nHost: h\r\nContent-Length: 1001\r\nExpect: 100-continue\r\n\r\n")
	assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode, "the final answer, not 100 Continue: %s", body)
	assert.Contains(t, string(body), `"body_too_large"`)
	assert.Equal(t, 0, r.count("requests"))
}

// TestViaLargestAnswer: an answer may be as large as the largest request
// the gateway accepts, after base64.
func TestViaLargestAnswer(t *testing.T) {
	t.Parallel()
	const maxBody = 64 << 10
	r := newTestRelay(t, func(c *config) { c.MaxBody = maxBody })
	payload := make([]byte, maxBody)
	for i := range payload {
		payload[i] = byte(i*7 + i>>8)
	}
	reply := viaAsync(t, r.URL, "PUT", "PUT /via/big/blob HTTP/1.1\r\nHost: h\r\nContent-Type: application/octet-stream\r\n"+
		"Content-Length: "+strconv.Itoa(maxBody)+"\r\n\r\n"+string(payload))
	l, sim := r.leaseOne("big", nil)
	assert.Equal(t, "base64", sim["simBodyEncoding"])
	// The SimServer sends the same bytes back, with headers besides.
	rep := r.answer("big", testKey, l.RID, map[string]any{"simBody": sim["simBody"], "simBodyEncoding": "base64",
		"simHeaders": map[string]any{"Content-Type": "application/octet-stream", "X-Pad": strings.Repeat("p", 4000)}})
	require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	resp := <-reply
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, string(payload), readAll(t, resp))
}
