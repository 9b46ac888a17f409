// The HTTP ⇄ sim mapping, one function at a time: what a SimClient's request
// becomes as a sim_req, what a sim_req becomes for a Serve handler, what the
// handler's answer becomes as a sim_res, and what a sim_res becomes as the
// SimClient's response.

package client

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/c2cvia/c2cvia/internal/simhttp"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestServerRequest: a sim_req as the relay hands it out becomes the
// *http.Request a Serve handler gets.
func TestServerRequest(t *testing.T) {
	t.Parallel()
	s := &server{relay: newRelay("http://relay.example:8080/", nil)}
	for _, tc := range []struct {
		name    string
		simReq  string
		method  string
		path    string // escaped
		query   url.Values
		uri     string
		header  http.Header // besides C2cvia-From and C2cvia-Rid
		body    string
		wantErr bool
	}{
		{
			name: "method, escaped path, query and headers",
			simReq: `{"simEndpoint":"/items/a%2Fb","simMethod":"PUT","simQueryParams":{"q":["1","2"],"n":5,"s":"x&y"},
				"simHeaders":{"X-A":"1","X-M":["a","b"],"Content-Type":"text/plain","Content-Length":"999",
				"C2cvia-From":"mallory","C2cvia-Rid":"forged"},"simBody":"hello"}`,
			method: "PUT", path: "/items/a%2Fb", query: url.Values{"q": {"1", "2"}, "n": {"5"}, "s": {"x&y"}},
			uri:    "/items/a%2Fb?n=5&q=1&q=2&s=x%26y",
			header: http.Header{"X-A": {"1"}, "X-M": {"a", "b"}, "Content-Type": {"text/plain"}, "Content-Length": {"5"}}, body: "hello",
		},
		{
			name:   "the raw query, as sent",
			simReq: `{"simEndpoint":"/api//items","simMethod":"GET","simQuery":"b=2&a=1&a=0&q=%20x+y","simQueryParams":{"ignored":"yes"}}`,
			method: "GET", path: "/api//items", query: url.Values{"b": {"2"}, "a": {"1", "0"}, "q": {" x y"}},
			uri: "/api//items?b=2&a=1&a=0&q=%20x+y", header: http.Header{},
		},
		{name: "no method is POST", simReq: `{"simEndpoint":"/p"}`, method: "POST", path: "/p", query: url.Values{}, uri: "/p", header: http.Header{}},
		{name: "an endpoint without a slash gets one", simReq: `{"simEndpoint":"p","simMethod":"GET"}`,
			method: "GET", path: "/p", query: url.Values{}, uri: "/p", header: http.Header{}},
		{name: "a target net/http would refuse is an error, as its 400", simReq: `{"simEndpoint":"/a%zz","simMethod":"GET"}`, wantErr: true},
		{name: "a GET keeps the body it was sent with", simReq: `{"simEndpoint":"/g","simMethod":"GET","simBody":"kept"}`,
			method: "GET", path: "/g", query: url.Values{}, uri: "/g", header: http.Header{"Content-Length": {"4"}}, body: "kept"},
		{name: "a JSON body is typed JSON", simReq: `{"simEndpoint":"/j","simBody":{"n":12345678901234567890}}`,
			method: "POST", path: "/j", query: url.Values{}, uri: "/j",
			header: http.Header{"Content-Type": {"application/json"}, "Content-Length": {"26"}}, body: `{"n":12345678901234567890}`},
		{name: "a form object is a form", simReq: `{"simEndpoint":"/f","simHeaders":{"Content-Type":"application/x-www-form-urlencoded"},"simBody":{"a":["1","2"]}}`,
			method: "POST", path: "/f", query: url.Values{}, uri: "/f",
			header: http.Header{"Content-Type": {"application/x-www-form-urlencoded"}, "Content-Length": {"7"}}, body: "a=1&a=2"},
		{name: "base64 is bytes", simReq: `{"simEndpoint":"/b","simBody":"AAH+/w==","simBodyEncoding":"base64"}`,
			method: "POST", path: "/b", query: url.Values{}, uri: "/b", header: http.Header{"Content-Length": {"4"}}, body: "\x00\x01\xfe\xff"},
		{name: "bad base64 is an error", simReq: `{"simEndpoint":"/b","simBody":"!!","simBodyEncoding":"base64"}`, wantErr: true},
		{name: "a method net/http refuses is an error", simReq: `{"simEndpoint":"/m","simMethod":"BAD METHOD"}`, wantErr: true},
		{name: "no JSON object is an error", simReq: `[1]`, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			type key struct{}
			ctx := context.WithValue(context.Background(), key{}, "the handler's")
			req, err := s.request(ctx, leased{RID: "rid-1", SimReq: json.RawMessage(tc.simReq), From: "peer-1", Remote: "203.0.113.7:5"})
			if tc.wantErr {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.method, req.Method)
			assert.Equal(t, tc.path, req.URL.EscapedPath())
			assert.Equal(t, tc.query, req.URL.Query())
			assert.Equal(t, tc.uri, req.RequestURI)
			assert.Equal(t, "relay.example:8080", req.Host)
			want := tc.header.Clone()
			want.Set("C2cvia-From", "peer-1")
			want.Set("C2cvia-Rid", "rid-1")
			assert.Equal(t, want, req.Header)
			assert.Equal(t, "203.0.113.7:5", req.RemoteAddr, "the caller's address")
			assert.Equal(t, "the handler's", req.Context().Value(key{}))
			body, err := io.ReadAll(req.Body)
			require.NoError(t, err)
			assert.Equal(t, tc.body, string(body))
			assert.Equal(t, int64(len(tc.body)), req.ContentLength)
		})
	}
}

