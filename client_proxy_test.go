package main

// Real applications behind the relay, reached through the /via/ gateway,
// the Go client and the JavaScript SDK: what they receive and answer is
// what a web server behind a reverse proxy would.

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestServedApps: an http.FileServer, a webhook receiver that checks an
// HMAC, a handler that redirects, and handlers with large answers, all
// served with client.Serve and called through /via/ and the HTTPClient.
func TestServedApps(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t) // --max-body 1 MiB
	dir := t.TempDir()
	big := bytes.Repeat([]byte("0123456789abcdef"), 5<<20/16)
	require.NoError(t, os.WriteFile(filepath.Join(dir, "big.bin"), big, 0o644))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "small.txt"), []byte("small file\n"), 0o644))
	secret := []byte("whsec_test")
	sign := func(b []byte) string {
		m := hmac.New(sha256.New, secret)
		m.Write(b)
		return hex.EncodeToString(m.Sum(nil))
	}
	blob := make([]byte, 800<<10)
	for i := range blob {
		blob[i] = byte(i * 31)
	}
	var hugeRuns atomic.Int32

	mux := http.NewServeMux()
	mux.Handle("/files/", http.StripPrefix("/files/", http.FileServer(http.Dir(dir))))
	mux.HandleFunc("POST /hooks/x", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if !hmac.Equal([]byte(sign(body)), []byte(r.Header.Get("X-Signature"))) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		if r.ContentLength != int64(len(body)) {
			http.Error(w, "length differs", http.StatusBadRequest)
			return
		}
		_, _ = io.WriteString(w, "verified")
	})
	mux.HandleFunc("GET /login", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/dashboard", http.StatusFound)
	})
	mux.HandleFunc("GET /dashboard", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "dash "+r.Host) })
	mux.HandleFunc("GET /away", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://example.org/x", http.StatusMovedPermanently)
	})
	mux.HandleFunc("GET /whoami", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]string{
			"host": r.Host, "uri": r.RequestURI, "remote": r.RemoteAddr,
			"prefix": r.Header.Get("X-Forwarded-Prefix"), "proto": r.Header.Get("X-Forwarded-Proto"),
		})
	})
	mux.HandleFunc("GET /blob", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(blob)
	})
	mux.HandleFunc("GET /huge", func(w http.ResponseWriter, r *http.Request) {
		hugeRuns.Add(1)
		_, _ = w.Write(big[:2<<20])
	})
	serveClient(t, r.URL, "app", testKey, mux)
	sess := clientLogin(t, r.URL, "app")
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

	t.Run("HEAD of a 5 MB file declares its length", func(t *testing.T) {
		resp, body := viaDo(t, mustRequest(t, http.MethodHead, r.URL+"/via/app/files/big.bin"))
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, int64(len(big)), resp.ContentLength)
		assert.Empty(t, body)
		resp, body = viaDo(t, mustRequest(t, http.MethodGet, r.URL+"/via/app/files/small.txt"))
		assert.Equal(t, "small file\n", string(body))
		assert.NotEmpty(t, resp.Header.Get("Last-Modified"))
	})

	t.Run("a webhook signature verifies", func(t *testing.T) {
		for _, body := range []string{
			"{\n  \"event\": \"push\",\n  \"id\": 7\n}\n",
			"z=1&a=2&z=3",
			"{\"name\":\"Jos\xe9\"}",
		} {
			for _, c := range []struct {
				name string
				url  string
				hc   *http.Client
			}{{"gateway", r.URL + "/via/app/hooks/x", http.DefaultClient}, {"HTTPClient", "http://app/hooks/x", sess.HTTPClient()}} {
				req := mustRequest(t, http.MethodPost, c.url)
				req.Body = io.NopCloser(strings.NewReader(body))
				req.ContentLength = int64(len(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("X-Signature", sign([]byte(body)))
				resp, err := c.hc.Do(req)
				require.NoError(t, err)
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				assert.Equal(t, http.StatusOK, resp.StatusCode, "%s %q: %s", c.name, body, got)
				assert.Equal(t, "verified", string(got))
			}
		}
	})

	t.Run("a redirect stays in the net", func(t *testing.T) {
		resp, err := noRedirect.Get(r.URL + "/via/app/login")
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusFound, resp.StatusCode)
		assert.Equal(t, "/via/app/dashboard", resp.Header.Get("Location"))
	})

	t.Run("the HTTPClient follows redirects within its host only", func(t *testing.T) {
		resp, err := sess.HTTPClient().Get("http://app/login")
		require.NoError(t, err)
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, "dash app", string(body), "followed, as net/http does")
		resp, err = sess.HTTPClient().Get("http://app/away")
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusMovedPermanently, resp.StatusCode, "another host is no SimServer's: not followed")
		assert.Equal(t, "https://example.org/x", resp.Header.Get("Location"))
	})

	t.Run("the handler sees the host, target and caller", func(t *testing.T) {
		req := mustRequest(t, http.MethodGet, r.URL+"/via/app/whoami?a=1;b=2&discount=100%&ok=yes")
		req.Host = "hooks.example.com"
		resp, body := viaDo(t, req)
		require.Equal(t, http.StatusOK, resp.StatusCode, string(body))
		var who map[string]string
		require.NoError(t, json.Unmarshal(body, &who))
		assert.Equal(t, "hooks.example.com", who["host"])
		assert.Equal(t, "/whoami?a=1;b=2&discount=100%&ok=yes", who["uri"])
		assert.Equal(t, "/via/app", who["prefix"])
		assert.Equal(t, "http", who["proto"])
		host, _, err := net.SplitHostPort(who["remote"])
		assert.NoError(t, err)
		assert.Equal(t, "127.0.0.1", host)
	})

	t.Run("an 800 KiB binary answer passes", func(t *testing.T) {
		resp, body := viaDo(t, mustRequest(t, http.MethodGet, r.URL+"/via/app/blob"))
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.True(t, bytes.Equal(blob, body), "byte for byte")
	})

	t.Run("an answer over --max-body streams in parts, the handler run once", func(t *testing.T) {
		resp, body := viaDo(t, mustRequest(t, http.MethodGet, r.URL+"/via/app/huge"))
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.True(t, bytes.Equal(big[:2<<20], body), "byte for byte")
		assert.Equal(t, int32(1), hugeRuns.Load())
		var n int
		require.NoError(t, r.store.r.QueryRow(`SELECT count(*) FROM requests WHERE net = 'app' AND status IN ('queued', 'delivered')
			AND sim_req LIKE '%"/huge"%'`).Scan(&n))
		assert.Zero(t, n, "answered (then deleted, as no token reads it): never handed out again")
	})
}

