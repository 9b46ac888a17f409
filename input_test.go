// Bad input and CORS: every call that fails answers the JSON error shape with
// a fitting status and writes nothing; every route answers a CORS preflight
// and every response carries Access-Control-Allow-Origin.

package main

import (
	"bytes"
	"encoding/json"
	"io"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// badCall is one HTTP call the relay must refuse.
type badCall struct {
	name        string
	method      string
	path        string
	query       url.Values
	contentType string
	body        string
	bearer      string
	header      http.Header
	status      int
	code        string   // the error code
	allow       []string // 405: methods Allow must name
}

func (c badCall) send(t *testing.T, base string) reply {
	t.Helper()
	u := base + c.path
	if len(c.query) > 0 {
		u += "?" + c.query.Encode()
	}
	var body io.Reader
	if c.body != "" {
		body = strings.NewReader(c.body)
	}
	req, err := http.NewRequest(c.method, u, body)
	require.NoError(t, err)
	if c.contentType != "" {
		req.Header.Set("Content-Type", c.contentType)
	}
	if c.bearer != "" {
		req.Header.Set("Authorization", "Bearer "+c.bearer)
	}
	for k, v := range c.header {
		req.Header[k] = v
	}
	return doRequest(t, req)
}

var snakeCaseCode = regexp.MustCompile(`^[a-z][a-z0-9]*(_[a-z0-9]+)*$`)

// assertErrorShape checks an error reply: status, JSON content type, and
// exactly {"error": {"code": "snake_case", "message": "..."}}.
func assertErrorShape(t *testing.T, rep reply, status int, code string) {
	t.Helper()
	assert.Equal(t, status, rep.Status, "body: %s", rep.Body)
	mediaType, _, err := mime.ParseMediaType(rep.Header.Get("Content-Type"))
	assert.NoError(t, err)
	assert.Equal(t, "application/json", mediaType)
	var shape struct {
		Error *struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(rep.Body))
	dec.DisallowUnknownFields()
	if !assert.NoError(t, dec.Decode(&shape), "body: %s", rep.Body) || !assert.NotNil(t, shape.Error, "body: %s", rep.Body) {
		return
	}
	assert.Regexp(t, snakeCaseCode, shape.Error.Code)
	assert.NotEmpty(t, strings.TrimSpace(shape.Error.Message))
	if code != "" {
		assert.Equal(t, code, shape.Error.Code, "body: %s", rep.Body)
	}
}

// rawBody is a body sent as it is, malformed or not.
type rawBody string

// toJSON marshals v; a rawBody stays as it is.
func toJSON(t *testing.T, v any) string {
	t.Helper()
	if s, ok := v.(rawBody); ok {
		return string(s)
	}
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

// badInputFixture is a relay with two SimClients and a SimServer in alpha,
// and a net beta with its own key. tok has sent otherTok a peer message and
// is subscribed to the topic news.
type badInputFixture struct {
	r                *testRelay
	tok, otherTok    string // alpha
	peer, otherPeer  string // their peer_ids
	rid, otherRid    string // alpha, delivered: rid is tok's, otherRid otherTok's
	betaTok, betaRid string
	betaPeer         string
}

const (
	betaKey  = "beta-key-0123456789"
	freshKey = "fresh-key-0123456789" // no net has it
)

func newBadInputFixture(t *testing.T) *badInputFixture {
	t.Helper()
	r := newTestRelay(t)
	f := &badInputFixture{r: r}
	f.tok, f.peer = r.login("alpha")
	f.otherTok, f.otherPeer = r.login("alpha")
	f.betaTok, f.betaPeer = r.login("beta")
	f.rid = r.push(f.tok, map[string]any{"simEndpoint": "/mine"})
	f.otherRid = r.push(f.otherTok, map[string]any{"simEndpoint": "/other"})
	f.betaRid = r.push(f.betaTok, map[string]any{"simEndpoint": "/beta"})
	require.Len(t, r.pullReqs("alpha", testKey, url.Values{"max": {"10"}, "lease": {"600"}}), 2)
	require.Len(t, r.pullReqs("beta", betaKey, url.Values{"lease": {"600"}}), 1)
	rep := r.postJSON("/api/v1/peer/send", f.tok, map[string]any{"to": f.otherPeer, "data": "hi"})
	require.Equal(t, http.StatusCreated, rep.Status, string(rep.Body))
	rep = r.postJSON("/api/v1/peer/subscribe", f.tok, map[string]any{"topic": "news"})
	require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	return f
}

func TestBadInput(t *testing.T) {
	t.Parallel()
	f := newBadInputFixture(t)
	r := f.r
	const (
		pushreq  = "/api/v1/client/pushreq"
		login    = "/api/v1/client/login"
		check    = "/api/v1/client/check"
		pullres  = "/api/v1/client/pullres"
		pullsm   = "/api/v1/client/pullsmart"
		pullreqs = "/api/v1/server/pullreqsmart"
		pushres  = "/api/v1/server/pushres"
		extend   = "/api/v1/server/extend"
		send     = "/api/v1/peer/send"
		publish  = "/api/v1/peer/publish"
		bcast    = "/api/v1/peer/broadcast"
		sub      = "/api/v1/peer/subscribe"
		unsub    = "/api/v1/peer/unsubscribe"
		peerPull = "/api/v1/peer/pullsmart"
		stream   = "/api/v1/peer/stream"
		peers    = "/api/v1/peer/peers"
		jsonType = "application/json"
		formType = "application/x-www-form-urlencoded"
	)
	get := http.MethodGet
	post := http.MethodPost

	// Shorthands: a pushreq from tok with this JSON body; a sim_req in
	// it; a pushres for rid in alpha with these extra fields; a
	// pullreqsmart with these query parameters.
	push := func(name string, body any, code string) badCall {
		return badCall{name: name, method: post, path: pushreq, contentType: jsonType,
			body: toJSON(t, body), bearer: f.tok, status: http.StatusBadRequest, code: code}
	}
	simReq := func(name string, req any) badCall {
		return push(name, map[string]any{"sim_req": req}, "invalid_sim_req")
	}
	answer := func(name, net, key string, fields map[string]any, status int, code string) badCall {
		body := map[string]any{"net": net, "key": key}
		for k, v := range fields {
			body[k] = v
		}
		return badCall{name: name, method: post, path: pushres, contentType: jsonType,
			body: toJSON(t, body), status: status, code: code}
	}
	simRes := func(name string, res any) badCall {
		return answer(name, "alpha", testKey, map[string]any{"rid": f.rid, "sim_res": res},
			http.StatusBadRequest, "invalid_sim_res")
	}
	poll := func(name string, q url.Values, status int, code string) badCall {
		return badCall{name: name, method: get, path: pullreqs, query: q, status: status, code: code}
	}
	pollQ := func(net, key string, kv ...string) url.Values {
		q := url.Values{"net": {net}, "key": {key}, "wait": {"0"}}
		for i := 0; i+1 < len(kv); i += 2 {
			q.Set(kv[i], kv[i+1])
		}
		return q
	}
	ext := func(name string, body map[string]any, status int, code string) badCall {
		return badCall{name: name, method: post, path: extend, contentType: jsonType,
			body: toJSON(t, body), status: status, code: code}
	}
	client := func(name, path string, q url.Values, status int, code string) badCall {
		return badCall{name: name, method: get, path: path, query: q, status: status, code: code}
	}
	peerPost := func(name, path, bearer string, body map[string]any, status int, code string) badCall {
		return badCall{name: name, method: post, path: path, contentType: jsonType,
			body: toJSON(t, body), bearer: bearer, status: status, code: code}
	}
	okReq := map[string]any{"simEndpoint": "/ok"}
	okRes := map[string]any{"simStatus": 200}
	long := strings.Repeat("a", 65)

	cases := []badCall{
		// Body types and limits.
		{name: "pushreq text/plain", method: post, path: pushreq, contentType: "text/plain",
			body: `{"sim_req": {"simEndpoint": "/a"}}`, bearer: f.tok, status: http.StatusUnsupportedMediaType, code: "unsupported_media_type"},
		{name: "pushreq multipart", method: post, path: pushreq, contentType: "multipart/form-data; boundary=X",
			body: "--X\r\nContent-Disposition: form-data; name=\"simEndpoint\"\r\n\r\n/a\r\n--X--\r\n", bearer: f.tok,
			status: http.StatusUnsupportedMediaType, code: "unsupported_media_type"},
		{name: "login multipart", method: post, path: login, contentType: "multipart/form-data; boundary=X",
			body:   "--X\r\nContent-Disposition: form-data; name=\"net\"\r\n\r\nalpha\r\n--X--\r\n",
			status: http.StatusUnsupportedMediaType, code: "unsupported_media_type"},
		{name: "login text/plain", method: post, path: login, contentType: "text/plain", body: "net=alpha",
			status: http.StatusUnsupportedMediaType, code: "unsupported_media_type"},
		{name: "pushreq no content type", method: post, path: pushreq, body: `{"sim_req": {"simEndpoint": "/a"}}`,
			bearer: f.tok, status: http.StatusUnsupportedMediaType, code: "unsupported_media_type"},
		{name: "pushres application/xml", method: post, path: pushres, contentType: "application/xml",
			body: "<net>alpha</net>", bearer: testKey, status: http.StatusUnsupportedMediaType, code: "unsupported_media_type"},
		{name: "unparsable content type", method: post, path: login, contentType: "application/json; charset",
			body: `{"net": "alpha"}`, status: http.StatusUnsupportedMediaType, code: "unsupported_media_type"},
		push("malformed JSON", rawBody(`{"sim_req": {"simEndpoint": "/a"}`), "malformed_json"),
		push("JSON with trailing garbage", rawBody(`{"sim_req": {"simEndpoint": "/a"}} x`), "malformed_json"),
		{name: "login malformed JSON", method: post, path: login, contentType: jsonType, body: `{net: alpha}`,
			status: http.StatusBadRequest, code: "malformed_json"},
		{name: "login JSON array", method: post, path: login, contentType: jsonType, body: `[{"net": "alpha"}]`,
			status: http.StatusBadRequest, code: "invalid_body"},
		{name: "login JSON string", method: post, path: login, contentType: jsonType, body: `"alpha"`,
			status: http.StatusBadRequest, code: "invalid_body"},
		{name: "login JSON null", method: post, path: login, contentType: jsonType, body: `null`,
			status: http.StatusBadRequest, code: "invalid_body"},
		{name: "login JSON number", method: post, path: login, contentType: jsonType, body: `42`,
			status: http.StatusBadRequest, code: "invalid_body"},
		push("pushreq JSON array", rawBody(`[{"sim_req": {"simEndpoint": "/a"}}]`), "invalid_body"),
		{name: "malformed form body", method: post, path: login, contentType: formType, body: "net=%zz",
			status: http.StatusBadRequest, code: "invalid_body"},
		{name: "form sim_req not JSON", method: post, path: pushreq, contentType: formType,
			body:   url.Values{"token": {f.tok}, "sim_req": {`{"simEndpoint": `}}.Encode(),
			status: http.StatusBadRequest, code: "malformed_json"},
		{name: "form simHeaders not JSON", method: post, path: pushreq, contentType: formType,
			body:   url.Values{"token": {f.tok}, "simEndpoint": {"/a"}, "simHeaders": {"X-A: 1"}}.Encode(),
			status: http.StatusBadRequest, code: "malformed_json"},

		// sim_req.
		simReq("sim_req a string", "/a"),
		simReq("sim_req an array", []any{okReq}),
		simReq("sim_req null", nil),
		push("no sim_req at all", map[string]any{}, "invalid_sim_req"),
		simReq("simEndpoint missing", map[string]any{"simMethod": "GET"}),
		simReq("simEndpoint empty", map[string]any{"simEndpoint": ""}),
		simReq("simEndpoint a number", map[string]any{"simEndpoint": 7}),
		simReq("simMethod with a space", map[string]any{"simEndpoint": "/a", "simMethod": "GE T"}),
		simReq("simMethod empty", map[string]any{"simEndpoint": "/a", "simMethod": ""}),
		simReq("simMethod a number", map[string]any{"simEndpoint": "/a", "simMethod": 5}),
		simReq("simMethod too long", map[string]any{"simEndpoint": "/a", "simMethod": strings.Repeat("X", 33)}),
		simReq("simHeaders a string", map[string]any{"simEndpoint": "/a", "simHeaders": "X-A: 1"}),
		simReq("simHeaders an array", map[string]any{"simEndpoint": "/a", "simHeaders": []string{"X-A"}}),
		simReq("header value a number", map[string]any{"simEndpoint": "/a", "simHeaders": map[string]any{"X-A": 1}}),
		simReq("header value a number list", map[string]any{"simEndpoint": "/a", "simHeaders": map[string]any{"X-A": []int{1}}}),
		simReq("header value an object", map[string]any{"simEndpoint": "/a", "simHeaders": map[string]any{"X-A": map[string]string{"b": "c"}}}),
		simReq("simQueryParams a string", map[string]any{"simEndpoint": "/a", "simQueryParams": "q=1"}),
		simReq("simRouteParams an array", map[string]any{"simEndpoint": "/a", "simRouteParams": []int{1}}),
		simReq("simBodyEncoding hex", map[string]any{"simEndpoint": "/a", "simBody": "00", "simBodyEncoding": "hex"}),
		simReq("simBodyEncoding a number", map[string]any{"simEndpoint": "/a", "simBody": "AA==", "simBodyEncoding": 64}),
		simReq("base64 body not a string", map[string]any{"simEndpoint": "/a", "simBody": map[string]int{"a": 1}, "simBodyEncoding": "base64"}),
		simReq("invalid base64", map[string]any{"simEndpoint": "/a", "simBody": "!!!!", "simBodyEncoding": "base64"}),
		simReq("unpadded base64", map[string]any{"simEndpoint": "/a", "simBody": "abc", "simBodyEncoding": "base64"}),
		push("sim_req and top-level fields", map[string]any{"sim_req": okReq, "simEndpoint": "/b"}, "invalid_sim_req"),
		push("sim_req and top-level simBody", map[string]any{"sim_req": okReq, "simBody": "x"}, "invalid_sim_req"),
		push("top-level simEndpoint a number", map[string]any{"simEndpoint": 5}, "invalid_sim_req"),
		push("top-level bad simMethod", map[string]any{"simEndpoint": "/a", "simMethod": "GE T"}, "invalid_sim_req"),

		// sim_res.
		simRes("sim_res a string", "ok"),
		simRes("sim_res an array", []any{okRes}),
		simRes("sim_res null", nil),
		simRes("simStatus 99", map[string]any{"simStatus": 99}),
		simRes("simStatus 600", map[string]any{"simStatus": 600}),
		simRes("simStatus 200.5", map[string]any{"simStatus": 200.5}),
		simRes("simStatus abc", map[string]any{"simStatus": "abc"}),
		simRes("simStatus -200", map[string]any{"simStatus": -200}),
		simRes("simStatus true", map[string]any{"simStatus": true}),
		simRes("sim_res header value a number", map[string]any{"simHeaders": map[string]any{"X-A": 1}}),
		simRes("sim_res simHeaders a string", map[string]any{"simHeaders": "X-A: 1"}),
		simRes("sim_res invalid base64", map[string]any{"simBody": "!!!!", "simBodyEncoding": "base64"}),
		simRes("sim_res bad simBodyEncoding", map[string]any{"simBody": "x", "simBodyEncoding": "gzip"}),
		answer("sim_res and top-level simStatus", "alpha", testKey, map[string]any{"rid": f.rid, "sim_res": okRes, "simStatus": 201},
			http.StatusBadRequest, "invalid_sim_res"),
		answer("top-level simStatus 600", "alpha", testKey, map[string]any{"rid": f.rid, "simStatus": 600},
			http.StatusBadRequest, "invalid_sim_res"),
		{name: "form simStatus abc", method: post, path: pushres, contentType: formType,
			body:   url.Values{"net": {"alpha"}, "key": {testKey}, "rid": {f.rid}, "simStatus": {"abc"}}.Encode(),
			status: http.StatusBadRequest, code: "invalid_sim_res"},
		{name: "form sim_res not JSON", method: post, path: pushres, contentType: formType,
			body:   url.Values{"net": {"alpha"}, "key": {testKey}, "rid": {f.rid}, "sim_res": {"{"}}.Encode(),
			status: http.StatusBadRequest, code: "malformed_json"},

		// Net names.
		client("login net empty", login, url.Values{"net": {""}}, http.StatusBadRequest, "missing_param"),
		client("login no net", login, nil, http.StatusBadRequest, "missing_param"),
		client("login net 65 chars", login, url.Values{"net": {long}}, http.StatusBadRequest, "invalid_net"),
		client("login net with a space", login, url.Values{"net": {"a b"}}, http.StatusBadRequest, "invalid_net"),
		client("login net with a slash", login, url.Values{"net": {"a/b"}}, http.StatusBadRequest, "invalid_net"),
		client("login net not ASCII", login, url.Values{"net": {"ü"}}, http.StatusBadRequest, "invalid_net"),
		client("login net with a NUL", login, url.Values{"net": {"a\x00"}}, http.StatusBadRequest, "invalid_param"),
		{name: "login JSON net a number", method: post, path: login, contentType: jsonType, body: `{"net": 5}`,
			status: http.StatusBadRequest, code: "invalid_param"},
		{name: "login JSON net 65 chars", method: post, path: login, contentType: jsonType, body: toJSON(t, map[string]string{"net": long}),
			status: http.StatusBadRequest, code: "invalid_net"},
		poll("pullreqsmart net 65 chars", pollQ(long, freshKey), http.StatusBadRequest, "invalid_net"),
		poll("pullreqsmart net a/b", pollQ("a/b", freshKey), http.StatusBadRequest, "invalid_net"),
		poll("pullreqsmart net ü", pollQ("ü", freshKey), http.StatusBadRequest, "invalid_net"),
		poll("pullreqsmart no net", url.Values{"key": {testKey}, "wait": {"0"}}, http.StatusBadRequest, "missing_param"),
		answer("pushres net a b", "a b", freshKey, map[string]any{"rid": f.rid, "sim_res": okRes}, http.StatusBadRequest, "invalid_net"),
		ext("extend net empty", map[string]any{"net": "", "key": testKey, "rid": f.rid}, http.StatusBadRequest, "missing_param"),

		// Tokens.
		{name: "pushreq no token", method: post, path: pushreq, contentType: jsonType, body: toJSON(t, map[string]any{"sim_req": okReq}),
			status: http.StatusUnauthorized, code: "missing_token"},
		{name: "pushreq unknown bearer token", method: post, path: pushreq, contentType: jsonType, body: toJSON(t, map[string]any{"sim_req": okReq}),
			bearer: "no-such-token", status: http.StatusUnauthorized, code: "unknown_token"},
		{name: "pushreq unknown token parameter", method: post, path: pushreq, contentType: jsonType,
			body: toJSON(t, map[string]any{"token": "no-such-token", "sim_req": okReq}), status: http.StatusUnauthorized, code: "unknown_token"},
		{name: "pushreq form unknown token", method: post, path: pushreq, contentType: formType,
			body: url.Values{"token": {"no-such-token"}, "simEndpoint": {"/a"}}.Encode(), status: http.StatusUnauthorized, code: "unknown_token"},
		{name: "pushreq JSON token a number", method: post, path: pushreq, contentType: jsonType,
			body: toJSON(t, map[string]any{"token": 5, "sim_req": okReq}), status: http.StatusBadRequest, code: "invalid_param"},
		client("check no token", check, url.Values{"rid": {f.rid}}, http.StatusUnauthorized, "missing_token"),
		client("check unknown token", check, url.Values{"token": {"nope"}, "rid": {f.rid}}, http.StatusUnauthorized, "unknown_token"),
		client("pullres no token", pullres, url.Values{"rid": {f.rid}}, http.StatusUnauthorized, "missing_token"),
		client("pullsmart unknown token", pullsm, url.Values{"token": {"nope"}, "rid": {f.rid}, "wait": {"0"}}, http.StatusUnauthorized, "unknown_token"),

		// Keys.
		poll("pullreqsmart no key", url.Values{"net": {"alpha"}, "wait": {"0"}}, http.StatusUnauthorized, "missing_key"),
		poll("pullreqsmart empty key", pollQ("alpha", ""), http.StatusUnauthorized, "missing_key"),
		poll("pullreqsmart wrong key", pollQ("alpha", freshKey), http.StatusForbidden, "wrong_key"),
		poll("pullreqsmart short wrong key on a claimed net", pollQ("alpha", "short"), http.StatusForbidden, "wrong_key"),
		poll("pullreqsmart short key on an unclaimed net", pollQ("fresh1", "short-key-15chr"), http.StatusBadRequest, "weak_key"),
		answer("pushres no key", "alpha", "", map[string]any{"rid": f.rid, "sim_res": okRes}, http.StatusUnauthorized, "missing_key"),
		answer("pushres wrong key", "alpha", betaKey, map[string]any{"rid": f.rid, "sim_res": okRes}, http.StatusForbidden, "wrong_key"),
		answer("pushres short key on an unclaimed net", "fresh2", "short", map[string]any{"rid": f.rid, "sim_res": okRes}, http.StatusBadRequest, "weak_key"),
		ext("extend no key", map[string]any{"net": "alpha", "rid": f.rid}, http.StatusUnauthorized, "missing_key"),
		ext("extend wrong key", map[string]any{"net": "alpha", "key": betaKey, "rid": f.rid}, http.StatusForbidden, "wrong_key"),

		// Unknown rids, and rids of another token or net, which must look unknown.
		client("check no rid", check, url.Values{"token": {f.tok}}, http.StatusBadRequest, "missing_param"),
		client("pullres no rid", pullres, url.Values{"token": {f.tok}}, http.StatusBadRequest, "missing_param"),
		client("check unknown rid", check, url.Values{"token": {f.tok}, "rid": {"no-such-rid"}}, http.StatusNotFound, "not_found"),
		client("pullres unknown rid", pullres, url.Values{"token": {f.tok}, "rid": {"no-such-rid"}}, http.StatusNotFound, "not_found"),
		client("pullsmart unknown rid", pullsm, url.Values{"token": {f.tok}, "rid": {"no-such-rid"}, "wait": {"0"}}, http.StatusNotFound, "not_found"),
		client("check another token's rid", check, url.Values{"token": {f.tok}, "rid": {f.otherRid}}, http.StatusNotFound, "not_found"),
		client("pullres another token's rid", pullres, url.Values{"token": {f.tok}, "rid": {f.otherRid}}, http.StatusNotFound, "not_found"),
		client("pullsmart another token's rid", pullsm, url.Values{"token": {f.tok}, "rid": {f.otherRid}, "wait": {"0"}}, http.StatusNotFound, "not_found"),
		client("check another net's rid", check, url.Values{"token": {f.tok}, "rid": {f.betaRid}}, http.StatusNotFound, "not_found"),
		answer("pushres no rid", "alpha", testKey, map[string]any{"sim_res": okRes}, http.StatusBadRequest, "missing_param"),
		answer("pushres unknown rid", "alpha", testKey, map[string]any{"rid": "no-such-rid", "sim_res": okRes}, http.StatusNotFound, "not_found"),
		answer("pushres another net's rid", "alpha", testKey, map[string]any{"rid": f.betaRid, "sim_res": okRes}, http.StatusNotFound, "not_found"),
		ext("extend no rid", map[string]any{"net": "alpha", "key": testKey}, http.StatusBadRequest, "missing_param"),
		ext("extend unknown rid", map[string]any{"net": "alpha", "key": testKey, "rid": "no-such-rid"}, http.StatusNotFound, "not_found"),
		ext("extend another net's rid", map[string]any{"net": "alpha", "key": testKey, "rid": f.betaRid}, http.StatusNotFound, "not_found"),

		// Wrong methods and paths.
		{name: "DELETE pushreq", method: http.MethodDelete, path: pushreq, bearer: f.tok,
			status: http.StatusMethodNotAllowed, code: "method_not_allowed", allow: []string{"POST"}},
		{name: "GET pushreq", method: get, path: pushreq, query: url.Values{"token": {f.tok}, "simEndpoint": {"/a"}},
			status: http.StatusMethodNotAllowed, code: "method_not_allowed", allow: []string{"POST"}},
		{name: "GET pushres", method: get, path: pushres, query: url.Values{"net": {"fresh3"}, "key": {freshKey}, "rid": {f.rid}},
			status: http.StatusMethodNotAllowed, code: "method_not_allowed", allow: []string{"POST"}},
		{name: "GET extend", method: get, path: extend, status: http.StatusMethodNotAllowed, code: "method_not_allowed", allow: []string{"POST"}},
		{name: "PUT login", method: http.MethodPut, path: login, contentType: jsonType, body: `{"net": "alpha"}`,
			status: http.StatusMethodNotAllowed, code: "method_not_allowed", allow: []string{"GET", "POST"}},
		{name: "DELETE check", method: http.MethodDelete, path: check, status: http.StatusMethodNotAllowed, code: "method_not_allowed", allow: []string{"GET", "POST"}},
		{name: "POST healthz", method: post, path: "/healthz", status: http.StatusMethodNotAllowed, code: "method_not_allowed", allow: []string{"GET"}},
		{name: "unknown API path", method: get, path: "/api/v1/client/nope", status: http.StatusNotFound, code: "no_route"},
		{name: "unknown API version", method: post, path: "/api/v2/client/pushreq", bearer: f.tok, status: http.StatusNotFound, code: "no_route"},
		{name: "page with POST", method: post, path: "/", status: http.StatusMethodNotAllowed, code: "method_not_allowed"},
		{name: "unknown file", method: get, path: "/index.html", status: http.StatusNotFound, code: "no_route"},
		{name: "path below an endpoint", method: post, path: pushreq + "/x", bearer: f.tok, status: http.StatusNotFound, code: "no_route"},

		// Long-poll and lease parameters.
		poll("wait -1", pollQ("alpha", testKey, "wait", "-1"), http.StatusBadRequest, "invalid_param"),
		poll("wait x", pollQ("alpha", testKey, "wait", "x"), http.StatusBadRequest, "invalid_param"),
		poll("wait NaN", pollQ("alpha", testKey, "wait", "NaN"), http.StatusBadRequest, "invalid_param"),
		poll("max 0", pollQ("alpha", testKey, "max", "0"), http.StatusBadRequest, "invalid_param"),
		poll("max 101", pollQ("alpha", testKey, "max", "101"), http.StatusBadRequest, "invalid_param"),
		poll("max 1.5", pollQ("alpha", testKey, "max", "1.5"), http.StatusBadRequest, "invalid_param"),
		poll("max x", pollQ("alpha", testKey, "max", "x"), http.StatusBadRequest, "invalid_param"),
		poll("lease 0", pollQ("alpha", testKey, "lease", "0"), http.StatusBadRequest, "invalid_param"),
		poll("lease -3", pollQ("alpha", testKey, "lease", "-3"), http.StatusBadRequest, "invalid_param"),
		{name: "pullreqsmart JSON wait true", method: post, path: pullreqs, contentType: jsonType,
			body: toJSON(t, map[string]any{"net": "alpha", "key": testKey, "wait": true}), status: http.StatusBadRequest, code: "invalid_param"},
		client("pullsmart wait -1", pullsm, url.Values{"token": {f.tok}, "rid": {f.rid}, "wait": {"-1"}}, http.StatusBadRequest, "invalid_param"),
		client("pullsmart wait x", pullsm, url.Values{"token": {f.tok}, "wait": {"x"}}, http.StatusBadRequest, "invalid_param"),
		ext("extend lease 0", map[string]any{"net": "alpha", "key": testKey, "rid": f.rid, "lease": 0}, http.StatusBadRequest, "invalid_param"),
		ext("extend lease -3", map[string]any{"net": "alpha", "key": testKey, "rid": f.rid, "lease": -3}, http.StatusBadRequest, "invalid_param"),
		ext("extend lease x", map[string]any{"net": "alpha", "key": testKey, "rid": f.rid, "lease": "x"}, http.StatusBadRequest, "invalid_param"),

		// A fresh key on an unclaimed net: a call that fails must not claim it.
		poll("fresh net, bad wait", pollQ("fresh4", freshKey, "wait", "-1"), http.StatusBadRequest, "invalid_param"),
		poll("fresh net, bad max", pollQ("fresh5", freshKey, "max", "0"), http.StatusBadRequest, "invalid_param"),
		poll("fresh net, bad lease", pollQ("fresh6", freshKey, "lease", "0"), http.StatusBadRequest, "invalid_param"),
		answer("fresh net, bad sim_res", "fresh7", freshKey, map[string]any{"rid": f.rid, "sim_res": map[string]any{"simStatus": 99}},
			http.StatusBadRequest, "invalid_sim_res"),
		answer("fresh net, no rid", "fresh8", freshKey, map[string]any{"sim_res": okRes}, http.StatusBadRequest, "missing_param"),
		ext("fresh net, bad lease on extend", map[string]any{"net": "fresh9", "key": freshKey, "rid": f.rid, "lease": 0},
			http.StatusBadRequest, "invalid_param"),
		answer("fresh net, unknown rid", "fresh10", freshKey, map[string]any{"rid": "no-such-rid", "sim_res": okRes},
			http.StatusNotFound, "not_found"),
		answer("fresh net, another net's rid", "fresh11", freshKey, map[string]any{"rid": f.rid, "sim_res": okRes},
			http.StatusNotFound, "not_found"),
		ext("fresh net, unknown rid on extend", map[string]any{"net": "fresh12", "key": freshKey, "rid": "no-such-rid"},
			http.StatusNotFound, "not_found"),

		// Peer messaging: tokens.
		peerPost("send no token", send, "", map[string]any{"to": f.otherPeer, "data": 1}, http.StatusUnauthorized, "missing_token"),
		peerPost("send unknown token", send, "no-such-token", map[string]any{"to": f.otherPeer, "data": 1}, http.StatusUnauthorized, "unknown_token"),
		peerPost("publish no token", publish, "", map[string]any{"topic": "news", "data": 1}, http.StatusUnauthorized, "missing_token"),
		peerPost("broadcast unknown token", bcast, "no-such-token", map[string]any{"data": 1}, http.StatusUnauthorized, "unknown_token"),
		peerPost("subscribe no token", sub, "", map[string]any{"topic": "news"}, http.StatusUnauthorized, "missing_token"),
		peerPost("unsubscribe unknown token", unsub, "no-such-token", map[string]any{"topic": "news"}, http.StatusUnauthorized, "unknown_token"),
		client("peer pullsmart no token", peerPull, url.Values{"wait": {"0"}}, http.StatusUnauthorized, "missing_token"),
		client("peer pullsmart unknown token", peerPull, url.Values{"token": {"nope"}, "wait": {"0"}}, http.StatusUnauthorized, "unknown_token"),
		client("stream no token", stream, nil, http.StatusUnauthorized, "missing_token"),
		client("stream unknown token", stream, url.Values{"token": {"nope"}}, http.StatusUnauthorized, "unknown_token"),
		client("peers no token", peers, nil, http.StatusUnauthorized, "missing_token"),

		// Peer messaging: peers, which must be of the sender's net.
		peerPost("send to another net's peer", send, f.tok, map[string]any{"to": f.betaPeer, "data": 1}, http.StatusNotFound, "unknown_peer"),
		peerPost("send to an unknown peer", send, f.tok, map[string]any{"to": "no-such-peer", "data": 1}, http.StatusNotFound, "unknown_peer"),
		peerPost("send no to", send, f.tok, map[string]any{"data": 1}, http.StatusBadRequest, "missing_param"),
		peerPost("send to empty", send, f.tok, map[string]any{"to": "", "data": 1}, http.StatusBadRequest, "missing_param"),
		peerPost("send to a number", send, f.tok, map[string]any{"to": 5, "data": 1}, http.StatusBadRequest, "invalid_param"),

		// Peer messaging: data.
		peerPost("send no data", send, f.tok, map[string]any{"to": f.otherPeer}, http.StatusBadRequest, "missing_param"),
		peerPost("publish no data", publish, f.tok, map[string]any{"topic": "news"}, http.StatusBadRequest, "missing_param"),
		peerPost("broadcast no data", bcast, f.tok, map[string]any{}, http.StatusBadRequest, "missing_param"),
		{name: "broadcast form data not JSON", method: post, path: bcast, contentType: formType,
			body: url.Values{"token": {f.tok}, "data": {"{not json"}}.Encode(), status: http.StatusBadRequest, code: "malformed_json"},
		{name: "send query data not JSON", method: post, path: send, bearer: f.tok,
			query: url.Values{"to": {f.otherPeer}, "data": {"hello"}}, status: http.StatusBadRequest, code: "malformed_json"},
		peerPost("broadcast malformed JSON", bcast, f.tok, nil, http.StatusBadRequest, "malformed_json").withBody(`{"data": [1,}`),

		// Peer messaging: topics.
		peerPost("publish no topic", publish, f.tok, map[string]any{"data": 1}, http.StatusBadRequest, "missing_param"),
		peerPost("publish topic with a space", publish, f.tok, map[string]any{"topic": "a b", "data": 1}, http.StatusBadRequest, "invalid_topic"),
		peerPost("publish topic 65 chars", publish, f.tok, map[string]any{"topic": long, "data": 1}, http.StatusBadRequest, "invalid_topic"),
		peerPost("publish topic a number", publish, f.tok, map[string]any{"topic": 5, "data": 1}, http.StatusBadRequest, "invalid_param"),
		peerPost("subscribe topic with a slash", sub, f.tok, map[string]any{"topic": "a/b"}, http.StatusBadRequest, "invalid_topic"),
		peerPost("subscribe topic not ASCII", sub, f.tok, map[string]any{"topic": "ü"}, http.StatusBadRequest, "invalid_topic"),
		peerPost("subscribe topic with a NUL", sub, f.tok, map[string]any{"topic": "a\x00"}, http.StatusBadRequest, "invalid_topic"),
		peerPost("subscribe no topic", sub, f.tok, map[string]any{}, http.StatusBadRequest, "missing_param"),
		peerPost("unsubscribe topic empty", unsub, f.tok, map[string]any{"topic": ""}, http.StatusBadRequest, "missing_param"),
		peerPost("unsubscribe topic 65 chars", unsub, f.tok, map[string]any{"topic": long}, http.StatusBadRequest, "invalid_topic"),
		{name: "subscribe form bad topic", method: post, path: sub, contentType: formType,
			body: url.Values{"token": {f.tok}, "topic": {"a.b/c"}}.Encode(), status: http.StatusBadRequest, code: "invalid_topic"},

		// Peer messaging: cursors and long-poll parameters.
		client("peer pullsmart since -1", peerPull, url.Values{"token": {f.tok}, "since": {"-1"}, "wait": {"0"}}, http.StatusBadRequest, "invalid_param"),
		client("peer pullsmart since x", peerPull, url.Values{"token": {f.tok}, "since": {"x"}, "wait": {"0"}}, http.StatusBadRequest, "invalid_param"),
		client("peer pullsmart since 1.5", peerPull, url.Values{"token": {f.tok}, "since": {"1.5"}, "wait": {"0"}}, http.StatusBadRequest, "invalid_param"),
		client("peer pullsmart since too big", peerPull, url.Values{"token": {f.tok}, "since": {"99999999999999999999"}, "wait": {"0"}},
			http.StatusBadRequest, "invalid_param"),
		client("peer pullsmart max 0", peerPull, url.Values{"token": {f.tok}, "max": {"0"}, "wait": {"0"}}, http.StatusBadRequest, "invalid_param"),
		client("peer pullsmart max 101", peerPull, url.Values{"token": {f.tok}, "max": {"101"}, "wait": {"0"}}, http.StatusBadRequest, "invalid_param"),
		client("peer pullsmart wait -1", peerPull, url.Values{"token": {f.tok}, "wait": {"-1"}}, http.StatusBadRequest, "invalid_param"),
		peerPost("peer pullsmart JSON since true", peerPull, f.tok, map[string]any{"since": true, "wait": 0}, http.StatusBadRequest, "invalid_param"),
		client("stream since x", stream, url.Values{"token": {f.tok}, "since": {"x"}}, http.StatusBadRequest, "invalid_param"),
		{name: "stream Last-Event-ID x", method: get, path: stream, query: url.Values{"token": {f.tok}},
			header: http.Header{"Last-Event-Id": {"x"}}, status: http.StatusBadRequest, code: "invalid_param"},

		// Peer messaging: methods and paths.
		{name: "GET send", method: get, path: send, query: url.Values{"token": {f.tok}, "to": {f.otherPeer}, "data": {"1"}},
			status: http.StatusMethodNotAllowed, code: "method_not_allowed", allow: []string{"POST"}},
		{name: "GET publish", method: get, path: publish, status: http.StatusMethodNotAllowed, code: "method_not_allowed", allow: []string{"POST"}},
		{name: "GET broadcast", method: get, path: bcast, query: url.Values{"token": {f.tok}, "data": {"1"}},
			status: http.StatusMethodNotAllowed, code: "method_not_allowed", allow: []string{"POST"}},
		{name: "GET subscribe", method: get, path: sub, query: url.Values{"token": {f.tok}, "topic": {"x"}},
			status: http.StatusMethodNotAllowed, code: "method_not_allowed", allow: []string{"POST"}},
		{name: "PUT unsubscribe", method: http.MethodPut, path: unsub, status: http.StatusMethodNotAllowed, code: "method_not_allowed", allow: []string{"POST"}},
		{name: "DELETE peer pullsmart", method: http.MethodDelete, path: peerPull, status: http.StatusMethodNotAllowed,
			code: "method_not_allowed", allow: []string{"GET", "POST"}},
		{name: "POST stream", method: post, path: stream, bearer: f.tok, status: http.StatusMethodNotAllowed, code: "method_not_allowed", allow: []string{"GET"}},
		{name: "POST peers", method: post, path: peers, bearer: f.tok, status: http.StatusMethodNotAllowed, code: "method_not_allowed", allow: []string{"GET"}},
		{name: "unknown peer path", method: get, path: "/api/v1/peer/nope", status: http.StatusNotFound, code: "no_route"},
	}

	names := map[string]bool{}
	for _, c := range cases {
		require.False(t, names[c.name], "two cases named %q", c.name)
		names[c.name] = true
		t.Run(c.name, func(t *testing.T) {
			before := storeRows(t, r)
			counts := map[string]int{"requests": r.count("requests"), "tokens": r.count("tokens"), "nets": r.count("nets"),
				"messages": r.count("messages"), "subscriptions": r.count("subscriptions")}

			rep := c.send(t, r.URL)
			assertErrorShape(t, rep, c.status, c.code)
			assert.Equal(t, "*", rep.Header.Get("Access-Control-Allow-Origin"), "errors carry CORS too")
			if c.status == http.StatusMethodNotAllowed {
				allow := headerList(rep.Header, "Allow")
				for _, m := range c.allow {
					assert.Contains(t, allow, m, "Allow: %q", rep.Header.Get("Allow"))
				}
				assert.NotContains(t, allow, c.method)
			}

			after := storeRows(t, r)
			for table, n := range counts {
				assert.Equal(t, n, r.count(table), "rows in %s", table)
			}
			assert.Equal(t, before, after, "a failed call writes nothing")
		})
	}
}

// withBody replaces a call's body with raw text.
func (c badCall) withBody(body string) badCall {
	c.body = body
	return c
}

// headerList splits a comma-separated header into its trimmed items.
func headerList(h http.Header, name string) []string {
	var out []string
	for _, v := range h.Values(name) {
		for item := range strings.SplitSeq(v, ",") {
			if item = strings.TrimSpace(item); item != "" {
				out = append(out, item)
			}
		}
	}
	return out
}
