// What the relay logs for its operator: the access log, claimed nets,
// SimServers coming and going, and TLS handshake noise at debug.

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// logLines decodes the relay's JSON log lines.
func logLines(t *testing.T, log *syncBuffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(log.String()))
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), sc.Text())
		out = append(out, m)
	}
	return out
}

// linesWith are the log lines whose msg is msg.
func linesWith(t *testing.T, log *syncBuffer, msg string) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, m := range logLines(t, log) {
		if m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// TestAccessLog: every call logs one line at info with its method, route,
// status, time, bytes, net and client address, and never a token, a key or
// a result token from a capability URL; --access-log=false turns it off.
// A claimed net and a SimServer that comes and goes log a line each.
func TestAccessLog(t *testing.T) {
	t.Parallel()
	var log syncBuffer
	r := newTestRelayLog(t, &log, func(c *config) { c.LogFormat = "json" })

	tok, _ := r.login("logged")
	rid := r.push(tok, map[string]any{"simEndpoint": "/hello"})
	r.pullReqs("logged", testKey, nil)
	require.Equal(t, http.StatusOK, r.answer("logged", testKey, rid, map[string]any{"simBody": "hi"}).Status)
	rep := r.get("/api/v1/client/pullres", url.Values{"token": {tok}, "rid": {rid}})
	require.Equal(t, http.StatusOK, rep.Status)
	bad := r.postJSON("/api/v1/client/pushreq", tok, map[string]any{"sim_req": "not an object"})
	require.Equal(t, http.StatusBadRequest, bad.Status)

	req, err := http.NewRequest(http.MethodGet, r.URL+"/via/logged/page?x=1", nil)
	require.NoError(t, err)
	req.Header.Set("Prefer", "respond-async")
	via := r.do(req)
	require.Equal(t, http.StatusAccepted, via.Status, string(via.Body))
	location := via.Header.Get("Location")
	require.Contains(t, location, "token=")
	q := mustQuery(t, location)
	q.Set("wait", "0")
	rep = r.get(strings.SplitN(location, "?", 2)[0], q)
	require.Contains(t, []int{http.StatusOK, http.StatusAccepted}, rep.Status, string(rep.Body))

	want := []struct {
		method, route string
		status        int
	}{
		{"GET", "GET /api/v1/client/login", 200},
		{"POST", "POST /api/v1/client/pushreq", 201},
		{"GET", "GET /api/v1/server/pullreqsmart", 200},
		{"POST", "POST /api/v1/server/pushres", 200},
		{"GET", "GET /api/v1/client/pullres", 200},
		{"POST", "POST /api/v1/client/pushreq", 400},
		{"GET", "/via/{net}/{path...}", 202},
	}
	var calls []map[string]any
	waitFor(t, 10*time.Second, func() bool { calls = linesWith(t, &log, "call"); return len(calls) >= len(want)+1 }, "a line per call")
	for i, w := range want {
		c := calls[i]
		assert.Equal(t, "INFO", c["level"], "%v", c)
		assert.Equal(t, w.method, c["method"], "%v", c)
		assert.Equal(t, w.route, c["route"], "%v", c)
		assert.Equal(t, float64(w.status), c["status"], "%v", c)
		assert.Equal(t, "logged", c["net"], "%v", c)
		assert.Equal(t, "127.0.0.1", c["client"], "%v", c)
		assert.Greater(t, c["bytes"], float64(0), "%v", c)
		assert.GreaterOrEqual(t, c["ms"], float64(0), "%v", c)
	}
	assert.Equal(t, "", calls[len(want)]["net"], "a result token is in no net")

	text := log.String()
	for _, secret := range []string{tok, testKey, mustQuery(t, location).Get("token")} {
		assert.NotContains(t, text, secret, "a secret in the log")
	}
	claimed := linesWith(t, &log, "net claimed")
	if assert.Len(t, claimed, 1) {
		assert.Equal(t, "logged", claimed[0]["net"])
	}
	polling := linesWith(t, &log, "SimServer polling")
	if assert.Len(t, polling, 1) {
		assert.Equal(t, "logged", polling[0]["net"])
	}

	// No poll for a minute: the SimServer has gone. Polling again brings it back.
	r.advance(serverGoneAfter - time.Millisecond)
	r.srv.presence.sweep()
	assert.Empty(t, linesWith(t, &log, "SimServer gone"))
	r.advance(time.Millisecond)
	r.srv.presence.sweep()
	if gone := linesWith(t, &log, "SimServer gone"); assert.Len(t, gone, 1) {
		assert.Equal(t, "logged", gone[0]["net"])
	}
	r.pullReqs("logged", testKey, nil)
	assert.Len(t, linesWith(t, &log, "SimServer polling"), 2)

	t.Run("off", func(t *testing.T) {
		var log syncBuffer
		r := newTestRelayLog(t, &log, func(c *config) { c.LogFormat, c.AccessLog = "json", false })
		r.pullReqs("quiet", testKey, nil)
		r.login("quiet")
		assert.Empty(t, linesWith(t, &log, "call"))
		assert.Len(t, linesWith(t, &log, "net claimed"), 1, "the operator lines stay")
	})
}

func mustQuery(t *testing.T, u string) url.Values {
	t.Helper()
	parsed, err := url.Parse(u)
	require.NoError(t, err)
	return parsed.Query()
}

// TestTLSHandshakeErrorsAtDebug: a scanner's broken TLS handshake logs at
// debug, not warn.
func TestTLSHandshakeErrorsAtDebug(t *testing.T) {
	t.Parallel()
	cert := newTestCert(t, "127.0.0.1")
	var log syncBuffer
	newTestRelayLog(t, &log, func(c *config) {
		c.LogFormat, c.LogLevel = "json", "debug"
		c.Listen.TLSCert, c.Listen.TLSKey = cert.CertFile, cert.KeyFile
		c.DB = filepath.Join(t.TempDir(), "tls.db")
	})
	addr := ""
	for _, m := range logLines(t, &log) {
		if m["msg"] == "listening" {
			addr, _ = m["addr"].(string)
		}
	}
	require.NotEmpty(t, addr)
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	_, err = conn.Write([]byte("\x16\x03\x01\x00\x05hello, not TLS"))
	require.NoError(t, err)
	conn.Close()
	var lines []map[string]any
	waitFor(t, 10*time.Second, func() bool {
		lines = nil
		for _, m := range logLines(t, &log) {
			if msg, _ := m["msg"].(string); strings.HasPrefix(msg, "http: TLS handshake error") {
				lines = append(lines, m)
			}
		}
		return len(lines) > 0
	}, "the handshake error in the log")
	assert.Equal(t, "DEBUG", lines[0]["level"])

	// Every other complaint of the HTTP server stays a warning.
	var other syncBuffer
	httpErrorLog(newLogger(&other, "json", "debug")).Print("http: Accept error: too many open files")
	assert.Contains(t, other.String(), `"level":"WARN"`)
}

// TestRefusedCallsLoggedWithinQuota: calls answered with an error are
// logged at most --access-log-errors lines a second per client address
// (a flood of refused calls wrote 58 MB of access log in 25 minutes); the
// rest are counted, and summarized once a minute per address. Successful
// calls keep their line each, and other addresses their own quota.
func TestRefusedCallsLoggedWithinQuota(t *testing.T) {
	t.Parallel()
	var log syncBuffer
	r := newTestRelayLog(t, &log, func(c *config) {
		c.LogFormat, c.AccessLogErrors = "json", 3
		c.TrustProxy = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	calls := func(client string) (lines int) {
		for _, m := range linesWith(t, &log, "call") {
			if m["client"] == client {
				lines++
			}
		}
		return lines
	}
	refused := func(from string, n int) {
		for range n {
			require.Equal(t, "missing_token", r.getFrom(from, "/api/v1/client/check", nil).errorCode())
		}
	}
	refused("192.0.2.1", 100)
	refused("198.51.100.7", 2)
	for range 20 {
		require.Equal(t, http.StatusOK, r.getFrom("192.0.2.1", "/api/v1/client/login", url.Values{"net": {"alpha"}}).Status)
	}
	size := len(log.String())
	assert.Equal(t, 3+20, calls("192.0.2.1"), "3 refused calls a second, and every login")
	assert.Equal(t, 2, calls("198.51.100.7"))
	assert.Less(t, size, 40*300, "the log grew by %d bytes", size)

	r.advance(time.Second) // a new second, a new quota
	refused("192.0.2.1", 5)
	assert.Equal(t, 3+20+3, calls("192.0.2.1"))
	assert.Empty(t, linesWith(t, &log, "access log lines suppressed"))

	r.srv.sweep() // the janitor's round: under a minute since the last summary
	assert.Empty(t, linesWith(t, &log, "access log lines suppressed"))
	r.advance(time.Minute)
	r.srv.sweep()
	summary := linesWith(t, &log, "access log lines suppressed")
	require.Len(t, summary, 1)
	assert.Equal(t, "192.0.2.1", summary[0]["client"])
	assert.Equal(t, float64(97+2), summary[0]["lines"])
	r.advance(time.Minute)
	r.srv.sweep()
	assert.Len(t, linesWith(t, &log, "access log lines suppressed"), 1, "nothing more suppressed: no line")

	// Relay-wide, 20 times the quota a second: a block of addresses
	// refused at full speed adds no more.
	r.advance(time.Second)
	before := len(linesWith(t, &log, "call"))
	for i := range 30 {
		refused(fmt.Sprintf("203.0.113.%d", i), 3)
	}
	assert.Equal(t, 60, len(linesWith(t, &log, "call"))-before)
}

// TestAccessLogQuotaOff: --access-log-errors 0 logs every refused call.
func TestAccessLogQuotaOff(t *testing.T) {
	t.Parallel()
	var log syncBuffer
	r := newTestRelayLog(t, &log, func(c *config) { c.LogFormat, c.AccessLogErrors = "json", 0 })
	for range 50 {
		r.get("/api/v1/client/check", nil)
	}
	assert.Len(t, linesWith(t, &log, "call"), 50)
}
