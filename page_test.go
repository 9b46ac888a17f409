package main

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// getPage fetches GET / with the given Host (none: the relay's own).
func getPage(t *testing.T, r *testRelay, method, host string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, r.URL+"/", nil)
	require.NoError(t, err)
	if host != "" {
		req.Host = host
	}
	req.Header.Set("Prefer", "respond-async") // a gateway request answers at once
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp, string(body)
}

// TestPageServed: GET / is the embedded page, which loads the SDK from the
// relay; the rest of the paths keep their JSON errors.
func TestPageServed(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	resp, body := getPage(t, r, http.MethodGet, "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Equal(t, "text/html; charset=utf-8", resp.Header.Get("Content-Type"))
	require.Equal(t, "no-cache", resp.Header.Get("Cache-Control"))
	require.Contains(t, body, `import { serve, login } from "/sdk/c2cvia.js";`)
	require.Contains(t, body, `<meta name="c2cvia-via-host" content="">`)
	require.Contains(t, body, `name="viewport"`, "readable on a phone")

	resp, body = getPage(t, r, http.MethodHead, "")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Empty(t, body)

	got := r.postJSON("/", "", map[string]any{})
	require.Equal(t, http.StatusMethodNotAllowed, got.Status)
	require.Equal(t, "method_not_allowed", got.errorCode())
	got = r.get("/index.html", nil)
	require.Equal(t, http.StatusNotFound, got.Status)
	require.Equal(t, "no_route", got.errorCode())
}

// TestPageViaHost: with --via-host the page shares NET.suffix addresses, and
// a net's own host still reaches its SimServer, not the page.
func TestPageViaHost(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.ViaHost = ".via.example.com" })
	resp, body := getPage(t, r, http.MethodGet, "via.example.com")
	require.Equal(t, http.StatusOK, resp.StatusCode)
	require.Contains(t, body, `<meta name="c2cvia-via-host" content=".via.example.com">`)

	resp, body = getPage(t, r, http.MethodGet, "demo.via.example.com")
	require.Equal(t, http.StatusAccepted, resp.StatusCode, body)
	require.False(t, strings.Contains(body, "<html"), "a net's host is its SimServer's")
}
