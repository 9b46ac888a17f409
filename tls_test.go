// HTTPS from certificate files and from ACME, and the limits against slow
// and hostile clients, through the real serve command.

package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testCert is a self-signed ECDSA certificate for some names, as PEM files.
type testCert struct {
	CertFile, KeyFile string
	Pool              *x509.CertPool // trusts only this certificate
	certPEM, keyPEM   []byte
}

// newTestCert makes a certificate for names (IP addresses or DNS names),
// valid for a year so that autocert never wants to renew it.
func newTestCert(t *testing.T, names ...string) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: names[0]},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	leaf, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	keyDER, err := x509.MarshalECPrivateKey(key)
	require.NoError(t, err)
	c := testCert{
		Pool:    x509.NewCertPool(),
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}
	c.Pool.AddCert(leaf)
	dir := t.TempDir()
	c.CertFile, c.KeyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(c.CertFile, c.certPEM, 0o600))
	require.NoError(t, os.WriteFile(c.KeyFile, c.keyPEM, 0o600))
	return c
}

// tlsClient trusts only pool and speaks HTTP/2 when the server offers it.
// serverName, if set, is the SNI name to ask for.
func tlsClient(t *testing.T, pool *x509.CertPool, serverName string) *http.Client {
	t.Helper()
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: serverName},
		ForceAttemptHTTP2: true,
	}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// plainClient opens a new connection per request: with the short idle
// timeouts below, a reused connection could be closed under a request.
func plainClient(t *testing.T) *http.Client {
	t.Helper()
	return &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
}

// callWith sends one request with client; body, if not nil, goes as JSON.
func callWith(t *testing.T, client *http.Client, method, u, bearer string, body any) reply {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		require.NoError(t, err)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, u, rd)
	require.NoError(t, err)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := client.Do(req)
	require.NoError(t, err)
	rep, err := readReply(resp)
	require.NoError(t, err)
	return rep
}

// countTokens counts the logins stored in the file at dbPath.
func countTokens(t *testing.T, dbPath string) int { return countRows(t, dbPath, "tokens") }

