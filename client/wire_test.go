// The mapping on the wire, against the relay: a Session's HTTPClient and a
// Serve handler on one side, the relay's raw API on the other, playing the
// SimServer or the SimClient as any other SDK or curl would.

package client_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/c2cvia/c2cvia/client"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// exchanged is one request sent through a Session's HTTPClient, as the
// relay handed it to the test's SimServer, and what Do returned once the
// test answered it.
type exchanged struct {
	leased leasedRequest
	peerID string // the session's
	resp   *http.Response
	body   []byte
	err    error
}

// exchange sends req through a Session's HTTPClient, on a net of its own,
// and answers it with simRes as the net's SimServer.
func exchange(t *testing.T, req *http.Request, simRes string) exchanged {
	t.Helper()
	net := testNet(t)
	s := login(t, relayURL, net)
	done := make(chan exchanged, 1)
	go func() {
		var x exchanged
		x.resp, x.err = s.HTTPClient().Do(req)
		if x.err == nil {
			x.body, x.err = io.ReadAll(x.resp.Body)
			x.resp.Body.Close()
		}
		done <- x
	}()
	l := rawPull(t, net)
	rawAnswer(t, net, l.RID, simRes)
	select {
	case x := <-done:
		x.leased, x.peerID = l, s.PeerID()
		return x
	case <-time.After(within):
		t.Fatal("Do did not return after the answer")
		return exchanged{}
	}
}

func newRequest(t *testing.T, method, u string, header http.Header, body []byte) *http.Request {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, u, r)
	require.NoError(t, err)
	for k, v := range header {
		req.Header[k] = v
	}
	return req
}