// TestServedAppInvalidAnswer: an answer the relay cannot write (a status
// past 599, a NUL in a header) reaches the caller at once as a 502, and the
// handler runs once.
func TestServedAppInvalidAnswer(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	var runs atomic.Int32
	serveClient(t, r.URL, "odd", testKey, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		runs.Add(1)
		if r.URL.Path == "/header" {
			w.Header().Set("X-Bad", "a\x00b")
			return
		}
		w.WriteHeader(999) // net/http writes it; the relay takes 100-599
	}))
	for i, path := range []string{"/status", "/header"} {
		resp, body := viaDo(t, mustRequest(t, http.MethodGet, r.URL+"/via/odd"+path))
		assert.Equal(t, http.StatusBadGateway, resp.StatusCode, path)
		assert.Contains(t, string(body), `"invalid_response"`, path)
		assert.Equal(t, int32(i+1), runs.Load(), "%s: the handler ran once", path)
	}
}

// TestThreeEntriesStoreTheSame: one HTTP request sent through the /via/
// gateway, the Go client's HTTPClient and the JavaScript SDK's
// session.fetch is stored as the same sim_req, but for what the gateway
// adds as a reverse proxy (X-Forwarded-*).
func TestThreeEntriesStoreTheSame(t *testing.T) {
	t.Parallel()
	nodeBin, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("node is needed and is not on PATH")
		}
		t.Skip("node not installed")
	}
	r := newTestRelay(t)
	const target = "/orders/a%2Fb//c?z=1&a=2;x&q=%20+&pct=100%"
	body := "{\n  \"name\": \"José\",\n  \"n\": 12345678901234567890\n}"
	headers := [][2]string{{"Content-Type", "application/json"}, {"X-Signature", "abc"}, {"X-Legacy", "caf\xe9"}}

	stored := func() map[string]any {
		t.Helper()
		l, sim := r.leaseOne("shop", nil)
		require.Equal(t, http.StatusOK, r.answer("shop", testKey, l.RID, map[string]any{"simStatus": 204}).Status)
		h := sim["simHeaders"].(map[string]any)
		for name := range h {
			if strings.HasPrefix(name, "X-Forwarded-") {
				delete(h, name)
			}
		}
		return sim
	}

	// The gateway, written raw.
	raw := "POST /via/shop" + target + " HTTP/1.1\r\nHost: shop.example\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n"
	for _, h := range headers {
		raw += h[0] + ": " + h[1] + "\r\n"
	}
	done := viaAsync(t, r.URL, "POST", raw+"\r\n"+body)
	viaSim := stored()
	<-done

	// The Go client.
	sess := clientLogin(t, r.URL, "shop")
	req, err := http.NewRequest(http.MethodPost, "http://shop.example"+target, strings.NewReader(body))
	require.NoError(t, err)
	for _, h := range headers {
		req.Header.Set(h[0], h[1])
	}
	req.Header["User-Agent"] = []string{""} // none, as the raw request above: net/http sends none for an empty one
	errc := make(chan error, 1)
	go func() {
		resp, err := sess.HTTPClient().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	goSim := stored()
	require.NoError(t, <-errc)

	// The JavaScript SDK.
	sdk, err := filepath.Abs("sdk/c2cvia.js")
	require.NoError(t, err)
	hdrs, _ := json.Marshal(map[string]string{"Content-Type": headers[0][1], "X-Signature": headers[1][1]})
	script := `import { login } from ` + strconv.Quote("file://"+sdk) + `;
const s = await login({ relay: process.env.RELAY, net: "shop" });
const headers = new Headers(` + string(hdrs) + `);
headers.set("X-Legacy", "caf\u00e9");
const res = await s.fetch("http://shop.example` + target + `", { method: "POST", headers, body: ` + strconv.Quote(body) + ` });
await s.close?.();
process.exit(res.status === 204 ? 0 : 1);
`
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, nodeBin, "--input-type=module", "-e", script)
	cmd.Env = append(os.Environ(), "RELAY="+r.URL)
	nodeDone := make(chan error, 1)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	go func() { nodeDone <- cmd.Wait() }()
	jsSim := stored()
	require.NoError(t, <-nodeDone, out.String())

	assert.Equal(t, body, viaSim["simBody"], "the exact bytes")
	assert.Equal(t, "caf\u00e9", viaSim["simHeaders"].(map[string]any)["X-Legacy"])
	assert.Equal(t, map[string]any{"X-Legacy": "latin1"}, viaSim["simHeadersEncoding"])
	assert.Equal(t, viaSim, goSim, "the gateway and the Go client")
	assert.Equal(t, viaSim, jsSim, "the gateway and the JavaScript SDK")
}