// countRows counts the rows of table in the store at dbPath.
func countRows(t *testing.T, dbPath, table string) int {
	t.Helper()
	db, err := sql.Open("sqlite", dbPath+"?_pragma=query_only(1)")
	require.NoError(t, err)
	defer db.Close()
	var n int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM `+table).Scan(&n))
	return n
}

// exchangeOver logs in, pushes a request and pulls it as the SimServer,
// all through client, and checks each reply.
func exchangeOver(t *testing.T, client *http.Client, base, net string) {
	t.Helper()
	rep := callWith(t, client, http.MethodGet, base+"/api/v1/client/login?net="+net, "", nil)
	require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	tok := rep.str("token")
	require.NotEmpty(t, tok)
	rep = callWith(t, client, http.MethodPost, base+"/api/v1/client/pushreq", tok,
		map[string]any{"sim_req": map[string]any{"simEndpoint": "/secure"}})
	require.Equal(t, http.StatusCreated, rep.Status, string(rep.Body))
	rid := rep.str("rid")
	rep = callWith(t, client, http.MethodGet, base+"/api/v1/server/pullreqsmart?"+
		url.Values{"net": {net}, "key": {testKey}, "wait": {"0"}}.Encode(), "", nil)
	require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	assert.Contains(t, string(rep.Body), rid)
}

// TestTLS serves HTTPS from certificate files given as flags or variables:
// a client that trusts the certificate logs in and pushes a request over
// HTTP/2; one that does not is refused; plain HTTP gets no API answer.
func TestTLS(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"flags", "env"} {
		t.Run(how, func(t *testing.T) {
			cert := newTestCert(t, "127.0.0.1", "localhost")
			dbPath := filepath.Join(t.TempDir(), "relay.db")
			args := []string{"--addr", "127.0.0.1:0", "--db", dbPath}
			env := map[string]string{}
			if how == "flags" {
				args = append(args, "--tls-cert", cert.CertFile, "--tls-key", cert.KeyFile)
			} else {
				env["C2CVIA_TLS_CERT"], env["C2CVIA_TLS_KEY"] = cert.CertFile, cert.KeyFile
			}
			client := tlsClient(t, cert.Pool, "")
			s := startServe(t, client, env, args...)
			require.True(t, strings.HasPrefix(s.URL, "https://127.0.0.1:"), s.URL)

			exchangeOver(t, client, s.URL, "tls-net")
			resp, err := client.Get(s.URL + "/healthz")
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, 2, resp.ProtoMajor, "HTTP/2 over TLS")
			_, port, _ := net.SplitHostPort(strings.TrimPrefix(s.URL, "https://"))
			resp, err = client.Get("https://localhost:" + port + "/healthz")
			if assert.NoError(t, err, "the certificate's DNS name") {
				resp.Body.Close()
			}

			_, err = plainClient(t).Get(s.URL + "/healthz")
			var unknownCA x509.UnknownAuthorityError
			assert.ErrorAs(t, err, &unknownCA, "a client that does not trust the certificate")

			resp, err = plainClient(t).Get("http://127.0.0.1:" + port + "/api/v1/client/login?net=tls-net")
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				assert.Equal(t, http.StatusBadRequest, resp.StatusCode, "plain HTTP to the TLS port")
				assert.NotContains(t, string(body), "token")
			}
			require.NoError(t, s.stop())
			assert.Equal(t, 1, countTokens(t, dbPath), "only the login over TLS is stored")
		})
	}
}

// TestTLSStartupErrors: TLS and ACME flags that cannot work stop serve at
// once with an error naming them, before the store or the ACME cache is
// made.
func TestTLSStartupErrors(t *testing.T) {
	t.Parallel()
	cert := newTestCert(t, "127.0.0.1")
	other := newTestCert(t, "127.0.0.1")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"cert without key", []string{"--tls-cert", cert.CertFile}, "--tls-cert and --tls-key go together"},
		{"key without cert", []string{"--tls-key", cert.KeyFile}, "--tls-cert and --tls-key go together"},
		{"missing cert file", []string{"--tls-cert", cert.CertFile + ".missing", "--tls-key", cert.KeyFile}, "no such file"},
		{"key of another cert", []string{"--tls-cert", cert.CertFile, "--tls-key", other.KeyFile}, "private key does not match"},
		{"key as cert", []string{"--tls-cert", cert.KeyFile, "--tls-key", cert.KeyFile}, "--tls-cert"},
		{"acme and cert", []string{"--acme-domain", "relay.example.com", "--tls-cert", cert.CertFile, "--tls-key", cert.KeyFile}, "not both"},
		{"acme email alone", []string{"--acme-email", "ops@example.com"}, "need --acme-domain"},
		{"acme cache alone", []string{"--acme-cache", "acme"}, "need --acme-domain"},
		{"acme url", []string{"--acme-domain", "https://relay.example.com"}, "want a DNS name"},
		{"acme port", []string{"--acme-domain", "relay.example.com:443"}, "want a DNS name"},
		{"acme wildcard", []string{"--acme-domain", "*.example.com"}, "want a DNS name"},
		{"acme ip", []string{"--acme-domain", "192.0.2.7"}, "want a DNS name"},
		{"acme single label", []string{"--acme-domain", "localhost"}, "want a DNS name"},
		{"acme empty list", []string{"--acme-domain", ","}, "names no domain"},
		{"header timeout zero", []string{"--read-header-timeout", "0s"}, "--read-header-timeout"},
		{"body timeout zero", []string{"--read-body-timeout", "0s"}, "--read-body-timeout"},
		{"max header bytes", []string{"--max-header-bytes", "0"}, "max-header-bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			dbPath := filepath.Join(dir, "relay.db")
			// A timeout, not runCLI: should the flags be taken, serve would
			// run until the context ends.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			args := append([]string{"serve", "--addr", "127.0.0.1:0", "--db", dbPath, "--acme-http-addr", "127.0.0.1:0"}, tc.args...)
			err := run(ctx, args, func(string) string { return "" }, io.Discard, io.Discard)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			assert.NoError(t, ctx.Err(), "run did not fail at once")
			entries, _ := os.ReadDir(dir)
			assert.Empty(t, entries, "nothing is written: no store, no ACME cache")
		})
	}
}

// shortTimeouts sets every connection limit far under the waits below.
var shortTimeouts = []string{"--read-header-timeout", "200ms", "--read-body-timeout", "200ms", "--idle-timeout", "200ms"}

// hostPort is the host:port of a base URL.
func hostPort(t *testing.T, base string) string {
	t.Helper()
	u, err := url.Parse(base)
	require.NoError(t, err)
	return u.Host
}

// assertClosedByServer reads from conn, which the server should close
// without answering within 5 s: far beyond the 200 ms limits above, far
// under the 10 s and 2 min defaults a missing flag would leave.
func assertClosedByServer(t *testing.T, conn net.Conn, what string) {
	t.Helper()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
	n, err := conn.Read(make([]byte, 512))
	assert.Zero(t, n, "%s: the server answered", what)
	assert.False(t, errors.Is(err, os.ErrDeadlineExceeded), "%s: still open after 5 s", what)
	assert.True(t, errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET), "%s: %v", what, err)
}

// TestSlowClients: connections that send their headers too slowly, stay
// idle or stall their body are closed or answered, while long polls that
// wait far longer than every limit complete normally.
func TestSlowClients(t *testing.T) {
	t.Parallel()
	dbPath := filepath.Join(t.TempDir(), "relay.db")
	s := startServe(t, plainClient(t), nil, append([]string{"--addr", "127.0.0.1:0", "--db", dbPath}, shortTimeouts...)...)
	addr := hostPort(t, s.URL)

	t.Run("headers trickled", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer conn.Close()
		stop := make(chan struct{})
		defer close(stop)
		go func() { // a byte every 20 ms: the headers never end
			_, err := io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Slow: ")
			tick := time.NewTicker(20 * time.Millisecond)
			defer tick.Stop()
			for err == nil {
				select {
				case <-stop:
					return
				case <-tick.C:
					_, err = conn.Write([]byte("a"))
				}
			}
		}()
		assertClosedByServer(t, conn, "trickled headers")
	})

	t.Run("idle keep-alive", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer conn.Close()
		_, err = io.WriteString(conn, "GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
		require.NoError(t, err)
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		require.Equal(t, http.StatusOK, resp.StatusCode)
		assert.False(t, resp.Close, "a keep-alive connection")
		assertClosedByServer(t, conn, "idle connection")
	})

	// A stalled body is a 408 wherever a body is read: an API call, and a
	// gateway request (which stores nothing).
	for _, path := range []string{"/api/v1/client/login", "/via/slow-net/upload"} {
		t.Run("body stalled "+path, func(t *testing.T) {
			conn, err := net.Dial("tcp", addr)
			require.NoError(t, err)
			defer conn.Close()
			_, err = io.WriteString(conn, "POST "+path+" HTTP/1.1\r\nHost: relay\r\n"+
				"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"net\": \"slow")
			require.NoError(t, err)
			require.NoError(t, conn.SetReadDeadline(time.Now().Add(5*time.Second)))
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			require.NoError(t, err, "no answer within 5 s")
			rep, err := readReply(resp)
			require.NoError(t, err)
			assert.Equal(t, http.StatusRequestTimeout, rep.Status, string(rep.Body))
			assert.Equal(t, "body_timeout", rep.errorCode())
		})
	}
	assert.Zero(t, countRows(t, dbPath, "requests"), "a stalled gateway request stores nothing")

	t.Run("long polls outlive the limits", func(t *testing.T) {
		client := plainClient(t)
		assertLongPollsComplete(t, client, s.URL)
	})

	require.NoError(t, s.stop())
	assert.Equal(t, 1, countTokens(t, dbPath), "only the long polls' login: the stalled one wrote nothing")
}

// assertLongPollsComplete runs long polls of 1 s, five times the limits of
// shortTimeouts, by GET and by POST with a body, and checks they end with
// their normal "nothing yet" replies.
func assertLongPollsComplete(t *testing.T, client *http.Client, base string) {
	t.Helper()
	rep := callWith(t, client, http.MethodGet, base+"/api/v1/client/login?net=slow-net", "", nil)
	require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	tok := rep.str("token")
	for _, tc := range []struct {
		name, method, path, bearer string
		query                      url.Values
		body                       any
		status                     int
		want                       string
	}{
		{"pullreqsmart GET", http.MethodGet, "/api/v1/server/pullreqsmart", "",
			url.Values{"net": {"slow-net"}, "key": {testKey}, "wait": {"1"}}, nil, http.StatusOK, `{"requests":[]}`},
		{"pullreqsmart POST", http.MethodPost, "/api/v1/server/pullreqsmart", testKey,
			nil, map[string]any{"net": "slow-net", "wait": 1}, http.StatusOK, `{"requests":[]}`},
		{"pullsmart POST", http.MethodPost, "/api/v1/client/pullsmart", tok,
			nil, map[string]any{"wait": 1}, http.StatusNoContent, ``},
	} {
		u := base + tc.path
		if tc.query != nil {
			u += "?" + tc.query.Encode()
		}
		start := time.Now()
		rep := callWith(t, client, tc.method, u, tc.bearer, tc.body)
		assert.Equal(t, tc.status, rep.Status, "%s: %s", tc.name, rep.Body)
		if tc.want != "" {
			assert.JSONEq(t, tc.want, string(rep.Body), tc.name)
		} else {
			assert.Empty(t, rep.Body, tc.name)
		}
		assert.GreaterOrEqual(t, time.Since(start), time.Second, "%s ended before its wait", tc.name)
	}
}

// TestSlowClientsTLS: over TLS, a client that never starts its handshake is
// closed after the header timeout, and long polls over HTTP/2 outlive the
// limits too.
func TestSlowClientsTLS(t *testing.T) {
	t.Parallel()
	cert := newTestCert(t, "127.0.0.1")
	client := tlsClient(t, cert.Pool, "")
	s := startServe(t, client, nil, append([]string{"--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "relay.db"),
		"--tls-cert", cert.CertFile, "--tls-key", cert.KeyFile}, shortTimeouts...)...)

	conn, err := net.Dial("tcp", hostPort(t, s.URL))
	require.NoError(t, err)
	defer conn.Close()
	assertClosedByServer(t, conn, "a silent TLS client")

	resp, err := client.Get(s.URL + "/healthz")
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, 2, resp.ProtoMajor)
	assertLongPollsComplete(t, client, s.URL)
}

// TestHeaderLimit: a request header over --max-header-bytes gets 431;
// the default of 64 KiB holds against a 100 KiB header (net/http's own
// default would take 1 MiB).
func TestHeaderLimit(t *testing.T) {
	t.Parallel()
	send := func(t *testing.T, addr string, pad int) int {
		t.Helper()
		conn, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		defer conn.Close()
		req := fmt.Sprintf("GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Pad: %s\r\nConnection: close\r\n\r\n", strings.Repeat("p", pad))
		go func() { _, _ = io.WriteString(conn, req) }() // the server may answer before it has read it all
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(10*time.Second)))
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	t.Run("default", func(t *testing.T) {
		s := startServe(t, plainClient(t), nil, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "relay.db"))
		addr := hostPort(t, s.URL)
		assert.Equal(t, http.StatusOK, send(t, addr, 32<<10))
		assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, send(t, addr, 100<<10))
	})
	t.Run("flag", func(t *testing.T) {
		s := startServe(t, plainClient(t), nil, "--addr", "127.0.0.1:0", "--db", filepath.Join(t.TempDir(), "relay.db"),
			"--max-header-bytes", "8KiB")
		addr := hostPort(t, s.URL)
		assert.Equal(t, http.StatusOK, send(t, addr, 4<<10))
		// net/http allows 4 KiB over the limit for its read buffer.
		assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, send(t, addr, 16<<10))
	})
}

// TestServerLimitsNoWholeRequestTimeouts: the servers serve builds carry the
// limits from the flags, and never a ReadTimeout or WriteTimeout, which
// would cut long polls.
func TestServerLimitsNoWholeRequestTimeouts(t *testing.T) {
	t.Parallel()
	c := defaultListenConfig()
	assert.Equal(t, 10*time.Second, c.ReadHeaderTimeout)
	assert.Equal(t, 30*time.Second, c.ReadBodyTimeout)
	assert.Equal(t, 2*time.Minute, c.IdleTimeout)
	assert.Equal(t, int64(64<<10), c.MaxHeaderBytes)
	f, err := newFrontend(discardLogger(), c, filepath.Join(t.TempDir(), "relay.db"))
	require.NoError(t, err)
	hs := f.httpServer(http.NotFoundHandler())
	assert.Equal(t, c.ReadHeaderTimeout, hs.ReadHeaderTimeout)
	assert.Equal(t, c.IdleTimeout, hs.IdleTimeout)
	assert.Equal(t, 64<<10, hs.MaxHeaderBytes)
	assert.Zero(t, hs.ReadTimeout)
	assert.Zero(t, hs.WriteTimeout)
}