// TestRecorder: what a handler writes becomes a sim_res, with net/http's
// rules for headers and statuses.
func TestRecorder(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    string // the sim_res as this package sends it
	}{
		{"nothing written is 200 with no body", func(w http.ResponseWriter, r *http.Request) {},
			`{"simStatus":200,"simHeaders":{},"simBody":null}`},
		{"a Write is 200, its type sniffed", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hello") },
			`{"simStatus":200,"simHeaders":{"Content-Type":"text/plain; charset=utf-8"},"simBody":"hello"}`},
		{"HTML is sniffed as HTML", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "<!DOCTYPE html><p>hi") },
			`{"simStatus":200,"simHeaders":{"Content-Type":"text/html; charset=utf-8"},"simBody":"<!DOCTYPE html><p>hi"}`},
		{"the first WriteHeader counts; headers after it do not", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("X-Before", "yes")
			w.WriteHeader(http.StatusCreated)
			w.WriteHeader(http.StatusInternalServerError)
			w.Header().Set("X-After", "no")
			_, _ = io.WriteString(w, "made")
		}, `{"simStatus":201,"simHeaders":{"X-Before":"yes","Content-Type":"text/plain; charset=utf-8"},"simBody":"made"}`},
		{"an informational status does not travel", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Link", "</style.css>; rel=preload")
			w.WriteHeader(http.StatusEarlyHints)
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, "final")
		}, `{"simStatus":200,"simHeaders":{"Link":"</style.css>; rel=preload","Content-Type":"text/plain"},"simBody":"final"}`},
		{"204 takes no body", func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusNoContent)
			_, err := io.WriteString(w, "dropped")
			if err != http.ErrBodyNotAllowed {
				panic("Write after 204 did not fail with http.ErrBodyNotAllowed")
			}
		}, `{"simStatus":204,"simHeaders":{},"simBody":null}`},
		{"hop-by-hop headers stay behind; a declared length and repeats travel", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			w.Header().Set("Content-Length", "2")
			w.Header().Add("Set-Cookie", "a=1")
			w.Header().Add("Set-Cookie", "b=2")
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, "ok")
		}, `{"simStatus":200,"simHeaders":{"Content-Type":"text/plain","Content-Length":"2","Set-Cookie":["a=1","b=2"]},"simBody":"ok"}`},
		{"HEAD: the length http.FileServer declares, no body", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "5242880")
			w.WriteHeader(http.StatusOK)
		}, `{"simStatus":200,"simHeaders":{"Content-Length":"5242880"},"simBody":null}`},
		{"bytes as base64", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/octet-stream")
			_, _ = w.Write([]byte{0xff, 0xfe, 0x01, 0x00})
		}, `{"simStatus":200,"simHeaders":{"Content-Type":"application/octet-stream"},"simBody":"//4BAA==","simBodyEncoding":"base64"}`},
		{"JSON as a string, every digit kept", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"n":12345678901234567890}`)
		}, `{"simStatus":200,"simHeaders":{"Content-Type":"application/json"},"simBody":"{\"n\":12345678901234567890}"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := bufferingWriter()
			tc.handler(rec, httpRequest(t))
			got, err := marshal(rec.simRes(rec.buf))
			require.NoError(t, err)
			assert.JSONEq(t, tc.want, string(got))
			if tc.name == "JSON as a string, every digit kept" {
				assert.Contains(t, string(got), `12345678901234567890`)
			}
		})
	}
	t.Run("an invalid status panics as in net/http", func(t *testing.T) {
		t.Parallel()
		rec := bufferingWriter()
		assert.Panics(t, func() { rec.WriteHeader(99) })
		assert.Panics(t, func() { rec.WriteHeader(1000) })
	})
}

