// Fuzz targets for everything that reads untrusted input: parameter
// decoding, sim_req/sim_res validation, the /via/ request mapping, and
// pushreq end to end against a real store (a refused call writes nothing).
// Seed corpora are in testdata/fuzz/; .ci/run fuzzes each target briefly.

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/c2cvia/c2cvia/internal/simhttp"
	"golang.org/x/net/http/httpguts"
)

// FuzzDecodeParams: any query, body and content type decodes or fails with
// a client error (4xx), never a panic or a server error.
func FuzzDecodeParams(f *testing.F) {
	f.Add("POST", "application/json", "net=demo", `{"sim_req":{"simEndpoint":"/x"},"wait":1.5}`)
	f.Add("POST", "application/x-www-form-urlencoded", "", "token=t&sim_req=%7B%7D&simBody=hi")
	f.Add("GET", "", "rid=a&rid=b&wait=-1", "")
	f.Add("POST", "text/plain", "", "hello")
	f.Fuzz(func(t *testing.T, method, contentType, query, body string) {
		if !validMethod(method) {
			return
		}
		req := httptest.NewRequest(http.MethodGet, "/x", strings.NewReader(body))
		req.Method = method
		req.URL.RawQuery = query
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		p, release, err := decodeParams(httptest.NewRecorder(), req, 1<<16, false)
		defer release()
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) || ae.Status < 400 || ae.Status > 499 {
				t.Fatalf("decode failed with %v, not a client error", err)
			}
			return
		}
		// Every accessor copes with whatever was decoded.
		for _, name := range []string{"net", "token", "rid", "wait", "max", "sim_req", "simBody", "data"} {
			_, _, _ = p.str(name)
			_, _, _ = p.number(name)
			if raw, ok, err := p.rawJSON(name); err == nil && ok && !json.Valid(raw) {
				t.Fatalf("rawJSON(%q) gave invalid JSON %q", name, raw)
			}
		}
		_, _ = p.seconds("wait", defaultWait, 60e9)
		_, _ = p.intIn("max", 1, 100, 1)
	})
}

// FuzzSimJSON: a sim_req or sim_res either is refused with 400 or comes
// out valid, complete and stable (normalising it again changes nothing).
func FuzzSimJSON(f *testing.F) {
	f.Add([]byte(`{"simEndpoint":"/items/7","simMethod":"GET","simQueryParams":{"a":"1"}}`))
	f.Add([]byte(`{"simStatus":"404","simHeaders":{"X":["a","b"]},"simBody":{"n":1e400}}`))
	f.Add([]byte(`{"simEndpoint":"/b","simBody":"aGk=","simBodyEncoding":"base64"}`))
	f.Add([]byte(`{"simEndpoint":"","simHeaders":null}`))
	f.Fuzz(func(t *testing.T, raw []byte) {
		for _, norm := range []func(map[string]json.RawMessage) ([]byte, error){normalizeSimReq, normalizeSimRes} {
			var obj map[string]json.RawMessage
			if json.Unmarshal(raw, &obj) != nil || obj == nil {
				return
			}
			out, err := norm(obj)
			if err != nil {
				var ae *apiError
				if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest {
					t.Fatalf("refusal %v is not a 400", err)
				}
				continue
			}
			if !json.Valid(out) {
				t.Fatalf("normalised to invalid JSON: %s", out)
			}
			var again map[string]json.RawMessage
			if err := json.Unmarshal(out, &again); err != nil {
				t.Fatal(err)
			}
			out2, err := norm(again)
			if err != nil || !bytes.Equal(out, out2) {
				t.Fatalf("not stable: %s then %s (%v)", out, out2, err)
			}
		}
	})
}

