// End-to-end tests of the client and server API over HTTP against a real
// SQLite file: login, pushreq, check/pullres/pullsmart, pullreqsmart,
// pushres, extend, and the JSON round trip.

package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

var urlSafe = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func TestLogin(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	form := url.Values{"net": {"demo"}}
	replies := map[string]reply{
		"GET":       r.get("/api/v1/client/login", form),
		"POST JSON": r.postJSON("/api/v1/client/login", "", map[string]any{"net": "demo"}),
		"POST form": r.postForm("/api/v1/client/login", form),
	}
	seen := map[string]bool{}
	for name, rep := range replies {
		t.Run(name, func(t *testing.T) {
			require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
			tok, peer := rep.str("token"), rep.str("peer_id")
			assert.Regexp(t, urlSafe, tok)
			raw, err := base64.RawURLEncoding.DecodeString(tok)
			require.NoError(t, err)
			assert.GreaterOrEqual(t, len(raw)*8, 128, "token entropy in bits")
			assert.Regexp(t, urlSafe, peer)
			assert.NotEqual(t, tok, peer)
			assert.Equal(t, "demo", rep.str("net"))
			exp, err := time.Parse(time.RFC3339, rep.str("expires_at"))
			require.NoError(t, err)
			assert.Equal(t, r.clock.Now().Add(24*time.Hour).UnixMilli(), exp.UnixMilli())
			assert.False(t, seen[tok] || seen[peer], "tokens and peer ids are distinct")
			seen[tok], seen[peer] = true, true
		})
	}
	assert.Equal(t, 3, r.count("tokens"))

	t.Run("invalid net names", func(t *testing.T) {
		for _, net := range []string{"", "a b", "a/b", "ü", string(bytes.Repeat([]byte("x"), 65))} {
			rep := r.get("/api/v1/client/login", url.Values{"net": {net}})
			assert.Equal(t, http.StatusBadRequest, rep.Status, net)
		}
		for _, net := range []string{"a", "A.b_c-9", string(bytes.Repeat([]byte("x"), 64))} {
			rep := r.get("/api/v1/client/login", url.Values{"net": {net}})
			assert.Equal(t, http.StatusOK, rep.Status, net)
		}
	})
}

// TestSecretsAreHashed: neither a token nor a key is anywhere in the store's
// files, only their hashes.
func TestSecretsAreHashed(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, _ := r.login("demo")
	r.pullReqs("demo", testKey, nil)

	var n int
	require.NoError(t, r.store.r.QueryRow(`SELECT count(*) FROM tokens WHERE token_hash = ?`, secretHash(tok)).Scan(&n))
	assert.Equal(t, 1, n)
	require.NoError(t, r.store.r.QueryRow(`SELECT count(*) FROM nets WHERE name = 'demo' AND key_hash = ?`, secretHash(testKey)).Scan(&n))
	assert.Equal(t, 1, n)
	if testPostgresURL() != "" { // no file: every row of every table, as text
		flushStoreWrites(t, r)
		for _, table := range []string{"nets", "tokens", "requests", "messages", "subscriptions", "settings", "answer_parts", "net_usage"} {
			for _, secret := range []string{tok, testKey} {
				require.NoError(t, r.store.r.QueryRow(`SELECT count(*) FROM `+table+` x WHERE position(? in CAST(x AS text)) > 0`, secret).Scan(&n))
				assert.Zero(t, n, "a secret in %s", table)
			}
		}
	}
	for _, f := range []string{r.DBPath, r.DBPath + "-wal"} {
		b, err := os.ReadFile(f)
		if os.IsNotExist(err) {
			continue
		}
		require.NoError(t, err)
		assert.False(t, bytes.Contains(b, []byte(tok)), "token in %s", f)
		assert.False(t, bytes.Contains(b, []byte(testKey)), "key in %s", f)
	}
}