// bufferingWriter is a handler's ResponseWriter before it posts anything:
// what a handler writes under the part size stays in its buffer.
func bufferingWriter() *responseWriter {
	return &responseWriter{s: &server{}, ctx: context.Background(), header: http.Header{}}
}

func httpRequest(t *testing.T) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, "http://c2cvia/", nil)
	require.NoError(t, err)
	return req
}

// TestResponse: a sim_res becomes the *http.Response a SimClient gets.
func TestResponse(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		method     string
		simRes     string
		status     int
		header     http.Header
		body       string
		length     int64
		errStatus  int    // an *Error with this status instead of a response
		errCode    string // its code
		anotherErr bool   // an error that is not an *Error
	}{
		{name: "status, headers and text", method: "GET",
			simRes: `{"simStatus":201,"simHeaders":{"X-Custom":"yes","X-Multi":["a","b"],"Content-Type":"text/plain","Content-Length":"999"},"simBody":"made"}`,
			status: 201, header: http.Header{"X-Custom": {"yes"}, "X-Multi": {"a", "b"}, "Content-Type": {"text/plain"}, "Content-Length": {"4"}},
			body: "made", length: 4},
		{name: "no status is 200", method: "GET", simRes: `{"simBody":"ok"}`,
			status: 200, header: http.Header{"Content-Length": {"2"}}, body: "ok", length: 2},
		{name: "a JSON value is its JSON text, typed JSON", method: "GET", simRes: `{"simBody":{"n":12345678901234567890}}`,
			status: 200, header: http.Header{"Content-Type": {"application/json"}, "Content-Length": {"26"}},
			body: `{"n":12345678901234567890}`, length: 26},
		{name: "base64 is bytes", method: "GET",
			simRes: `{"simHeaders":{"Content-Type":"application/octet-stream"},"simBody":"AAH+/w==","simBodyEncoding":"base64"}`,
			status: 200, header: http.Header{"Content-Type": {"application/octet-stream"}, "Content-Length": {"4"}}, body: "\x00\x01\xfe\xff", length: 4},
		{name: "null is no body", method: "GET", simRes: `{"simStatus":200,"simBody":null}`,
			status: 200, header: http.Header{"Content-Length": {"0"}}, body: "", length: 0},
		{name: "204 has no body and no length", method: "GET", simRes: `{"simStatus":204,"simBody":"dropped"}`,
			status: 204, header: http.Header{}, body: "", length: 0},
		{name: "304 has no body", method: "GET", simRes: `{"simStatus":304,"simHeaders":{"Etag":"\"x\""},"simBody":"dropped"}`,
			status: 304, header: http.Header{"Etag": {`"x"`}}, body: "", length: 0},
		{name: "HEAD gets the length of what GET gets, no body", method: "HEAD", simRes: `{"simBody":"abc"}`,
			status: 200, header: http.Header{"Content-Length": {"3"}}, body: "", length: 3},
		{name: "a SimServer's 500 is a response", method: "GET", simRes: `{"simStatus":500,"simBody":"boom"}`,
			status: 500, header: http.Header{"Content-Length": {"4"}}, body: "boom", length: 4},
		{name: "1xx is no final answer", method: "GET", simRes: `{"simStatus":103}`, errStatus: 502, errCode: "bad_gateway"},
		{name: "bad base64 is an error", method: "GET", simRes: `{"simBody":"!!","simBodyEncoding":"base64"}`, anotherErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req, err := http.NewRequest(tc.method, "http://c2cvia/x", nil)
			require.NoError(t, err)
			var m simhttp.Response
			require.NoError(t, json.Unmarshal([]byte(tc.simRes), &m))
			resp, _, err := response(req, &m)
			switch {
			case tc.errStatus != 0:
				var e *Error
				require.ErrorAs(t, err, &e)
				assert.Equal(t, tc.errStatus, e.Status)
				assert.Equal(t, tc.errCode, e.Code)
				return
			case tc.anotherErr:
				require.Error(t, err)
				var e *Error
				assert.NotErrorAs(t, err, &e)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.status, resp.StatusCode)
			assert.Equal(t, statusLine(tc.status), resp.Status)
			assert.Equal(t, "HTTP/1.1", resp.Proto)
			assert.Equal(t, tc.header, resp.Header)
			assert.Equal(t, tc.length, resp.ContentLength)
			assert.Same(t, req, resp.Request)
			body, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			assert.Equal(t, tc.body, string(body))
		})
	}
}

func TestStatusLine(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "201 Created", statusLine(201))
	assert.Equal(t, "404 Not Found", statusLine(404))
}
