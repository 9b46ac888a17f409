// The JavaScript SDK: served by the relay (TestSDKServed) and exercised by
// its node tests against a live relay (TestJavaScriptSDK).

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestSDKServed(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	file, err := os.ReadFile("sdk/c2cvia.js")
	require.NoError(t, err)

	req, _ := http.NewRequest(http.MethodGet, r.URL+"/sdk/c2cvia.js", nil)
	req.Header.Set("Origin", "https://elsewhere.example")
	rep := r.do(req)
	require.Equal(t, http.StatusOK, rep.Status)
	assert.Equal(t, "text/javascript; charset=utf-8", rep.Header.Get("Content-Type"))
	assert.Equal(t, "no-cache", rep.Header.Get("Cache-Control"))
	assert.Equal(t, "*", rep.Header.Get("Access-Control-Allow-Origin"), "importable cross-origin")
	assert.True(t, bytes.Equal(file, rep.Body), "the served module is the file")
	etag := rep.Header.Get("ETag")
	assert.Regexp(t, `^"[0-9a-f]{32}"$`, etag, "a strong ETag")

	req, _ = http.NewRequest(http.MethodGet, r.URL+"/sdk/c2cvia.js", nil)
	req.Header.Set("If-None-Match", etag)
	rep = r.do(req)
	assert.Equal(t, http.StatusNotModified, rep.Status)
	assert.Empty(t, rep.Body)

	req, _ = http.NewRequest(http.MethodGet, r.URL+"/sdk/c2cvia.js", nil)
	req.Header.Set("If-None-Match", `"something-else"`)
	assert.Equal(t, http.StatusOK, r.do(req).Status)

	req, _ = http.NewRequest(http.MethodHead, r.URL+"/sdk/c2cvia.js", nil)
	rep = r.do(req)
	assert.Equal(t, http.StatusOK, rep.Status)
	assert.Equal(t, strconv.Itoa(len(file)), rep.Header.Get("Content-Length"))
	assert.Equal(t, etag, rep.Header.Get("ETag"))
	assert.Empty(t, rep.Body)

	req, _ = http.NewRequest(http.MethodPost, r.URL+"/sdk/c2cvia.js", nil)
	rep = r.do(req)
	assert.Equal(t, http.StatusMethodNotAllowed, rep.Status)
}

// TestJavaScriptSDK runs `node --test sdk/` against a relay on a fake
// clock. Node finds the relay in C2CVIA_RELAY (every call counted), a
// switchable front of it in C2CVIA_FLAKY and the test's controls in
// C2CVIA_CONTROL (see sdkControl). A second relay, whose logins expire
// after the token_ttl_ms of testdata/sdk-cases.json's relogin case, is
// C2CVIA_SHORT_RELAY with its controls at C2CVIA_SHORT_CONTROL: moving the
// shared relay's clock past a login's lifetime would end every other
// test's logins.
func TestJavaScriptSDK(t *testing.T) {
	t.Parallel()
	// The SDK's own tests, which count the relay's calls and its held
	// requests: they run in the suite's first pass, on SQLite.
	onlyOneNode(t)
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("node is needed for the JavaScript SDK tests and is not on PATH")
		}
		t.Skip("node not installed")
	}
	r := newTestRelay(t)
	c := newSDKControl(t, r)
	ttl := reloginTokenTTL(t)
	short := newSDKControl(t, newTestRelay(t, func(cfg *config) { cfg.TokenTTL = ttl }))

	// Each node test has a 30 s timeout of its own; this bounds the whole
	// run, so a test that hangs fails rather than stalls go test.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// One file at a time: the files share the relay and its one clock.
	cmd := exec.CommandContext(ctx, nodeBin, "--test", "--test-concurrency=1", "--test-reporter=spec", "sdk/")
	cmd.Env = append(os.Environ(),
		"C2CVIA_RELAY="+c.relay.URL, "C2CVIA_FLAKY="+c.flaky.URL, "C2CVIA_CONTROL="+c.control.URL,
		"C2CVIA_SHORT_RELAY="+short.relay.URL, "C2CVIA_SHORT_CONTROL="+short.control.URL,
		"C2CVIA_KEY="+testKey, "NO_COLOR=1")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = cmd.Stdout
	require.NoError(t, cmd.Start())
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		t.Log(sc.Text())
	}
	if err := cmd.Wait(); err != nil {
		if ctx.Err() != nil {
			t.Fatalf("node --test sdk/ did not finish within 3 minutes: %v", err)
		}
		t.Fatalf("node --test sdk/ failed: %v", err)
	}
}

