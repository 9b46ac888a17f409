// HTTPS from an ACME CA: the autocert manager serve builds, the HTTP port
// that answers challenges and redirects, and serve in ACME mode.

package main

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// unreachableCA is an ACME directory nobody answers: tests never reach a CA.
const unreachableCA = "http://127.0.0.1:1/directory"

// defaultListenConfig is listenConfig as serve's flags default it.
func defaultListenConfig() listenConfig {
	var c listenConfig
	addListenFlags(pflag.NewFlagSet("serve", pflag.ContinueOnError), &c)
	return c
}

// TestACMEManager: the autocert manager serve builds answers only for its
// domains, asks the CA named by --acme-directory, and keeps its keys in a
// 0700 folder beside the store.
func TestACMEManager(t *testing.T) {
	t.Parallel()
	dbPath := filepath.Join(t.TempDir(), "relay.db")
	c := defaultListenConfig()
	c.ACMEDomains = []string{"Relay.Example.com", " api.example.com."}
	c.ACMEDirectory = unreachableCA
	f, err := newFrontend(discardLogger(), c, dbPath)
	require.NoError(t, err)
	require.NotNil(t, f.acme)
	assert.Equal(t, []string{"relay.example.com", "api.example.com"}, f.domains)

	ctx := context.Background()
	for _, d := range []string{"relay.example.com", "api.example.com"} {
		assert.NoError(t, f.acme.HostPolicy(ctx, d), d)
	}
	for _, d := range []string{"other.example.com", "example.com", "relay.example.com.evil.example"} {
		assert.Error(t, f.acme.HostPolicy(ctx, d), d)
	}
	// The TLS config the server uses refuses another name in the handshake,
	// before any CA is asked.
	hello := func(name string) *tls.ClientHelloInfo {
		return &tls.ClientHelloInfo{
			ServerName:        name,
			SupportedCurves:   []tls.CurveID{tls.CurveP256},
			SignatureSchemes:  []tls.SignatureScheme{tls.ECDSAWithP256AndSHA256},
			CipherSuites:      []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
			SupportedVersions: []uint16{tls.VersionTLS13, tls.VersionTLS12},
		}
	}
	_, err = f.tls.GetCertificate(hello("other.example.com"))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "not configured")
	// One of its own names goes on to the CA: here one that does not answer.
	_, err = f.tls.GetCertificate(hello("relay.example.com"))
	require.Error(t, err)
	assert.NotContains(t, err.Error(), "not configured")
	assert.Contains(t, err.Error(), "127.0.0.1:1", "the CA of --acme-directory is asked")
	assert.Equal(t, unreachableCA, f.acme.Client.DirectoryURL)

	fi, err := os.Stat(filepath.Join(filepath.Dir(dbPath), "acme"))
	require.NoError(t, err, "the cache folder beside the store")
	assert.True(t, fi.IsDir())
	assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm())

	t.Run("--acme-cache", func(t *testing.T) {
		c := c
		c.ACMECache = filepath.Join(t.TempDir(), "state", "certs")
		_, err := newFrontend(discardLogger(), c, dbPath)
		require.NoError(t, err)
		fi, err := os.Stat(c.ACMECache)
		require.NoError(t, err)
		assert.Equal(t, os.FileMode(0o700), fi.Mode().Perm())
	})
	t.Run("open cache refused", func(t *testing.T) {
		c := c
		c.ACMECache = t.TempDir()
		require.NoError(t, os.Chmod(c.ACMECache, 0o755))
		_, err := newFrontend(discardLogger(), c, dbPath)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "chmod 700")
	})
}