// FuzzViaMapping: whatever a plain HTTP client sends through the gateway
// maps to a sim_req that pushreq itself would accept, is valid UTF-8 JSON,
// and gives back the exact target, header bytes and body bytes.
func FuzzViaMapping(f *testing.F) {
	f.Add("POST", "/items/7", "a=1&a=2", "application/json", []byte(`{"k":[1,2]}`), "X-Trace", "abc")
	f.Add("PUT", "/a%2Fb//./c", "", "application/x-www-form-urlencoded", []byte("x=1&x=2&y="), "Connection", "X-Trace")
	f.Add("GET", "/", "q;r=%zz", "text/plain; charset=utf-8", []byte("héllo"), "Accept", "caf\xe9")
	f.Add("POST", "/img", "", "image/png", []byte{0x89, 'P', 'N', 'G', 0, 0xff}, "Proxy-Authorization", "x")
	g := &gateway{cfg: config{MaxBody: 1 << 16}}
	f.Fuzz(func(t *testing.T, method, path, query, contentType string, body []byte, hName, hValue string) {
		if !validMethod(method) || strings.ContainsAny(path+query, "?# \t\r\n") || !httpguts.ValidHeaderFieldValue(hValue) {
			return
		}
		// net/http refuses control characters (but tab) in header values and
		// targets before a handler runs: the relay never maps such input.
		ctl := func(r rune) bool { return r < 0x20 && r != '\t' || r == 0x7f }
		if strings.ContainsFunc(contentType+hValue, ctl) || strings.ContainsFunc(path+query, ctl) {
			return
		}
		target := "/" + strings.TrimPrefix(path, "/")
		if query != "" {
			target += "?" + query
		}
		req := httptest.NewRequest(http.MethodGet, "/via/demo/", bytes.NewReader(body))
		req.Method = method
		req.Header.Set("Content-Type", contentType)
		if httpguts.ValidHeaderFieldName(hName) {
			req.Header.Set(hName, hValue)
		}
		out, err := g.simRequest(httptest.NewRecorder(), req, viaTarget{net: "demo", target: target})
		if err != nil {
			t.Fatalf("mapping failed: %v", err)
		}
		if !utf8.Valid(out) {
			t.Fatalf("mapped to invalid UTF-8: %q", out)
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(out, &obj); err != nil {
			t.Fatalf("mapped to invalid JSON: %s", out)
		}
		if _, err := normalizeSimReq(obj); err != nil {
			t.Fatalf("pushreq would refuse the mapped sim_req %s: %v", out, err)
		}
		var sim simhttp.Request
		if err := json.Unmarshal(out, &sim); err != nil {
			t.Fatal(err)
		}
		back, err := sim.HTTPRequest()
		if err != nil {
			if _, perr := url.ParseRequestURI(target); perr != nil {
				return // net/http would have refused this target too
			}
			t.Fatalf("the handler's request cannot be rebuilt from %s: %v", out, err)
		}
		if back.Method != method || back.RequestURI != simhttp.EscapeInvalid(target) {
			t.Fatalf("%s %s came back as %s %s", method, target, back.Method, back.RequestURI)
		}
		for name, vals := range req.Header {
			if simhttp.IsHopByHop(name, req.Header.Values("Connection")) {
				if back.Header.Get(name) != "" && name != "X-Forwarded-For" {
					t.Fatalf("hop-by-hop header %q passed", name)
				}
				continue
			}
			if !slices.Equal(back.Header[name], vals) {
				t.Fatalf("header %s: %q came back as %q", name, vals, back.Header[name])
			}
		}
		got, _ := io.ReadAll(back.Body)
		if !bytes.Equal(got, body) {
			t.Fatalf("body %q came back as %q", body, got)
		}
	})
}

// FuzzPushReq: pushreq with any body against a real store either answers
// 201 and stores exactly one request, or refuses with a 4xx JSON error and
// stores nothing.
func FuzzPushReq(f *testing.F) {
	f.Add("application/json", `{"sim_req":{"simEndpoint":"/x","simBody":[1,2]}}`)
	f.Add("application/json", `{"simEndpoint":"/x","simMethod":"DELETE","simHeaders":{"A":"b"}}`)
	f.Add("application/x-www-form-urlencoded", `simEndpoint=%2Fx&simBody=hello&simQueryParams=%7B%22a%22%3A1%7D`)
	f.Add("application/json", `{"sim_req":{"simEndpoint":"/x"},"simBody":1}`)
	f.Add("text/plain", `nope`)
	r := newTestRelay(f)
	tok, _ := r.login("demo")
	rows := func(t *testing.T) int {
		var n int
		if err := r.store.r.QueryRow(`SELECT count(*) FROM requests`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	f.Fuzz(func(t *testing.T, contentType, body string) {
		if strings.IndexFunc(contentType, func(c rune) bool { return c < ' ' && c != '\t' || c == 0x7f }) >= 0 {
			return // no client can send that header
		}
		before := rows(t)
		req, err := http.NewRequest(http.MethodPost, r.URL+"/api/v1/client/pushreq", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("Authorization", "Bearer "+tok)
		rep := doRequest(t, req)
		after := rows(t)
		switch {
		case rep.Status == http.StatusCreated:
			if after != before+1 {
				t.Fatalf("201 but %d rows became %d", before, after)
			}
		case rep.Status >= 400 && rep.Status < 500 && rep.errorCode() != "":
			if after != before {
				t.Fatalf("refused (%d %s) but %d rows became %d", rep.Status, rep.errorCode(), before, after)
			}
		default:
			t.Fatalf("unexpected reply %d %s", rep.Status, rep.Body)
		}
	})
}
