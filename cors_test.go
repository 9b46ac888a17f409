// CORS: preflights for every route, the headers on responses, a list of
// allowed origins, and HEAD that writes nothing.

package main

import (
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// corsRoutePaths are the paths routes.go registers, wildcards filled in, so
// a route added later is covered too.
func corsRoutePaths(t *testing.T) []string {
	t.Helper()
	src, err := os.ReadFile("routes.go")
	require.NoError(t, err)
	pattern := regexp.MustCompile(`\.Handle(?:Func)?\("(?:[A-Z]+ )?([^"]+)"`)
	wildcard := regexp.MustCompile(`\{[^}]*\}`)
	var paths []string
	for _, m := range pattern.FindAllStringSubmatch(string(src), -1) {
		p := m[1]
		if i := strings.Index(p, "/"); i > 0 { // a host pattern
			p = p[i:]
		}
		p = wildcard.ReplaceAllString(p, "x")
		if !slices.Contains(paths, p) {
			paths = append(paths, p)
		}
	}
	for _, p := range []string{"/healthz", "/api/v1/client/login", "/api/v1/client/pushreq", "/api/v1/client/check",
		"/api/v1/client/pullres", "/api/v1/client/pullsmart", "/api/v1/server/pullreqsmart",
		"/api/v1/server/pushres", "/api/v1/server/extend"} {
		require.Contains(t, paths, p, "routes.go as read by the test")
	}
	return paths
}

func preflight(t *testing.T, base, path, origin string) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodOptions, base+path+"?net=alpha", nil)
	require.NoError(t, err)
	req.Header.Set("Origin", origin)
	req.Header.Set("Access-Control-Request-Method", "POST")
	req.Header.Set("Access-Control-Request-Headers", "authorization, content-type")
	return doRequest(t, req)
}

func TestCORSPreflight(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	for _, path := range append(corsRoutePaths(t), "/api/v1/client/nope") {
		t.Run(path, func(t *testing.T) {
			before := storeRows(t, r)
			rep := preflight(t, r.URL, path, "https://app.example")
			assert.Equal(t, http.StatusNoContent, rep.Status, "body: %s", rep.Body)
			assert.Equal(t, "*", rep.Header.Get("Access-Control-Allow-Origin"))
			methods := headerList(rep.Header, "Access-Control-Allow-Methods")
			if !strings.HasPrefix(path, "/via/") { // the gateway allows what is asked
				assert.Contains(t, methods, "GET")
			}
			assert.Contains(t, methods, "POST")
			var headers []string
			for _, h := range headerList(rep.Header, "Access-Control-Allow-Headers") {
				headers = append(headers, strings.ToLower(h))
			}
			assert.Contains(t, headers, "authorization")
			assert.Contains(t, headers, "content-type")
			if !strings.HasPrefix(path, "/via/") { // an event stream resumes with Last-Event-ID
				assert.Contains(t, headers, "last-event-id")
			}
			assert.Equal(t, before, storeRows(t, r), "a preflight runs no handler: no login from ?net=alpha")
		})
	}
}

func TestCORSOnResponses(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, _ := r.login("alpha")
	for _, c := range []struct {
		call   badCall
		status int
	}{
		{badCall{name: "healthz", method: http.MethodGet, path: "/healthz"}, http.StatusOK},
		{badCall{name: "login", method: http.MethodGet, path: "/api/v1/client/login", query: url.Values{"net": {"alpha"}}}, http.StatusOK},
		{badCall{name: "pushreq", method: http.MethodPost, path: "/api/v1/client/pushreq", contentType: "application/json",
			bearer: tok, body: `{"simEndpoint": "/a"}`}, http.StatusCreated},
		{badCall{name: "pullreqsmart", method: http.MethodPost, path: "/api/v1/server/pullreqsmart",
			contentType: "application/x-www-form-urlencoded", body: "net=alpha&wait=0&key=" + testKey}, http.StatusOK},
		{badCall{name: "pullsmart 204", method: http.MethodGet, path: "/api/v1/client/pullsmart",
			query: url.Values{"token": {tok}, "wait": {"0"}}}, http.StatusNoContent},
		{badCall{name: "401", method: http.MethodPost, path: "/api/v1/client/pushreq", contentType: "application/json",
			body: `{"simEndpoint": "/a"}`}, http.StatusUnauthorized},
		{badCall{name: "400", method: http.MethodGet, path: "/api/v1/client/login"}, http.StatusBadRequest},
		{badCall{name: "404 path", method: http.MethodGet, path: "/nope"}, http.StatusNotFound},
		{badCall{name: "405", method: http.MethodDelete, path: "/api/v1/client/pushreq"}, http.StatusMethodNotAllowed},
		{badCall{name: "415", method: http.MethodPost, path: "/api/v1/client/pushreq", contentType: "text/plain",
			bearer: tok, body: "x"}, http.StatusUnsupportedMediaType},
	} {
		t.Run(c.call.name, func(t *testing.T) {
			for _, origin := range []string{"", "https://app.example"} {
				call := c.call
				req, err := http.NewRequest(call.method, r.URL+call.path+"?"+call.query.Encode(), strings.NewReader(call.body))
				require.NoError(t, err)
				if call.contentType != "" {
					req.Header.Set("Content-Type", call.contentType)
				}
				if call.bearer != "" {
					req.Header.Set("Authorization", "Bearer "+call.bearer)
				}
				if origin != "" {
					req.Header.Set("Origin", origin)
				}
				rep := doRequest(t, req)
				assert.Equal(t, c.status, rep.Status, "body: %s", rep.Body)
				assert.Equal(t, "*", rep.Header.Get("Access-Control-Allow-Origin"), "Origin %q", origin)
			}
		})
	}
}

