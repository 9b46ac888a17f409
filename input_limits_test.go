// Bad input at the edges: routes that look unknown, bodies over the limit,
// and values at the boundaries of what each parameter accepts.

package main

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestBadInputLooksUnknown: a rid of another token (or, for a SimServer,
// another net) is answered exactly like a rid that does not exist, so a
// caller learns nothing about it.
func TestBadInputLooksUnknown(t *testing.T) {
	t.Parallel()
	f := newBadInputFixture(t)
	r := f.r
	for _, c := range []struct {
		name           string
		unknown, other badCall
	}{
		{"check",
			badCall{method: http.MethodGet, path: "/api/v1/client/check", query: url.Values{"token": {f.tok}, "rid": {"AAAAAAAAAAAAAAAAAAAAAA"}}},
			badCall{method: http.MethodGet, path: "/api/v1/client/check", query: url.Values{"token": {f.tok}, "rid": {f.otherRid}}}},
		{"pullres",
			badCall{method: http.MethodGet, path: "/api/v1/client/pullres", query: url.Values{"token": {f.tok}, "rid": {"AAAAAAAAAAAAAAAAAAAAAA"}}},
			badCall{method: http.MethodGet, path: "/api/v1/client/pullres", query: url.Values{"token": {f.tok}, "rid": {f.otherRid}}}},
		{"pullsmart",
			badCall{method: http.MethodGet, path: "/api/v1/client/pullsmart", query: url.Values{"token": {f.tok}, "rid": {"AAAAAAAAAAAAAAAAAAAAAA"}, "wait": {"0"}}},
			badCall{method: http.MethodGet, path: "/api/v1/client/pullsmart", query: url.Values{"token": {f.tok}, "rid": {f.otherRid}, "wait": {"0"}}}},
		{"pushres",
			badCall{method: http.MethodPost, path: "/api/v1/server/pushres", contentType: "application/json", bearer: testKey,
				body: `{"net": "alpha", "rid": "AAAAAAAAAAAAAAAAAAAAAA", "sim_res": {}}`},
			badCall{method: http.MethodPost, path: "/api/v1/server/pushres", contentType: "application/json", bearer: testKey,
				body: `{"net": "alpha", "rid": "` + f.betaRid + `", "sim_res": {}}`}},
		{"extend",
			badCall{method: http.MethodPost, path: "/api/v1/server/extend", contentType: "application/json", bearer: testKey,
				body: `{"net": "alpha", "rid": "AAAAAAAAAAAAAAAAAAAAAA"}`},
			badCall{method: http.MethodPost, path: "/api/v1/server/extend", contentType: "application/json", bearer: testKey,
				body: `{"net": "alpha", "rid": "` + f.betaRid + `"}`}},
		{"peer send",
			badCall{method: http.MethodPost, path: "/api/v1/peer/send", contentType: "application/json", bearer: f.tok,
				body: `{"to": "AAAAAAAAAAAAAAAA", "data": 1}`},
			badCall{method: http.MethodPost, path: "/api/v1/peer/send", contentType: "application/json", bearer: f.tok,
				body: `{"to": "` + f.betaPeer + `", "data": 1}`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			unknown, other := c.unknown.send(t, r.URL), c.other.send(t, r.URL)
			assertErrorShape(t, unknown, http.StatusNotFound, "")
			assert.Equal(t, unknown.Status, other.Status)
			assert.Equal(t, string(unknown.Body), string(other.Body))
			assert.Equal(t, unknown.Header.Get("Content-Type"), other.Header.Get("Content-Type"))
		})
	}
	// The rids are still there for their owners.
	assert.Equal(t, statusDelivered, ridStatus(t, r, f.otherTok, f.otherRid))
	assert.Equal(t, statusDelivered, ridStatus(t, r, f.betaTok, f.betaRid))
}

// TestBadInputBodyTooLarge: a body over --max-body is 413 and writes
// nothing; a body of exactly --max-body is read.
func TestBadInputBodyTooLarge(t *testing.T) {
	t.Parallel()
	const maxBody = 200
	r := newTestRelay(t, func(c *config) { c.MaxBody = maxBody })
	tok, _ := r.login("alpha")
	sized := func(prefix, suffix string, size int) string {
		return prefix + strings.Repeat("x", size-len(prefix)-len(suffix)) + suffix
	}
	post := func(path, contentType, bearer, body string) reply {
		return badCall{method: http.MethodPost, path: path, contentType: contentType, bearer: bearer, body: body}.send(t, r.URL)
	}

	rep := post("/api/v1/client/login", "application/json", "", sized(`{"net": "alpha", "pad": "`, `"}`, maxBody))
	require.Equal(t, http.StatusOK, rep.Status, "a body of exactly --max-body: %s", rep.Body)

	for _, c := range []struct {
		name, path, contentType, bearer, body string
	}{
		{"login JSON one byte over", "/api/v1/client/login", "application/json", "",
			sized(`{"net": "alpha", "pad": "`, `"}`, maxBody+1)},
		{"login form", "/api/v1/client/login", "application/x-www-form-urlencoded", "",
			sized("net=alpha&pad=", "", 4*maxBody)},
		// pushreq, pushres and pullreqsmart carry a body of --max-body in base64.
		{"pushreq JSON", "/api/v1/client/pushreq", "application/json", tok,
			sized(`{"sim_req": {"simEndpoint": "/a", "simBody": "`, `"}}`, int(simEnvelope(maxBody))+1)},
		{"pushreq text/plain", "/api/v1/client/pushreq", "text/plain", tok, strings.Repeat("x", int(simEnvelope(maxBody))+1)},
		{"pushres on an unclaimed net", "/api/v1/server/pushres", "application/json", freshKey,
			sized(`{"net": "fresh", "rid": "x", "sim_res": {"simBody": "`, `"}}`, int(simEnvelope(maxBody))+1)},
		// pullreqsmart may carry answers: pushres's limit.
		{"pullreqsmart on an unclaimed net", "/api/v1/server/pullreqsmart", "application/json", freshKey,
			sized(`{"net": "fresh", "wait": 0, "pad": "`, `"}`, int(simEnvelope(maxBody))+1)},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := storeRows(t, r)
			counts := map[string]int{"requests": r.count("requests"), "tokens": r.count("tokens"), "nets": r.count("nets")}
			rep := post(c.path, c.contentType, c.bearer, c.body)
			// The limit comes before the type: a big body of any type is 413.
			assertErrorShape(t, rep, http.StatusRequestEntityTooLarge, "body_too_large")
			assert.Equal(t, "*", rep.Header.Get("Access-Control-Allow-Origin"))
			for table, n := range counts {
				assert.Equal(t, n, r.count(table), "rows in %s", table)
			}
			assert.Equal(t, before, storeRows(t, r))
		})
	}
}

// TestBadInputBoundaries: the values just inside each limit are accepted,
// so the refusals in TestBadInput are for the reason they name.
func TestBadInputBoundaries(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	for _, net := range []string{strings.Repeat("n", 64), "a", "A.b_c-9"} {
		tok, _ := r.login(net)
		rid := r.push(tok, map[string]any{"simEndpoint": "/a", "simMethod": "M-SEARCH",
			"simHeaders": map[string]any{"X-A": "1", "X-B": []string{"2", "3"}}, "simBody": "AA==", "simBodyEncoding": "base64"})
		key := "k123456789abcdef" // exactly 16 characters claims an unclaimed net
		got := r.pullReqs(net, key, url.Values{"max": {"100"}, "lease": {"0.5"}})
		require.Len(t, got, 1, net)
		for _, status := range []any{100, 599, "404"} {
			rep := r.answer(net, key, rid, map[string]any{"simStatus": status})
			if status == 100 {
				assert.Equal(t, http.StatusOK, rep.Status, "simStatus %v: %s", status, rep.Body)
			} else {
				assert.Equal(t, http.StatusConflict, rep.Status, "validated, then refused as already answered: %s", rep.Body)
			}
		}
	}
}
