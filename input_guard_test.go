// Malformed input that used to be accepted: JSON nested too deep, text that
// is not UTF-8, NUL in a header value, and terminal escapes that inspect
// used to print raw.

package main

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestMalformedInputRefused: each input is 400 with the error shape and
// writes nothing, wherever the client puts it.
func TestMalformedInputRefused(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, _ := r.login("alpha")
	r.pullReqs("alpha", testKey, nil)
	deep := strings.Repeat("[", 2000) + strings.Repeat("]", 2000)
	raw := func(path, contentType, body string) reply {
		return badCall{method: http.MethodPost, path: path, contentType: contentType, bearer: tok, body: body}.send(t, r.URL)
	}
	for _, tc := range []struct {
		name string
		rep  func() reply
		code string
	}{
		{"simBody 2,000 levels deep", func() reply {
			return raw("/api/v1/client/pushreq", "application/json", `{"sim_req":{"simEndpoint":"/x","simBody":`+deep+`}}`)
		}, "invalid_body"},
		{"sim_req 2,000 levels deep in a form", func() reply {
			return raw("/api/v1/client/pushreq", "application/x-www-form-urlencoded",
				url.Values{"sim_req": {`{"simEndpoint":"/x","simBody":` + deep + `}`}}.Encode())
		}, "invalid_body"},
		{"peer data 2,000 levels deep", func() reply {
			return raw("/api/v1/peer/broadcast", "application/json", `{"data":`+deep+`}`)
		}, "invalid_body"},
		{"simEndpoint not UTF-8", func() reply {
			return raw("/api/v1/client/pushreq", "application/json", "{\"sim_req\":{\"simEndpoint\":\"/x\xff\xfe\"}}")
		}, "invalid_body"},
		{"a form value not UTF-8", func() reply {
			return raw("/api/v1/client/pushreq", "application/x-www-form-urlencoded", "simEndpoint=%2Fx%FF")
		}, "invalid_param"},
		{"simEndpoint with a NUL", func() reply {
			return raw("/api/v1/client/pushreq", "application/json", `{"sim_req":{"simEndpoint":"/x\u0000y"}}`)
		}, "invalid_sim_req"},
		{"a NUL in a simHeaders value", func() reply {
			return raw("/api/v1/client/pushreq", "application/json", `{"sim_req":{"simEndpoint":"/x","simHeaders":{"X-A":"a\u0000b"}}}`)
		}, "invalid_sim_req"},
		{"a CR LF in a sim_res header", func() reply {
			return r.postJSON("/api/v1/server/pushres", testKey, map[string]any{"net": "alpha", "rid": "x",
				"sim_res": map[string]any{"simHeaders": map[string]any{"X-A": []string{"ok", "a\r\nSet-Cookie: x=1"}}}})
		}, "invalid_sim_res"},
		{"a NUL in a sim_res header", func() reply {
			return r.postJSON("/api/v1/server/pushres", testKey, map[string]any{"net": "alpha", "rid": "x",
				"sim_res": map[string]any{"simHeaders": map[string]any{"X-A": "a\x00b"}}})
		}, "invalid_sim_res"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := storeRows(t, r)
			assertErrorShape(t, tc.rep(), http.StatusBadRequest, tc.code)
			assert.Equal(t, before, storeRows(t, r), "a refused call writes nothing")
		})
	}
	// 100 levels, the body's own two objects included, is allowed.
	ok := strings.Repeat("[", 98) + strings.Repeat("]", 98)
	assert.Equal(t, http.StatusCreated, raw("/api/v1/client/pushreq", "application/json", `{"sim_req":{"simEndpoint":"/x","simBody":`+ok+`}}`).Status)
}

// TestInspectEscapesControlCharacters: a simEndpoint holding terminal
// escapes, and a gateway body nested too deep to be JSON for SQLite, are
// stored, and inspect prints them with the escapes made visible: one table
// row per request, nothing a terminal acts on.
func TestInspectEscapesControlCharacters(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, _ := r.login("alpha")
	evil := "/x\x1b]0;pwned\x07\x1b[2J\r\nfake-rid  queued  0  peer  GET  /\t\u009b"
	rid := r.push(tok, map[string]any{"simEndpoint": evil})
	req, err := http.NewRequest(http.MethodPost, r.URL+"/via/alpha/deep", strings.NewReader(strings.Repeat("[", 2000)+strings.Repeat("]", 2000)))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Prefer", "respond-async")
	require.Equal(t, http.StatusAccepted, r.do(req).Status)

	for _, args := range [][]string{{"alpha"}, {"--rid", rid}, {}} {
		out, err := runCLI(t, nil, append([]string{"inspect", "--db", r.DBPath}, args...)...)
		require.NoError(t, err, "inspect %v", args)
		assert.False(t, strings.ContainsAny(out, "\x1b\x07\r\t\u009b"), "inspect %v printed a control character: %q", args, out)
		if len(args) == 1 {
			lines := strings.Split(strings.TrimSpace(out), "\n")
			assert.Len(t, lines, 3, "a header and a row per request: %q", out)
			assert.Contains(t, out, `\x1b]0;pwned\x07`)
		}
	}
	out, err := runCLI(t, nil, "inspect", "--db", r.DBPath, "--rid", rid)
	require.NoError(t, err)
	assert.True(t, bytes.Contains([]byte(out), []byte(`\u001b`)), "the stored JSON keeps its escapes: %s", out)
}

// TestObjectsOfManyNames: simHeaders, simQueryParams and simRouteParams,
// and a call's JSON body, hold at most maxMembers names; one more is 400
// before it is decoded name by name, and nothing is written.
func TestObjectsOfManyNames(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, _ := r.login("names")
	object := func(n int) map[string]any {
		m := make(map[string]any, n)
		for i := range n {
			m[fmt.Sprintf("X-%d", i)] = "v"
		}
		return m
	}
	for _, field := range []string{"simHeaders", "simQueryParams", "simRouteParams"} {
		rep := r.postJSON("/api/v1/client/pushreq", tok, map[string]any{"simEndpoint": "/x", field: object(maxMembers)})
		assert.Equal(t, http.StatusCreated, rep.Status, "%s of %d names: %s", field, maxMembers, rep.Body)
		before := r.count("requests")
		rep = r.postJSON("/api/v1/client/pushreq", tok, map[string]any{"simEndpoint": "/x", field: object(maxMembers + 1)})
		assertErrorShape(t, rep, http.StatusBadRequest, "invalid_sim_req")
		assert.Contains(t, string(rep.Body), fmt.Sprintf("%d names", maxMembers+1))
		assert.Equal(t, before, r.count("requests"), "nothing written")
		rep = r.answer("names", testKey, "no-rid", map[string]any{"simHeaders": object(maxMembers + 1)})
		if field == "simHeaders" {
			assertErrorShape(t, rep, http.StatusBadRequest, "invalid_sim_res")
		}
	}
	body := object(maxMembers + 1)
	body["net"] = "names"
	rep := r.postJSON("/api/v1/client/login", "", body)
	assertErrorShape(t, rep, http.StatusBadRequest, "invalid_body")

	// Names inside a string or a deeper object do not count.
	assert.Equal(t, 2, objectMembers([]byte(`{"a":"x:y","b":{"c":1,"d":[{"e":2}]}}`)))
	assert.Equal(t, 1, objectMembers([]byte(`{"a\":b":1}`)))
}