func TestCORSOriginList(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.CORSOrigin = "https://a.example, https://b.example" })
	call := func(method, path, origin string) reply {
		t.Helper()
		req, err := http.NewRequest(method, r.URL+path, nil)
		require.NoError(t, err)
		if origin != "" {
			req.Header.Set("Origin", origin)
		}
		return doRequest(t, req)
	}
	for _, origin := range []string{"https://a.example", "https://b.example"} {
		t.Run("allowed "+origin, func(t *testing.T) {
			for name, rep := range map[string]reply{
				"success":   call(http.MethodGet, "/api/v1/client/login?net=alpha", origin),
				"error":     call(http.MethodGet, "/api/v1/client/check?token=nope&rid=x", origin),
				"no route":  call(http.MethodGet, "/nope", origin),
				"preflight": preflight(t, r.URL, "/api/v1/client/pushreq", origin),
			} {
				assert.Equal(t, origin, rep.Header.Get("Access-Control-Allow-Origin"), name)
				assert.Contains(t, headerList(rep.Header, "Vary"), "Origin", name)
			}
		})
	}
	t.Run("a gateway answer's own Vary gains Origin", func(t *testing.T) {
		r.simServer("vary", func(map[string]any) map[string]any {
			return map[string]any{"simBody": "ok", "simHeaders": map[string]any{"Vary": "Accept-Encoding"}}
		})
		rep := call(http.MethodGet, "/via/vary/x", "https://a.example")
		require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
		assert.Equal(t, "https://a.example", rep.Header.Get("Access-Control-Allow-Origin"))
		assert.Equal(t, []string{"Accept-Encoding", "Origin"}, rep.Header.Values("Vary"), "added to the SimServer's, not replacing it")
	})
	for _, origin := range []string{"https://c.example", "https://a.example.evil", "null", ""} {
		t.Run("refused "+origin, func(t *testing.T) {
			for name, rep := range map[string]reply{
				"success":   call(http.MethodGet, "/api/v1/client/login?net=alpha", origin),
				"error":     call(http.MethodGet, "/api/v1/client/check?token=nope&rid=x", origin),
				"preflight": preflight(t, r.URL, "/api/v1/client/pushreq", origin),
			} {
				assert.Empty(t, rep.Header.Values("Access-Control-Allow-Origin"), name)
				assert.Contains(t, headerList(rep.Header, "Vary"), "Origin", "%s: caches must key on Origin", name)
			}
		})
	}
}

// TestHeadWritesNothing: the mux routes HEAD to GET patterns; a HEAD on an
// API route is refused and, on login, makes no token.
func TestHeadWritesNothing(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, _ := r.login("demo")
	for path, allow := range map[string]string{
		"/api/v1/client/login?net=demo":                       "GET, POST",
		"/api/v1/server/pullreqsmart?net=demo&key=" + testKey: "GET, POST",
		"/api/v1/peer/stream?token=" + tok:                    "GET",
		"/api/v1/peer/peers?token=" + tok:                     "GET",
	} {
		req, err := http.NewRequest(http.MethodHead, r.URL+path, nil)
		require.NoError(t, err)
		rep := r.do(req)
		assert.Equal(t, http.StatusMethodNotAllowed, rep.Status, path)
		assert.Equal(t, allow, rep.Header.Get("Allow"), path)
	}
	assert.Equal(t, 1, r.count("tokens"), "only the login made here")
	assert.Equal(t, 0, r.count("nets"))
}
