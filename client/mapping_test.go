// The HTTP ⇄ sim mapping, one function at a time: what a SimClient's request
// becomes as a sim_req, what a sim_req becomes for a Serve handler, what the
// handler's answer becomes as a sim_res, and what a sim_res becomes as the
// SimClient's response.

package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestEncodeRequestBody(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, contentType string
		body              []byte
		want              any // a json.RawMessage, a string or nil
		encoding          string
	}{
		{"empty is null", "text/plain", nil, nil, ""},
		{"JSON as JSON, every digit kept", "application/json", []byte(`{"n":12345678901234567890}`), json.RawMessage(`{"n":12345678901234567890}`), ""},
		{"JSON with parameters", "application/json; charset=utf-8", []byte(`[1,2]`), json.RawMessage(`[1,2]`), ""},
		{"a +json type is JSON", "application/problem+json", []byte(`{"title":"x"}`), json.RawMessage(`{"title":"x"}`), ""},
		{"invalid JSON as base64, byte for byte", "application/json", []byte(`{oops`), "e29vcHM=", "base64"},
		{"text as a string", "text/plain; charset=utf-8", []byte("héllo"), "héllo", ""},
		{"media type in capitals", "TEXT/PLAIN", []byte("hi"), "hi", ""},
		{"malformed parameters still read the type", "text/plain; charset", []byte("hi"), "hi", ""},
		{"form as a string", "application/x-www-form-urlencoded", []byte("a=1&a=2&b=x+y"), "a=1&a=2&b=x+y", ""},
		{"XML as a string", "application/xml", []byte("<a/>"), "<a/>", ""},
		{"JavaScript as a string", "application/javascript", []byte("f()"), "f()", ""},
		{"no type: UTF-8 as a string", "", []byte("plain words"), "plain words", ""},
		{"no type: other bytes as base64", "", []byte{0xff, 0xfe}, "//4=", "base64"},
		{"text that is not UTF-8 as base64", "text/plain", []byte{0xff}, "/w==", "base64"},
		{"binary as base64", "application/octet-stream", []byte("abc"), "YWJj", "base64"},
		{"an image as base64", "image/png", []byte{0x89, 'P', 'N', 'G'}, "iVBORw==", "base64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, encoding := encodeRequestBody(tc.contentType, tc.body)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.encoding, encoding)
		})
	}
}

func TestEncodeResponseBody(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, contentType string
		body              []byte
		want              any // a string or nil
		encoding          string
	}{
		{"empty is null", "text/plain", nil, nil, ""},
		{"JSON as a string, so no digit is lost", "application/json", []byte(`{"n":12345678901234567890}`), `{"n":12345678901234567890}`, ""},
		{"a +json type as a string", "application/problem+json", []byte(`{}`), `{}`, ""},
		{"HTML as a string", "text/html; charset=utf-8", []byte("<p>hi</p>"), "<p>hi</p>", ""},
		{"XML as a string", "application/xml", []byte("<a/>"), "<a/>", ""},
		{"a +xml type as a string", "image/svg+xml", []byte("<svg/>"), "<svg/>", ""},
		{"JavaScript as a string", "text/javascript", []byte("f()"), "f()", ""},
		{"application/javascript as a string", "application/javascript", []byte("f()"), "f()", ""},
		{"form as a string", "application/x-www-form-urlencoded", []byte("a=1"), "a=1", ""},
		{"text that is not UTF-8 as base64", "text/plain", []byte{0xff}, "/w==", "base64"},
		{"binary as base64", "application/octet-stream", []byte("abc"), "YWJj", "base64"},
		{"no type as base64", "", []byte("abc"), "YWJj", "base64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, encoding := encodeResponseBody(tc.contentType, tc.body)
			assert.Equal(t, tc.want, got)
			assert.Equal(t, tc.encoding, encoding)
		})
	}
}