func TestPushReqShapes(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, peer := r.login("demo")
	want := `{"simEndpoint":"/items/7","simMethod":"PUT","simHeaders":{"X-A":"1"},"simBody":"plain text",
		"simQueryParams":{"q":"x"},"simRouteParams":{"id":"7"}}`

	cases := []struct {
		name string
		send func() reply
		want string
	}{
		{"sim_req object, bearer token", func() reply {
			return r.postJSON("/api/v1/client/pushreq", tok, map[string]any{"sim_req": json.RawMessage(want)})
		}, want},
		{"sim_req as JSON text in a form field, token field", func() reply {
			return r.postForm("/api/v1/client/pushreq", url.Values{"token": {tok}, "sim_req": {want}})
		}, want},
		{"top-level fields in JSON, token in the query", func() reply {
			var fields map[string]any
			require.NoError(t, json.Unmarshal([]byte(want), &fields))
			fields["token"] = tok
			b, _ := json.Marshal(fields)
			req, _ := http.NewRequest(http.MethodPost, r.URL+"/api/v1/client/pushreq?token="+tok, bytes.NewReader(b))
			req.Header.Set("Content-Type", "application/json")
			return r.do(req)
		}, want},
		{"top-level fields in a form: simBody plain, objects as JSON text", func() reply {
			return r.postForm("/api/v1/client/pushreq", url.Values{"token": {tok},
				"simEndpoint": {"/items/7"}, "simMethod": {"PUT"}, "simHeaders": {`{"X-A":"1"}`},
				"simBody": {"plain text"}, "simQueryParams": {`{"q":"x"}`}, "simRouteParams": {`{"id":"7"}`}})
		}, want},
		{"defaults: only simEndpoint", func() reply {
			return r.postJSON("/api/v1/client/pushreq", tok, map[string]any{"simEndpoint": "/x"})
		}, `{"simEndpoint":"/x","simMethod":"POST","simHeaders":{},"simBody":null,"simQueryParams":{},"simRouteParams":{}}`},
		{"token in the query of a GET-style form post", func() reply {
			req, _ := http.NewRequest(http.MethodPost, r.URL+"/api/v1/client/pushreq?token="+tok+"&simEndpoint=/q", nil)
			return r.do(req)
		}, `{"simEndpoint":"/q","simMethod":"POST","simHeaders":{},"simBody":null,"simQueryParams":{},"simRouteParams":{}}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rep := tc.send()
			require.Equal(t, http.StatusCreated, rep.Status, string(rep.Body))
			rid := rep.str("rid")
			require.NotEmpty(t, rid)
			got := r.pullReqs("demo", testKey, nil)
			require.Len(t, got, 1)
			assert.Equal(t, rid, got[0].RID)
			assert.Equal(t, peer, got[0].From)
			assert.JSONEq(t, tc.want, string(got[0].SimReq))
		})
	}
}

func TestCheckPullResPullSmart(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, _ := r.login("demo")
	rid := r.push(tok, map[string]any{"simEndpoint": "/a"})
	q := url.Values{"token": {tok}, "rid": {rid}}

	rep := r.get("/api/v1/client/check", q)
	require.Equal(t, http.StatusOK, rep.Status)
	assert.Equal(t, "queued", rep.str("status"))
	assert.Equal(t, json.Number("0"), rep.JSON["attempt"])

	rep = r.get("/api/v1/client/pullres", q)
	assert.Equal(t, http.StatusAccepted, rep.Status)
	assert.Equal(t, map[string]any{"rid": rid, "status": "queued"}, rep.JSON)

	r.pullReqs("demo", testKey, nil)
	rep = r.postForm("/api/v1/client/check", q)
	assert.Equal(t, "delivered", rep.str("status"))
	assert.Equal(t, json.Number("1"), rep.JSON["attempt"])
	rep = r.get("/api/v1/client/pullsmart", url.Values{"token": {tok}, "rid": {rid}, "wait": {"0"}})
	assert.Equal(t, http.StatusAccepted, rep.Status)
	assert.Equal(t, "delivered", rep.str("status"))

	require.Equal(t, http.StatusOK, r.answer("demo", testKey, rid, map[string]any{"simStatus": 201, "simBody": "made"}).Status)
	assert.Equal(t, "answered", r.get("/api/v1/client/check", q).str("status"))
	for i := 0; i < 2; i++ { // re-reading after a lost reply works
		rep = r.get("/api/v1/client/pullres", q)
		require.Equal(t, http.StatusOK, rep.Status)
		assert.Equal(t, rid, rep.str("rid"))
		assert.Equal(t, map[string]any{"simStatus": json.Number("201"), "simHeaders": map[string]any{}, "simBody": "made"}, rep.JSON["sim_res"])
	}
	rep = r.postJSON("/api/v1/client/pullsmart", tok, map[string]any{"rid": rid})
	require.Equal(t, http.StatusOK, rep.Status)
	assert.Equal(t, rid, rep.str("rid"))

	t.Run("another token's rid is 404 like an unknown one", func(t *testing.T) {
		other, _ := r.login("demo")
		unknown := r.get("/api/v1/client/check", url.Values{"token": {other}, "rid": {"no-such-rid"}})
		require.Equal(t, http.StatusNotFound, unknown.Status)
		for _, path := range []string{"/api/v1/client/check", "/api/v1/client/pullres", "/api/v1/client/pullsmart"} {
			rep := r.get(path, url.Values{"token": {other}, "rid": {rid}, "wait": {"0"}})
			assert.Equal(t, unknown.Status, rep.Status, path)
			assert.Equal(t, unknown.Body, rep.Body, path)
		}
	})
}

func TestPullSmartWithoutRID(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, _ := r.login("demo")
	other, _ := r.login("demo")
	rids := make([]string, 4)
	for i := range rids {
		rids[i] = r.push(tok, map[string]any{"simEndpoint": "/n", "simBody": i})
	}
	otherRID := r.push(other, map[string]any{"simEndpoint": "/other"})
	require.Len(t, r.pullReqs("demo", testKey, url.Values{"max": {"10"}}), 5)
	// Answer out of order: 2, 0, 3, 1 (and the other token's); oldest answer first.
	for _, i := range []int{2, 0, 3, 1} {
		r.clock.Advance(time.Second)
		require.Equal(t, http.StatusOK, r.answer("demo", testKey, rids[i], map[string]any{"simBody": i}).Status)
	}
	require.Equal(t, http.StatusOK, r.answer("demo", testKey, otherRID, map[string]any{}).Status)
	// A pull by rid counts as pulled.
	require.Equal(t, http.StatusOK, r.get("/api/v1/client/pullres", url.Values{"token": {tok}, "rid": {rids[3]}}).Status)

	var got []string
	for {
		rep := r.get("/api/v1/client/pullsmart", url.Values{"token": {tok}, "wait": {"0"}})
		if rep.Status == http.StatusNoContent {
			assert.Empty(t, rep.Body)
			break
		}
		require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
		got = append(got, rep.str("rid"))
		require.Less(t, len(got), 10, "pullsmart keeps returning the same responses")
	}
	assert.Equal(t, []string{rids[2], rids[0], rids[1]}, got)
	// Pulled responses are still readable by rid.
	assert.Equal(t, http.StatusOK, r.get("/api/v1/client/pullres", url.Values{"token": {tok}, "rid": {rids[2]}}).Status)
}

func TestPullReqSmartLeases(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.MaxAttempts = 3 })
	tok, _ := r.login("demo")

	t.Run("a key claims an unclaimed net; a wrong key is 403", func(t *testing.T) {
		assert.Equal(t, 0, r.count("nets"))
		r.pullReqs("demo", testKey, nil)
		assert.Equal(t, 1, r.count("nets"))
		rep, _ := r.pullReqsReply("demo", "another-key-0123456789", nil)
		assert.Equal(t, http.StatusForbidden, rep.Status)
		assert.Equal(t, "wrong_key", rep.errorCode())
		// The bearer header works like the key parameter.
		req, _ := http.NewRequest(http.MethodGet, r.URL+"/api/v1/server/pullreqsmart?net=demo&wait=0", nil)
		req.Header.Set("Authorization", "Bearer "+testKey)
		assert.Equal(t, http.StatusOK, r.do(req).Status)
	})

	t.Run("oldest first, max", func(t *testing.T) {
		var rids []string
		for i := 0; i < 5; i++ {
			rids = append(rids, r.push(tok, map[string]any{"simEndpoint": "/o"}))
		}
		first := r.pullReqs("demo", testKey, url.Values{"max": {"3"}})
		rest := r.pullReqs("demo", testKey, url.Values{"max": {"100"}})
		var got []string
		for _, l := range append(first, rest...) {
			got = append(got, l.RID)
			r.answer("demo", testKey, l.RID, map[string]any{})
		}
		assert.Len(t, first, 3)
		assert.Equal(t, rids, got)
		assert.Empty(t, r.pullReqs("demo", testKey, nil))
	})

	t.Run("an expired lease hands the request out again; attempt counts up", func(t *testing.T) {
		rid := r.push(tok, map[string]any{"simEndpoint": "/lease"})
		got := r.pullReqs("demo", testKey, url.Values{"lease": {"10"}})
		require.Len(t, got, 1)
		assert.Equal(t, 1, got[0].Attempt)
		assert.Equal(t, formatMS(r.clock.Now().Add(10*time.Second).UnixMilli()), got[0].LeaseExpiresAt)
		r.clock.Advance(9 * time.Second)
		assert.Empty(t, r.pullReqs("demo", testKey, nil), "lease still held")
		r.clock.Advance(time.Second)
		got = r.pullReqs("demo", testKey, url.Values{"lease": {"10"}})
		require.Len(t, got, 1)
		assert.Equal(t, rid, got[0].RID)
		assert.Equal(t, 2, got[0].Attempt)

		t.Run("extend keeps the lease", func(t *testing.T) {
			r.clock.Advance(8 * time.Second)
			rep := r.postJSON("/api/v1/server/extend", testKey, map[string]any{"net": "demo", "rid": rid, "lease": 10})
			require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
			assert.Equal(t, formatMS(r.clock.Now().Add(10*time.Second).UnixMilli()), rep.str("lease_expires_at"))
			r.clock.Advance(5 * time.Second) // past the first lease, within the extended one
			assert.Empty(t, r.pullReqs("demo", testKey, nil))
			require.Equal(t, http.StatusOK, r.answer("demo", testKey, rid, map[string]any{}).Status)
			rep = r.postJSON("/api/v1/server/extend", testKey, map[string]any{"net": "demo", "rid": rid, "lease": 10})
			assert.Equal(t, http.StatusConflict, rep.Status)
		})
	})

	t.Run("extend after the lease ran out is 409", func(t *testing.T) {
		rid := r.push(tok, map[string]any{"simEndpoint": "/lost"})
		require.Len(t, r.pullReqs("demo", testKey, url.Values{"lease": {"5"}}), 1)
		r.clock.Advance(6 * time.Second)
		rep := r.postJSON("/api/v1/server/extend", testKey, map[string]any{"net": "demo", "rid": rid, "lease": 10})
		assert.Equal(t, http.StatusConflict, rep.Status)
		assert.Equal(t, "lease_lost", rep.errorCode())
		// It is still answerable: the answer wins over the lost lease.
		assert.Equal(t, http.StatusOK, r.answer("demo", testKey, rid, map[string]any{}).Status)
	})

	t.Run("after max attempts the request is failed", func(t *testing.T) {
		rid := r.push(tok, map[string]any{"simEndpoint": "/poison"})
		for attempt := 1; attempt <= 3; attempt++ {
			got := r.pullReqs("demo", testKey, url.Values{"lease": {"5"}})
			require.Len(t, got, 1)
			assert.Equal(t, attempt, got[0].Attempt)
			r.clock.Advance(6 * time.Second)
		}
		assert.Empty(t, r.pullReqs("demo", testKey, nil), "a failed request is never handed out again")
		q := url.Values{"token": {tok}, "rid": {rid}}
		rep := r.get("/api/v1/client/check", q)
		assert.Equal(t, "failed", rep.str("status"))
		assert.Equal(t, json.Number("3"), rep.JSON["attempt"])
		rep = r.get("/api/v1/client/pullres", q)
		assert.Equal(t, http.StatusGone, rep.Status)
		assert.Equal(t, "failed", rep.errorCode())
		rep = r.answer("demo", testKey, rid, map[string]any{})
		assert.Equal(t, http.StatusGone, rep.Status)
		// The janitor writes it down; it stays failed.
		_, err := r.store.purge(t.Context(), purgeOptions{})
		require.NoError(t, err)
		var status string
		require.NoError(t, r.store.r.QueryRow(`SELECT status FROM requests WHERE rid = ?`, rid).Scan(&status))
		assert.Equal(t, "failed", status)
	})
}

func TestPushRes(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, _ := r.login("demo")
	rid := r.push(tok, map[string]any{"simEndpoint": "/x"})
	r.pullReqs("demo", testKey, nil)

	rep := r.answer("demo", testKey, rid, map[string]any{"simBody": 1})
	require.Equal(t, http.StatusOK, rep.Status)
	assert.Equal(t, map[string]any{"rid": rid, "status": "answered"}, rep.JSON)
	rep = r.answer("demo", testKey, rid, map[string]any{"simBody": 2})
	assert.Equal(t, http.StatusConflict, rep.Status)
	assert.Equal(t, "already_answered", rep.errorCode())
	assert.Equal(t, http.StatusNotFound, r.answer("demo", testKey, "no-such-rid", map[string]any{}).Status)

	// Another net's rid is unknown to this net's SimServer.
	otherTok, _ := r.login("other")
	otherRID := r.push(otherTok, map[string]any{"simEndpoint": "/x"})
	assert.Equal(t, http.StatusNotFound, r.answer("demo", testKey, otherRID, map[string]any{}).Status)
	assert.Equal(t, "queued", r.get("/api/v1/client/check", url.Values{"token": {otherTok}, "rid": {otherRID}}).str("status"))

	// Top-level sim_res fields in a form.
	rid2 := r.push(tok, map[string]any{"simEndpoint": "/y"})
	rep = r.postForm("/api/v1/server/pushres", url.Values{"net": {"demo"}, "key": {testKey}, "rid": {rid2},
		"simStatus": {"404"}, "simHeaders": {`{"X-Why":"gone"}`}, "simBody": {"not here"}})
	require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	rep = r.get("/api/v1/client/pullres", url.Values{"token": {tok}, "rid": {rid2}})
	res, _ := json.Marshal(rep.JSON["sim_res"])
	assert.JSONEq(t, `{"simStatus":404,"simHeaders":{"X-Why":"gone"},"simBody":"not here"}`, string(res))
}

// TestJSONRoundTrip: sim_req and sim_res come back with the same JSON
// meaning, numbers digit for digit.
func TestJSONRoundTrip(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, _ := r.login("demo")
	body := `{"unicode":"héllo ✓ 🚀 \u0000 <&>","nested":{"a":[1,[2,{"b":null}],{}],"e":[]},
		"null":null,"t":true,"big":12345678901234567890,"tiny":1e-7,"neg":-0.5,"one":1.0,"exp":6.02E23}`
	simReq := `{"simEndpoint":"/ü/7?x","simMethod":"PATCH","simHeaders":{"X-Multi":["a","b"]},
		"simBody":` + body + `,"simQueryParams":{"k":["1","2"]},"simRouteParams":{"id":"ü"}}`
	rid := r.push(tok, json.RawMessage(simReq))
	got := r.pullReqs("demo", testKey, nil)
	require.Len(t, got, 1)
	assert.JSONEq(t, simReq, string(got[0].SimReq))
	for _, digits := range []string{"12345678901234567890", "1e-7", "1.0", "6.02E23"} {
		assert.Contains(t, string(got[0].SimReq), digits, "number kept as sent")
	}

	simRes := `{"simStatus":299,"simHeaders":{"Content-Type":"application/json"},"simBody":` + body + `}`
	require.Equal(t, http.StatusOK, r.answer("demo", testKey, rid, json.RawMessage(simRes)).Status)
	rep := r.get("/api/v1/client/pullres", url.Values{"token": {tok}, "rid": {rid}})
	require.Equal(t, http.StatusOK, rep.Status)
	var out struct {
		SimRes json.RawMessage `json:"sim_res"`
	}
	require.NoError(t, json.Unmarshal(rep.Body, &out))
	assert.JSONEq(t, simRes, string(out.SimRes))
	assert.Contains(t, string(out.SimRes), "12345678901234567890")
}