// TestHTTPClientSimReq: what a request sent through HTTPClient looks like
// to the net's SimServer.
func TestHTTPClientSimReq(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		method   string
		url      string
		header   http.Header
		body     []byte
		simReq   string // as pullreqsmart hands it out
		verbatim string // a part of it that must arrive as written
	}{
		{
			name: "method, escaped path, repeated query keys, headers", method: "GET",
			url:    "http://c2cvia/items/a%2Fb?x=1&x=2&y=z%26w",
			header: http.Header{"X-Test": {"one"}, "X-Multi": {"a", "b"}},
			simReq: `{"simMethod":"GET","simEndpoint":"/items/a%2Fb","simQuery":"x=1&x=2&y=z%26w","simQueryParams":{"x":["1","2"],"y":"z&w"},
				"simRouteParams":{},"simHeaders":{"User-Agent":"Go-http-client/1.1","Host":"c2cvia","X-Test":"one","X-Multi":["a","b"]},"simBody":null}`,
		},
		{
			name: "hop-by-hop headers stay behind; Content-Length is the body's", method: "GET", url: "http://c2cvia/h",
			header: http.Header{"Connection": {"keep-alive"}, "Keep-Alive": {"timeout=5"}, "Te": {"trailers"},
				"Trailer": {"X-Sum"}, "Upgrade": {"h2c"}, "Proxy-Connection": {"keep-alive"}, "Content-Length": {"3"},
				"X-Kept": {"yes"}},
			simReq: `{"simMethod":"GET","simEndpoint":"/h","simQuery":"","simQueryParams":{},"simRouteParams":{},"simHeaders":{"User-Agent":"Go-http-client/1.1","Host":"c2cvia","X-Kept":"yes"},"simBody":null}`,
		},
		{
			name: "the URL's host is the Host", method: "DELETE", url: "https://elsewhere.example:9999/p?q=1",
			simReq: `{"simMethod":"DELETE","simEndpoint":"/p","simQuery":"q=1","simQueryParams":{"q":"1"},"simRouteParams":{},"simHeaders":{"User-Agent":"Go-http-client/1.1","Host":"elsewhere.example:9999"},"simBody":null}`,
		},
		{
			name: "no path is /", method: "GET", url: "http://c2cvia",
			simReq: `{"simMethod":"GET","simEndpoint":"/","simQuery":"","simQueryParams":{},"simRouteParams":{},"simHeaders":{"User-Agent":"Go-http-client/1.1","Host":"c2cvia"},"simBody":null}`,
		},
		{
			name: "JSON as its exact text, every digit and space kept", method: "POST", url: "http://c2cvia/items",
			header: http.Header{"Content-Type": {"application/json"}},
			body:   []byte(`{"n": 12345678901234567890, "s":"<a&b>"}`),
			simReq: `{"simMethod":"POST","simEndpoint":"/items","simQuery":"","simQueryParams":{},"simRouteParams":{},
				"simHeaders":{"User-Agent":"Go-http-client/1.1","Host":"c2cvia","Content-Length":"40","Content-Type":"application/json"},"simBody":"{\"n\": 12345678901234567890, \"s\":\"<a&b>\"}"}`,
			verbatim: `"simBody":"{\"n\": 12345678901234567890, \"s\":\"<a&b>\"}"`,
		},
		{
			name: "text as a string", method: "PUT", url: "http://c2cvia/t",
			header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, body: []byte("héllo wörld"),
			simReq: `{"simMethod":"PUT","simEndpoint":"/t","simQuery":"","simQueryParams":{},"simRouteParams":{},
				"simHeaders":{"User-Agent":"Go-http-client/1.1","Host":"c2cvia","Content-Length":"13","Content-Type":"text/plain; charset=utf-8"},"simBody":"héllo wörld"}`,
		},
		{
			name: "a form as a string", method: "POST", url: "http://c2cvia/f",
			header: http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, body: []byte("a=1&a=2&b=x+y"),
			simReq: `{"simMethod":"POST","simEndpoint":"/f","simQuery":"","simQueryParams":{},"simRouteParams":{},
				"simHeaders":{"User-Agent":"Go-http-client/1.1","Host":"c2cvia","Content-Length":"13","Content-Type":"application/x-www-form-urlencoded"},"simBody":"a=1&a=2&b=x+y"}`,
		},
		{
			name: "bytes as base64", method: "POST", url: "http://c2cvia/b",
			header: http.Header{"Content-Type": {"application/octet-stream"}}, body: []byte{0x00, 0x01, 0xfe, 0xff},
			simReq: `{"simMethod":"POST","simEndpoint":"/b","simQuery":"","simQueryParams":{},"simRouteParams":{},
				"simHeaders":{"User-Agent":"Go-http-client/1.1","Host":"c2cvia","Content-Length":"4","Content-Type":"application/octet-stream"},"simBody":"AAH+/w==","simBodyEncoding":"base64"}`,
		},
		{
			name: "no type: bytes that are not UTF-8 as base64", method: "POST", url: "http://c2cvia/b", body: []byte{0xff},
			simReq: `{"simMethod":"POST","simEndpoint":"/b","simQuery":"","simQueryParams":{},"simRouteParams":{},"simHeaders":{"User-Agent":"Go-http-client/1.1","Host":"c2cvia","Content-Length":"1"},
				"simBody":"/w==","simBodyEncoding":"base64"}`,
		},
		{
			name: "JSON that is not valid is its text too", method: "PATCH", url: "http://c2cvia/j",
			header: http.Header{"Content-Type": {"application/json"}}, body: []byte(`{oops`),
			simReq: `{"simMethod":"PATCH","simEndpoint":"/j","simQuery":"","simQueryParams":{},"simRouteParams":{},
				"simHeaders":{"User-Agent":"Go-http-client/1.1","Host":"c2cvia","Content-Length":"5","Content-Type":"application/json"},"simBody":"{oops"}`,
		},
		{
			name: "an empty POST says Content-Length: 0, as net/http sends it", method: "POST", url: "http://c2cvia/e",
			simReq: `{"simMethod":"POST","simEndpoint":"/e","simQuery":"","simQueryParams":{},"simRouteParams":{},
				"simHeaders":{"User-Agent":"Go-http-client/1.1","Host":"c2cvia","Content-Length":"0"},"simBody":null}`,
		},
		{
			name: "a User-Agent of its own goes as it is", method: "GET", url: "http://c2cvia/ua",
			header: http.Header{"User-Agent": {"inventory-sync/2.1"}},
			simReq: `{"simMethod":"GET","simEndpoint":"/ua","simQuery":"","simQueryParams":{},"simRouteParams":{},"simHeaders":{"Host":"c2cvia","User-Agent":"inventory-sync/2.1"},"simBody":null}`,
		},
		{
			name: "an empty User-Agent sends none, as net/http", method: "GET", url: "http://c2cvia/ua",
			header: http.Header{"User-Agent": {""}},
			simReq: `{"simMethod":"GET","simEndpoint":"/ua","simQuery":"","simQueryParams":{},"simRouteParams":{},"simHeaders":{"Host":"c2cvia"},"simBody":null}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			x := exchange(t, newRequest(t, tc.method, tc.url, tc.header, tc.body), `{"simStatus":204}`)
			require.NoError(t, x.err)
			assert.Equal(t, http.StatusNoContent, x.resp.StatusCode)
			assert.JSONEq(t, tc.simReq, string(x.leased.SimReq))
			assert.Contains(t, string(x.leased.SimReq), tc.verbatim)
			assert.Equal(t, x.peerID, x.leased.From, "from is the session's peer_id")
		})
	}
}

// TestHTTPClientSimRes: what a SimServer's sim_res looks like to the
// caller of HTTPClient.
func TestHTTPClientSimRes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		method   string
		simRes   string
		status   int
		header   http.Header
		body     string
		length   int64
		errCode  string // an *Error with this code instead of a response
		errState int    // and this status
	}{
		{name: "status, headers and text", method: "GET",
			simRes: `{"simStatus":201,"simHeaders":{"X-Custom":"yes","X-Multi":["a","b"],"Content-Type":"text/plain"},"simBody":"made"}`,
			status: 201, header: http.Header{"X-Custom": {"yes"}, "X-Multi": {"a", "b"}, "Content-Type": {"text/plain"}, "Content-Length": {"4"}},
			body: "made", length: 4},
		{name: "a JSON value as its JSON text, every digit kept", method: "GET", simRes: `{"simBody":{"n":12345678901234567890}}`,
			status: 200, header: http.Header{"Content-Type": {"application/json"}, "Content-Length": {"26"}},
			body: `{"n":12345678901234567890}`, length: 26},
		{name: "base64 as bytes", method: "GET",
			simRes: `{"simHeaders":{"Content-Type":"image/png"},"simBody":"iVBORw==","simBodyEncoding":"base64"}`,
			status: 200, header: http.Header{"Content-Type": {"image/png"}, "Content-Length": {"4"}}, body: "\x89PNG", length: 4},
		{name: "no body", method: "GET", simRes: `{}`, status: 200, header: http.Header{"Content-Length": {"0"}}},
		{name: "204 without a body", method: "DELETE", simRes: `{"simStatus":204,"simBody":"dropped"}`, status: 204, header: http.Header{}},
		{name: "HEAD: the length without the body", method: "HEAD", simRes: `{"simBody":"abc"}`,
			status: 200, header: http.Header{"Content-Length": {"3"}}, length: 3},
		{name: "a SimServer's 500 is a response", method: "GET", simRes: `{"simStatus":500,"simBody":"boom"}`,
			status: 500, header: http.Header{"Content-Length": {"4"}}, body: "boom", length: 4},
		{name: "1xx is no final answer", method: "GET", simRes: `{"simStatus":103}`, errState: 502, errCode: "bad_gateway"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := newRequest(t, tc.method, "http://c2cvia/x", nil, nil)
			x := exchange(t, req, tc.simRes)
			if tc.errCode != "" {
				e := relayError(t, x.err)
				assert.Equal(t, tc.errState, e.Status)
				assert.Equal(t, tc.errCode, e.Code)
				return
			}
			require.NoError(t, x.err)
			assert.Equal(t, tc.status, x.resp.StatusCode)
			assert.Equal(t, fmt.Sprintf("%d %s", tc.status, http.StatusText(tc.status)), x.resp.Status)
			assert.Equal(t, tc.header, x.resp.Header)
			assert.Equal(t, tc.length, x.resp.ContentLength)
			assert.Equal(t, tc.body, string(x.body))
			assert.Same(t, req, x.resp.Request)
		})
	}
}

// handled is what a Serve handler saw of a request.
type handled struct {
	method, path, uri, remote, body string
	query                           url.Values
	header                          http.Header
	form                            url.Values
}

// TestServeMapping: a request pushed with the raw API as a sim_req reaches
// a Serve handler as an *http.Request, and what the handler writes comes
// back as a sim_res.
func TestServeMapping(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		simReq  string
		check   func(t *testing.T, h handled, peerID, rid string)
		handler http.HandlerFunc // answers after the request is recorded
		simRes  string           // as pullsmart returns it
		logged  string           // what the error log must get, if anything
	}{
		{
			name: "method, escaped path, query and headers; C2cvia-From is the relay's word",
			simReq: `{"simEndpoint":"/items/a%2Fb","simMethod":"GET","simQueryParams":{"x":["1","2"],"n":5},
				"simHeaders":{"X-Test":"one","X-Multi":["a","b"],"C2cvia-From":"mallory","C2cvia-Rid":"forged"}}`,
			check: func(t *testing.T, h handled, peerID, rid string) {
				assert.Equal(t, "GET", h.method)
				assert.Equal(t, "/items/a%2Fb", h.path)
				assert.Equal(t, url.Values{"x": {"1", "2"}, "n": {"5"}}, h.query)
				assert.Equal(t, "/items/a%2Fb?n=5&x=1&x=2", h.uri)
				assert.Equal(t, http.Header{"X-Test": {"one"}, "X-Multi": {"a", "b"}, "C2cvia-From": {peerID}, "C2cvia-Rid": {rid}}, h.header)
				host, port, err := net.SplitHostPort(h.remote)
				assert.NoError(t, err, "RemoteAddr is the SimClient's IP:port: %q", h.remote)
				assert.Equal(t, "127.0.0.1", host)
				assert.NotEqual(t, "0", port)
				assert.Empty(t, h.body)
			},
			handler: func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hello") },
			simRes:  `{"simStatus":200,"simHeaders":{"Content-Type":"text/plain; charset=utf-8"},"simBody":"hello"}`,
		},
		{
			name:   "a JSON body without a method: POST with its JSON text, every digit kept",
			simReq: `{"simEndpoint":"/items","simBody":{"n":12345678901234567890}}`,
			check: func(t *testing.T, h handled, _, _ string) {
				assert.Equal(t, "POST", h.method)
				assert.Equal(t, "application/json", h.header.Get("Content-Type"))
				assert.Equal(t, `{"n":12345678901234567890}`, h.body)
			},
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusCreated)
				_, _ = io.WriteString(w, `{"n":12345678901234567890}`)
			},
			simRes: `{"simStatus":201,"simHeaders":{"Content-Type":"application/json"},"simBody":"{\"n\":12345678901234567890}"}`,
		},
		{
			name: "a form object as a form",
			simReq: `{"simEndpoint":"/form","simHeaders":{"Content-Type":"application/x-www-form-urlencoded"},
				"simBody":{"a":["1","2"],"b":"x y"}}`,
			check: func(t *testing.T, h handled, _, _ string) {
				assert.Equal(t, url.Values{"a": {"1", "2"}, "b": {"x y"}}, h.form)
			},
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Done", "yes")
				w.WriteHeader(http.StatusNoContent)
			},
			simRes: `{"simStatus":204,"simHeaders":{"X-Done":"yes"},"simBody":null}`,
		},
		{
			name: "base64 as bytes, bytes back as base64",
			simReq: `{"simEndpoint":"/bin","simHeaders":{"Content-Type":"application/octet-stream"},
				"simBody":"AAH+/w==","simBodyEncoding":"base64"}`,
			check: func(t *testing.T, h handled, _, _ string) {
				assert.Equal(t, "\x00\x01\xfe\xff", h.body)
			},
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/octet-stream")
				_, _ = w.Write([]byte{0xff, 0xfe, 0x01, 0x00})
			},
			simRes: `{"simStatus":200,"simHeaders":{"Content-Type":"application/octet-stream"},"simBody":"//4BAA==","simBodyEncoding":"base64"}`,
		},
		{
			name:   "a GET keeps a body it was sent with; an endpoint gets its leading slash",
			simReq: `{"simEndpoint":"plain","simMethod":"GET","simBody":"kept"}`,
			check: func(t *testing.T, h handled, _, _ string) {
				assert.Equal(t, "/plain", h.path)
				assert.Equal(t, "kept", h.body)
			},
			handler: func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "<!DOCTYPE html><p>hi") },
			simRes:  `{"simStatus":200,"simHeaders":{"Content-Type":"text/html; charset=utf-8"},"simBody":"<!DOCTYPE html><p>hi"}`,
		},
		{
			name:   "hop-by-hop headers stay behind; a declared length and repeated headers travel",
			simReq: `{"simEndpoint":"/h","simMethod":"GET","simHeaders":{"Connection":"close","Te":"trailers","X-Kept":"yes"}}`,
			check: func(t *testing.T, h handled, _, _ string) {
				assert.Equal(t, "yes", h.header.Get("X-Kept"))
			},
			handler: func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Connection", "close")
				w.Header().Set("Content-Length", "2")
				w.Header().Add("Set-Cookie", "a=1")
				w.Header().Add("Set-Cookie", "b=2")
				w.Header().Set("Content-Type", "text/plain")
				_, _ = io.WriteString(w, "ok")
			},
			simRes: `{"simStatus":200,"simHeaders":{"Content-Type":"text/plain","Content-Length":"2","Set-Cookie":["a=1","b=2"]},"simBody":"ok"}`,
		},
		{
			name:   "a panic answers 500 and goes to the error log",
			simReq: `{"simEndpoint":"/panic","simMethod":"GET"}`,
			check:  func(t *testing.T, h handled, _, _ string) {},
			handler: func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, "half an answer")
				panic("boom: a detail for the log only")
			},
			simRes: `{"simStatus":500,"simHeaders":{"Content-Type":"text/plain; charset=utf-8"},"simBody":"internal server error"}`,
			logged: "boom: a detail for the log only",
		},
		{
			name:   "http.ErrAbortHandler answers 500 quietly",
			simReq: `{"simEndpoint":"/abort","simMethod":"GET"}`,
			check:  func(t *testing.T, h handled, _, _ string) {},
			handler: func(w http.ResponseWriter, r *http.Request) {
				panic(http.ErrAbortHandler)
			},
			simRes: `{"simStatus":500,"simHeaders":{"Content-Type":"text/plain; charset=utf-8"},"simBody":"internal server error"}`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			netName := testNet(t)
			seen := make(chan handled, 1)
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				got := handled{method: r.Method, path: r.URL.EscapedPath(), uri: r.RequestURI, remote: r.RemoteAddr,
					body: string(body), query: r.URL.Query(), header: r.Header.Clone()}
				if r.Header.Get("Content-Type") == "application/x-www-form-urlencoded" {
					got.form, _ = url.ParseQuery(string(body))
				}
				seen <- got
				tc.handler(w, r)
			})
			errs := newErrorLog()
			srv := serve(t, relayURL, netName, testKey, h, errs.option())
			token, peerID := rawLogin(t, netName)
			rid := rawPush(t, token, tc.simReq)
			select {
			case got := <-seen:
				tc.check(t, got, peerID, rid)
			case <-time.After(within):
				t.Fatal("the handler did not get the request")
			}
			assert.JSONEq(t, tc.simRes, string(rawResult(t, token, rid)))
			if tc.logged != "" {
				assert.Contains(t, errs.next(t).Error(), tc.logged)
			}
			assert.ErrorIs(t, srv.stop(), context.Canceled)
			errs.empty(t)
		})
	}
}

// TestHTTPClientConcurrent: one Session's HTTPClient used from several
// goroutines at once gets each its own answer.
func TestHTTPClientConcurrent(t *testing.T) {
	t.Parallel()
	const n = 6 // under the relay's 8 long polls per token
	net := testNet(t)
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, r.URL.Query().Get("i"))
	})
	serve(t, relayURL, net, testKey, echo, client.WithConcurrency(3))
	s := login(t, relayURL, net)
	hc := s.HTTPClient()
	var wg sync.WaitGroup
	got := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			resp, err := hc.Get(fmt.Sprintf("http://c2cvia/echo?i=%d", i))
			if err != nil {
				errs[i] = err
				return
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			got[i], errs[i] = string(b), err
		})
	}
	wg.Wait()
	for i := range n {
		require.NoError(t, errs[i])
		assert.Equal(t, fmt.Sprint(i), got[i])
	}
}