// TestACMERedirect: the HTTP port answers ACME challenges itself and
// redirects everything else, any method, to the same path over HTTPS.
func TestACMERedirect(t *testing.T) {
	t.Parallel()
	domains := []string{"relay.example.com", "api.example.com"}
	for _, tc := range []struct {
		name, method, host, target, port, want string
	}{
		{"get", http.MethodGet, "relay.example.com", "/api/v1/client/login?net=demo", "443",
			"https://relay.example.com/api/v1/client/login?net=demo"},
		{"post keeps its method", http.MethodPost, "api.example.com:80", "/api/v1/client/pushreq", "443",
			"https://api.example.com/api/v1/client/pushreq"},
		{"another https port", http.MethodGet, "relay.example.com", "/healthz", "8443",
			"https://relay.example.com:8443/healthz"},
		{"a foreign Host goes to the first domain", http.MethodGet, "evil.example", "/x?y=1", "443",
			"https://relay.example.com/x?y=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(tc.method, "http://"+tc.host+tc.target, strings.NewReader("{}"))
			w := httptest.NewRecorder()
			redirectToHTTPS(domains, tc.port).ServeHTTP(w, req)
			assert.Equal(t, http.StatusPermanentRedirect, w.Code)
			assert.Equal(t, tc.want, w.Header().Get("Location"))
		})
	}

	t.Run("challenges are not redirected", func(t *testing.T) {
		c := defaultListenConfig()
		c.ACMEDomains, c.ACMEDirectory = domains, unreachableCA
		f, err := newFrontend(discardLogger(), c, filepath.Join(t.TempDir(), "relay.db"))
		require.NoError(t, err)
		h := f.acme.HTTPHandler(redirectToHTTPS(f.domains, "443"))
		for host, want := range map[string]int{"relay.example.com": http.StatusNotFound, "evil.example": http.StatusForbidden} {
			w := httptest.NewRecorder()
			h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "http://"+host+"/.well-known/acme-challenge/unknown-token", nil))
			assert.Equal(t, want, w.Code, host)
			assert.Empty(t, w.Header().Get("Location"), host)
		}
	})
}

// TestACMEServe runs serve in ACME mode with a certificate already in its
// cache, so no CA is asked: HTTPS works for the domain, another name is
// refused in the handshake, and the HTTP port redirects to HTTPS.
func TestACMEServe(t *testing.T) {
	t.Parallel()
	const domain = "relay.test"
	dir := t.TempDir()
	cache := filepath.Join(dir, "acme")
	require.NoError(t, os.Mkdir(cache, 0o700))
	cert := newTestCert(t, domain)
	// autocert's cache entry for an ECDSA certificate: the key, then the chain.
	require.NoError(t, os.WriteFile(filepath.Join(cache, domain), append(cert.keyPEM, cert.certPEM...), 0o600))

	dbPath := filepath.Join(dir, "relay.db")
	client := tlsClient(t, cert.Pool, domain)
	s := startServe(t, client, map[string]string{"C2CVIA_ACME_DOMAIN": domain}, "--addr", "127.0.0.1:0", "--db", dbPath,
		"--acme-cache", cache, "--acme-http-addr", "127.0.0.1:0", "--acme-directory", unreachableCA)
	require.True(t, strings.HasPrefix(s.URL, "https://"), s.URL)
	require.NotEmpty(t, s.HTTPURL, "the challenge listener")
	exchangeOver(t, client, s.URL, "acme-net")

	_, err := tlsClient(t, cert.Pool, "other.test").Get(s.URL + "/healthz")
	assert.Error(t, err, "another name is refused in the handshake")

	noFollow := plainClient(t)
	noFollow.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	_, port, _ := net.SplitHostPort(strings.TrimPrefix(s.URL, "https://"))
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		req, err := http.NewRequest(method, s.HTTPURL+"/api/v1/client/login?net=acme-net", nil)
		require.NoError(t, err)
		req.Host = domain
		resp, err := noFollow.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusPermanentRedirect, resp.StatusCode, method)
		assert.Equal(t, "https://"+domain+":"+port+"/api/v1/client/login?net=acme-net", resp.Header.Get("Location"), method)
	}
	require.NoError(t, s.stop())
	assert.Equal(t, 1, countTokens(t, dbPath), "the redirected logins wrote nothing")
}