func TestDecodeBody(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		body        string // simBody as JSON text; "" for none
		encoding    string
		contentType string // the message's Content-Type before
		form        bool   // a request for a Serve handler
		want        string
		wantType    string // Content-Type after
		wantErr     bool
	}{
		{name: "missing is empty", want: ""},
		{name: "null is empty", body: `null`, want: ""},
		{name: "a string is its text", body: `"héllo"`, want: "héllo"},
		{name: "a string keeps its type", body: `"<p>"`, contentType: "text/html", want: "<p>", wantType: "text/html"},
		{name: "base64 is decoded", body: `"AAH+/w=="`, encoding: "base64", want: "\x00\x01\xfe\xff"},
		{name: "bad base64 is an error", body: `"!!"`, encoding: "base64", wantErr: true},
		{name: "base64 that is no string is an error", body: `42`, encoding: "base64", wantErr: true},
		{name: "an object is its JSON text, typed JSON", body: ` {"n":12345678901234567890} `, want: `{"n":12345678901234567890}`, wantType: "application/json"},
		{name: "a number is its JSON text", body: `42`, want: `42`, wantType: "application/json"},
		{name: "JSON keeps a type it has", body: `{"a":1}`, contentType: "application/vnd.x+json", want: `{"a":1}`, wantType: "application/vnd.x+json"},
		{name: "a form object for a handler is a form", body: `{"a":["1","2"],"b":"x y","n":5}`, contentType: "application/x-www-form-urlencoded",
			form: true, want: "a=1&a=2&b=x+y&n=5", wantType: "application/x-www-form-urlencoded"},
		{name: "a form object in a response stays JSON", body: `{"a":"1"}`, contentType: "application/x-www-form-urlencoded",
			want: `{"a":"1"}`, wantType: "application/x-www-form-urlencoded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			m := &simMessage{Body: json.RawMessage(tc.body), Encoding: tc.encoding}
			h := http.Header{}
			if tc.contentType != "" {
				h.Set("Content-Type", tc.contentType)
			}
			got, err := decodeBody(m, h, tc.form)
			if tc.wantErr {
				assert.Error(t, err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, string(got))
			assert.Equal(t, tc.wantType, h.Get("Content-Type"))
		})
	}
}

func TestSimHeaders(t *testing.T) {
	t.Parallel()
	h := http.Header{
		"X-One":             {"a"},
		"X-Two":             {"a", "b"},
		"X-None":            {},
		"Connection":        {"keep-alive, X-One"},
		"Keep-Alive":        {"timeout=5"},
		"Te":                {"trailers"},
		"Trailer":           {"X-Sum"},
		"Transfer-Encoding": {"chunked"},
		"Upgrade":           {"h2c"},
		"Proxy-Connection":  {"keep-alive"},
		"Content-Length":    {"5"},
		"connection":        {"set without canonicalisation"},
		"content-length":    {"5"},
	}
	assert.Equal(t, map[string]any{"X-One": "a", "X-Two": []string{"a", "b"}}, simHeaders(h))
}

func TestHTTPHeader(t *testing.T) {
	t.Parallel()
	var m map[string]json.RawMessage
	require.NoError(t, json.Unmarshal([]byte(`{"x-a":"1","X-B":["2","3"],"X-Num":5,"X-Nums":[1],"X-Obj":{}}`), &m))
	assert.Equal(t, http.Header{"X-A": {"1"}, "X-B": {"2", "3"}}, httpHeader(m))
}

