package simhttp

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// goldenCase is one file of testdata/mapping, which the JavaScript SDK's
// tests read too. A request case maps http to sim and back; a response
// case maps what a handler wrote (handler) to sim, and sim to what the
// caller receives (wire). direction "to_sim" or "to_http" checks one way.
type goldenCase struct {
	About     string          `json:"about"`
	Direction string          `json:"direction"`
	Method    string          `json:"method"` // the request's, for a response case
	HTTP      *goldenHTTP     `json:"http"`
	Handler   *goldenHTTP     `json:"handler"`
	Wire      *goldenHTTP     `json:"wire"`
	Sim       json.RawMessage `json:"sim"`
}

type goldenHTTP struct {
	Method     string     `json:"method"`
	Target     string     `json:"target"`
	Status     int        `json:"status"`
	Headers    [][]string `json:"headers"` // [name, value] or [name, value, "latin1"]
	Body       *string    `json:"body"`
	BodyBase64 *string    `json:"body_base64"`
}

// header is the case's headers as net/http holds them; a latin1 value is
// one byte per code point. Host is returned apart.
func (g *goldenHTTP) header(t *testing.T) (h http.Header, host string) {
	h = http.Header{}
	for _, kv := range g.Headers {
		v := kv[1]
		if len(kv) == 3 {
			var ok bool
			v, ok = isomorphicEncode(v)
			require.True(t, ok)
		}
		if http.CanonicalHeaderKey(kv[0]) == "Host" {
			host = v
			continue
		}
		h.Add(kv[0], v)
	}
	return h, host
}

func (g *goldenHTTP) body(t *testing.T) []byte {
	switch {
	case g.Body != nil:
		return []byte(*g.Body)
	case g.BodyBase64 != nil:
		b, err := base64.StdEncoding.DecodeString(*g.BodyBase64)
		require.NoError(t, err)
		return b
	}
	return nil
}

func readGolden(t *testing.T) map[string]goldenCase {
	t.Helper()
	files, err := filepath.Glob("../../testdata/mapping/*.json")
	require.NoError(t, err)
	require.NotEmpty(t, files)
	cases := map[string]goldenCase{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		var c goldenCase
		require.NoError(t, json.Unmarshal(b, &c), f)
		require.NotEmpty(t, c.About, f)
		cases[strings.TrimSuffix(filepath.Base(f), ".json")] = c
	}
	return cases
}

// sameJSON compares two JSON texts by meaning.
func sameJSON(t *testing.T, want json.RawMessage, got any) {
	t.Helper()
	gotText, err := Marshal(got)
	require.NoError(t, err)
	var w, g any
	require.NoError(t, json.Unmarshal(want, &w))
	require.NoError(t, json.Unmarshal(gotText, &g))
	assert.Equal(t, w, g, "got %s", gotText)
}

// endToEnd drops the hop-by-hop headers, which no mapping keeps.
func endToEnd(h http.Header) http.Header {
	out := http.Header{}
	for name, vals := range h {
		if !IsHopByHop(name, h.Values("Connection")) {
			out[name] = vals
		}
	}
	return out
}

func TestGoldenRequests(t *testing.T) {
	for name, c := range readGolden(t) {
		if !strings.HasPrefix(name, "req-") {
			continue
		}
		t.Run(name, func(t *testing.T) {
			h, host := c.HTTP.header(t)
			body := c.HTTP.body(t)
			if c.Direction != "to_http" {
				sim := FromRequest(c.HTTP.Method, c.HTTP.Target, host, h, body)
				sameJSON(t, c.Sim, sim)
			}
			if c.Direction == "to_sim" {
				return
			}
			var sim Request
			require.NoError(t, json.Unmarshal(c.Sim, &sim))
			req, err := sim.HTTPRequest()
			require.NoError(t, err)
			assert.Equal(t, c.HTTP.Method, req.Method)
			assert.Equal(t, c.HTTP.Target, req.RequestURI)
			assert.Equal(t, c.HTTP.Target, req.URL.RequestURI(), "r.URL must give back the target as sent")
			assert.Equal(t, host, req.Host)
			assert.Equal(t, endToEnd(h), req.Header)
			got, err := io.ReadAll(req.Body)
			require.NoError(t, err)
			assert.Equal(t, string(body), string(got))
			assert.Equal(t, int64(len(body)), max(req.ContentLength, 0))
		})
	}
}

func TestGoldenResponses(t *testing.T) {
	for name, c := range readGolden(t) {
		if !strings.HasPrefix(name, "res-") {
			continue
		}
		t.Run(name, func(t *testing.T) {
			if c.Direction != "to_http" {
				h, _ := c.Handler.header(t)
				sim := FromResponse(c.Handler.Status, h, c.Handler.body(t))
				sameJSON(t, c.Sim, sim)
			}
			if c.Direction == "to_sim" {
				return
			}
			var sim Response
			require.NoError(t, json.Unmarshal(c.Sim, &sim))
			status, h, body, err := sim.HTTPResponse(c.Method)
			require.NoError(t, err)
			wantHeader, _ := c.Wire.header(t)
			assert.Equal(t, c.Wire.Status, status)
			assert.Equal(t, wantHeader, h)
			assert.Equal(t, string(c.Wire.body(t)), string(body))
		})
	}
}