// reloginTokenTTL is the token lifetime the relogin case of
// testdata/sdk-cases.json asks for.
func reloginTokenTTL(t *testing.T) time.Duration {
	t.Helper()
	raw, err := os.ReadFile("testdata/sdk-cases.json")
	require.NoError(t, err)
	var table struct {
		Cases []struct {
			Kind       string `json:"kind"`
			TokenTTLMS int64  `json:"token_ttl_ms"`
		} `json:"cases"`
	}
	require.NoError(t, json.Unmarshal(raw, &table))
	for _, c := range table.Cases {
		if c.Kind == "relogin" {
			require.Positive(t, c.TokenTTLMS, "the relogin case's token_ttl_ms")
			return time.Duration(c.TokenTTLMS) * time.Millisecond
		}
	}
	t.Fatal("testdata/sdk-cases.json has no relogin case")
	return 0
}

// sdkControl is what the node tests drive besides the relay:
//
//	POST /advance?by=1.5s       moves the relay's clock and wakes its long polls
//	GET  /count?path=P          calls to P through C2CVIA_RELAY so far
//	GET  /count?path=P&answered=1  those of them the relay has answered
//	GET  /count?path=P&front=flaky  the same through C2CVIA_FLAKY
//	POST /fail?path=P&status=503&times=1  the next calls to P get that status
//	POST /fail?path=P&times=0   calls to P go through again
//	POST /flaky?mode=up|503|drop  C2CVIA_FLAKY forwards, answers 503, or drops the connection
type sdkControl struct {
	relay, flaky *relayFront
	control      *httptest.Server
}

func newSDKControl(t *testing.T, r *testRelay) *sdkControl {
	c := &sdkControl{relay: newRelayFront(t, r.srv), flaky: newRelayFront(t, r.srv)}
	modes := map[string]frontMode{"up": frontUp, "503": front503, "drop": frontDrop}
	c.control = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		q := req.URL.Query()
		switch req.URL.Path {
		case "/advance":
			d, err := time.ParseDuration(q.Get("by"))
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.advance(d)
		case "/count":
			front := c.relay
			if q.Get("front") == "flaky" {
				front = c.flaky
			}
			n := front.count(q.Get("path"))
			if q.Get("answered") == "1" {
				n = front.answeredCount(q.Get("path"))
			}
			fmt.Fprintf(w, `{"count":%d}`, n)
			return
		case "/fail":
			status, _ := strconv.Atoi(q.Get("status"))
			times, err := strconv.Atoi(q.Get("times"))
			if err != nil || times < 0 {
				http.Error(w, "times is a count", http.StatusBadRequest)
				return
			}
			if times == 0 {
				c.relay.mu.Lock()
				delete(c.relay.fails, q.Get("path"))
				c.relay.mu.Unlock()
				break
			}
			c.relay.failNext(q.Get("path"), status, times)
		case "/flaky":
			mode, ok := modes[q.Get("mode")]
			if !ok {
				http.Error(w, "mode is up, 503 or drop", http.StatusBadRequest)
				return
			}
			c.flaky.setMode(mode)
		default:
			http.NotFound(w, req)
			return
		}
		fmt.Fprint(w, `{}`)
	}))
	t.Cleanup(c.control.Close)
	return c
}

// TestReadmeJavaScriptSDK runs the README's JavaScript SDK example with
// node, as a reader would: the module saved from a running relay.
func TestReadmeJavaScriptSDK(t *testing.T) {
	t.Parallel()
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("node is needed for the README's JavaScript example and is not on PATH")
		}
		t.Skip("node not installed")
	}
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(readme), "## JavaScript SDK\n")
	require.True(t, ok, "README has the section")
	section, _, _ = strings.Cut(section, "\n## ")
	script := regexp.MustCompile("(?s)```js\n(.*?)```").FindStringSubmatch(section)
	require.NotNil(t, script, "the section has a js block")
	require.Contains(t, section, "curl -o c2cvia.mjs http://localhost:8080/sdk/c2cvia.js")

	base, _ := startRun(t, nil, "serve", "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "c2cvia.db"))
	dir := t.TempDir()
	resp, err := http.Get(base + "/sdk/c2cvia.js")
	require.NoError(t, err)
	module, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "c2cvia.mjs"), module, 0o644))
	code := strings.Replace(script[1], `"http://localhost:8080"`, strconv.Quote(base), 1)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "example.mjs"), []byte(code), 0o644))

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodeBin, "example.mjs")
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	require.NoError(t, err, "%s", out)
	assert.Regexp(t, `^200 \{ hello: 'Ada', from: '[^']+' \}\nunicast \{ text: 'hi Bob' \}\n$`, string(out))
}