func TestStringList(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		raw      string
		anyValue bool
		want     []string
	}{
		{`"a"`, false, []string{"a"}},
		{`["a","b"]`, false, []string{"a", "b"}},
		{`5`, false, nil},
		{`5`, true, []string{"5"}},
		{`true`, true, []string{"true"}},
		{`{"a":1}`, true, []string{`{"a":1}`}},
		{`{"a":1}`, false, nil},
	} {
		t.Run(fmt.Sprintf("%s anyValue=%v", tc.raw, tc.anyValue), func(t *testing.T) {
			t.Parallel()
			assert.Equal(t, tc.want, stringList(json.RawMessage(tc.raw), tc.anyValue))
		})
	}
}

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
			header: http.Header{"X-A": {"1"}, "X-M": {"a", "b"}, "Content-Type": {"text/plain"}}, body: "hello",
		},
		{name: "no method is POST", simReq: `{"simEndpoint":"/p"}`, method: "POST", path: "/p", query: url.Values{}, uri: "/p", header: http.Header{}},
		{name: "an endpoint without a slash gets one", simReq: `{"simEndpoint":"p","simMethod":"GET"}`,
			method: "GET", path: "/p", query: url.Values{}, uri: "/p", header: http.Header{}},
		{name: "a malformed escape is taken as written", simReq: `{"simEndpoint":"/a%zz","simMethod":"GET"}`,
			method: "GET", path: "/a%25zz", query: url.Values{}, uri: "/a%25zz", header: http.Header{}},
		{name: "GET has no body", simReq: `{"simEndpoint":"/g","simMethod":"GET","simBody":"ignored"}`,
			method: "GET", path: "/g", query: url.Values{}, uri: "/g", header: http.Header{}},
		{name: "a JSON body is typed JSON", simReq: `{"simEndpoint":"/j","simBody":{"n":12345678901234567890}}`,
			method: "POST", path: "/j", query: url.Values{}, uri: "/j",
			header: http.Header{"Content-Type": {"application/json"}}, body: `{"n":12345678901234567890}`},
		{name: "a form object is a form", simReq: `{"simEndpoint":"/f","simHeaders":{"Content-Type":"application/x-www-form-urlencoded"},"simBody":{"a":["1","2"]}}`,
			method: "POST", path: "/f", query: url.Values{}, uri: "/f",
			header: http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, body: "a=1&a=2"},
		{name: "base64 is bytes", simReq: `{"simEndpoint":"/b","simBody":"AAH+/w==","simBodyEncoding":"base64"}`,
			method: "POST", path: "/b", query: url.Values{}, uri: "/b", header: http.Header{}, body: "\x00\x01\xfe\xff"},
		{name: "bad base64 is an error", simReq: `{"simEndpoint":"/b","simBody":"!!","simBodyEncoding":"base64"}`, wantErr: true},
		{name: "a method net/http refuses is an error", simReq: `{"simEndpoint":"/m","simMethod":"BAD METHOD"}`, wantErr: true},
		{name: "no JSON object is an error", simReq: `[1]`, wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			type key struct{}
			ctx := context.WithValue(context.Background(), key{}, "the handler's")
			req, err := s.request(ctx, leased{RID: "rid-1", SimReq: json.RawMessage(tc.simReq), From: "peer-1"})
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
			assert.Equal(t, "peer-1", req.RemoteAddr)
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
		{"hop-by-hop headers and Content-Length stay behind; repeats are arrays", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Connection", "close")
			w.Header().Set("Content-Length", "2")
			w.Header().Add("Set-Cookie", "a=1")
			w.Header().Add("Set-Cookie", "b=2")
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, "ok")
		}, `{"simStatus":200,"simHeaders":{"Content-Type":"text/plain","Set-Cookie":["a=1","b=2"]},"simBody":"ok"}`},
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
			rec := &recorder{header: http.Header{}}
			tc.handler(rec, httpRequest(t))
			got, err := marshal(rec.simRes())
			require.NoError(t, err)
			assert.JSONEq(t, tc.want, string(got))
			if tc.name == "JSON as a string, every digit kept" {
				assert.Contains(t, string(got), `12345678901234567890`)
			}
		})
	}
	t.Run("an invalid status panics as in net/http", func(t *testing.T) {
		t.Parallel()
		rec := &recorder{header: http.Header{}}
		assert.Panics(t, func() { rec.WriteHeader(99) })
		assert.Panics(t, func() { rec.WriteHeader(1000) })
	})
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
			var m simMessage
			require.NoError(t, json.Unmarshal([]byte(tc.simRes), &m))
			resp, err := response(req, &m)
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
