// Tests of the relay as a process: SIGTERM with open long polls, the serve
// command's flags and environment, and stopping.

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestSigtermAnswersLongPolls sends SIGTERM while a SimServer and a SimClient
// long-poll: both get their normal "nothing yet" reply at once, the relay
// exits 0, and the store was closed cleanly with everything in it.
func TestSigtermAnswersLongPolls(t *testing.T) {
	t.Parallel()
	dbPath := testDB(t, "relay.db")
	p := startRelayProcess(t, dbPath)
	rel := &testRelay{t: t, URL: p.URL}
	tok, _ := rel.login("sig-clients")
	rid := rel.push(tok, map[string]any{"simEndpoint": "/slow"})
	// The SimServer serves another net, empty: its poll has nothing to get.
	const serverNet = "sig-server"
	rel.pullReqs(serverNet, testKey, nil)

	serverPoll := startLongPoll(t, p.URL+"/api/v1/server/pullreqsmart", testKey, map[string]any{"net": serverNet, "wait": 50})
	clientPoll := startLongPoll(t, p.URL+"/api/v1/client/pullsmart", tok, map[string]any{"rid": rid, "wait": 50})
	require.NoError(t, p.cmd.Process.Signal(syscall.SIGTERM))

	// 30 s: well under the polls' 50 s wait, so a poll that only ends at its
	// timeout fails here.
	rep := awaitPoll(t, "pullreqsmart", serverPoll, 30*time.Second)
	assert.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	assert.JSONEq(t, `{"requests":[]}`, string(rep.Body))
	rep = awaitPoll(t, "pullsmart", clientPoll, 30*time.Second)
	assert.Equal(t, http.StatusAccepted, rep.Status, string(rep.Body))
	assert.JSONEq(t, fmt.Sprintf(`{"rid":%q,"status":"queued"}`, rid), string(rep.Body))

	select {
	case err := <-p.exited:
		require.NoError(t, err, "the relay did not exit 0 on SIGTERM\n%s", p.stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("the relay did not exit within 30s of SIGTERM\n%s", p.stderr)
	}
	assertWALClosed(t, dbPath, true)
	assertStoreHolds(t, dbPath, tok, rid, statusQueued, serverNet, testKey)
}

// TestServeDefaultsAndEnv checks serve's flag defaults and that every flag
// reads its C2CVIA_* variable, a command-line flag winning over it.
func TestServeDefaultsAndEnv(t *testing.T) {
	t.Parallel()
	t.Run("defaults", func(t *testing.T) {
		fs := newServeCmd(io.Discard, io.Discard).Flags()
		for _, tc := range []struct {
			flag string
			want string
		}{
			{"addr", ":8080"},
			{"db", "c2cvia.db"},
			{"req-ttl", (5 * time.Minute).String()},
			{"res-ttl", (10 * time.Minute).String()},
			{"max-wait", (60 * time.Second).String()},
			{"max-attempts", "5"},
			{"max-body", "1048576"},
			{"cors-origin", "*"},
			{"lease", (30 * time.Second).String()},
			{"msg-ttl", time.Hour.String()},
			{"max-msg", "65536"},
		} {
			f := fs.Lookup(tc.flag)
			if assert.NotNil(t, f, "no --%s flag", tc.flag) {
				assert.Equal(t, tc.want, f.DefValue, "--%s default", tc.flag)
				assert.Equal(t, tc.want, f.Value.String(), "--%s value before parsing", tc.flag)
			}
		}
	})

	t.Run("every flag has a variable", func(t *testing.T) {
		// A value of each flag type that differs from every default.
		sample := map[string]struct{ in, out string }{
			"duration": {"7s", "7s"},
			"int":      {"7", "7"},
			"bytes":    {"7KiB", "7168"},
			"string":   {"seven", "seven"},
			"bool":     {"false", "false"},
			"float64":  {"7.5", "7.5"},
			"cidrs":    {"10.1.2.3/8, 127.0.0.1", "10.0.0.0/8,127.0.0.1/32"},
		}
		sample["stringSlice"] = struct{ in, out string }{"a.example,b.example", "[a.example,b.example]"}
		n := 0
		newServeCmd(io.Discard, io.Discard).Flags().VisitAll(func(f *pflag.Flag) {
			n++
			env := envName(f.Name)
			assert.True(t, strings.HasPrefix(env, "C2CVIA_"), env)
			assert.Equal(t, strings.ToUpper(env), env)
			assert.Contains(t, f.Usage, "$"+env, "--%s usage does not name its variable", f.Name)
			s, ok := sample[f.Value.Type()]
			if !assert.True(t, ok, "--%s: no sample for type %s", f.Name, f.Value.Type()) {
				return
			}
			// A fresh command, with only this flag's variable set.
			fs := newServeCmd(io.Discard, io.Discard).Flags()
			require.Empty(t, flagsFromEnv(fs, func(k string) string {
				if k == env {
					return s.in
				}
				return ""
			}))
			assert.Equal(t, s.out, fs.Lookup(f.Name).Value.String(), "%s=%s did not set --%s", env, s.in, f.Name)
		})
		assert.GreaterOrEqual(t, n, 9)
	})

	t.Run("env takes effect", func(t *testing.T) {
		dbPath := filepath.Join(t.TempDir(), "from-env.db")
		base, stop := startRun(t, map[string]string{
			"C2CVIA_ADDR":        "127.0.0.1:0",
			"C2CVIA_DB":          dbPath,
			"C2CVIA_MAX_BODY":    "100",
			"C2CVIA_CORS_ORIGIN": "https://app.example",
		}, "serve")
		rel := &testRelay{t: t, URL: base}
		assert.True(t, strings.HasPrefix(base, "http://127.0.0.1:"), "C2CVIA_ADDR not used: %s", base)
		_, err := os.Stat(dbPath)
		assert.NoError(t, err, "C2CVIA_DB not used")

		rep := rel.get("/healthz", nil)
		assert.Equal(t, http.StatusOK, rep.Status)
		assert.JSONEq(t, `{"status":"ok"}`, string(rep.Body))

		rep = rel.postJSON("/api/v1/client/login", "", map[string]any{"net": "env-net"})
		assert.Equal(t, http.StatusOK, rep.Status, "a small body: %s", rep.Body)
		rep = rel.postJSON("/api/v1/client/login", "", map[string]any{"net": "env-net", "pad": strings.Repeat("x", 100)})
		assert.Equal(t, http.StatusRequestEntityTooLarge, rep.Status, "C2CVIA_MAX_BODY=100 not used: %s", rep.Body)

		for origin, want := range map[string]string{"https://app.example": "https://app.example", "https://other.example": ""} {
			req, err := http.NewRequest(http.MethodGet, base+"/healthz", nil)
			require.NoError(t, err)
			req.Header.Set("Origin", origin)
			assert.Equal(t, want, rel.do(req).Header.Get("Access-Control-Allow-Origin"), "C2CVIA_CORS_ORIGIN, Origin %s", origin)
		}
		assert.NoError(t, stop())
	})

	t.Run("flag beats env", func(t *testing.T) {
		dir := t.TempDir()
		envDB, flagDB := filepath.Join(dir, "env.db"), filepath.Join(dir, "flag.db")
		base, stop := startRun(t, map[string]string{
			"C2CVIA_ADDR":     "127.0.0.1:0",
			"C2CVIA_DB":       envDB,
			"C2CVIA_MAX_BODY": "100",
		}, "serve", "--db", flagDB, "--max-body", "1MiB")
		rel := &testRelay{t: t, URL: base}
		_, err := os.Stat(flagDB)
		assert.NoError(t, err, "--db not used")
		_, err = os.Stat(envDB)
		assert.True(t, os.IsNotExist(err), "C2CVIA_DB used despite --db")
		rep := rel.postJSON("/api/v1/client/login", "", map[string]any{"net": "env-net", "pad": strings.Repeat("x", 200)})
		assert.Equal(t, http.StatusOK, rep.Status, "C2CVIA_MAX_BODY used despite --max-body: %s", rep.Body)
		assert.NoError(t, stop())
	})

	t.Run("bad env value", func(t *testing.T) {
		for _, tc := range []struct{ name, value string }{
			{"C2CVIA_REQ_TTL", "banana"},
			{"C2CVIA_MAX_ATTEMPTS", "many"},
			{"C2CVIA_MAX_BODY", "-1"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				dbPath := filepath.Join(t.TempDir(), "bad.db")
				env := map[string]string{"C2CVIA_ADDR": "127.0.0.1:0", "C2CVIA_DB": dbPath, tc.name: tc.value}
				// A timeout, not runCLI: should the value be taken, serve
				// would run until the context ends.
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				err := run(ctx, []string{"serve"}, func(k string) string { return env[k] }, io.Discard, io.Discard)
				require.Error(t, err)
				assert.Contains(t, err.Error(), tc.name)
				assert.NoError(t, ctx.Err(), "run did not fail at once")
				_, statErr := os.Stat(dbPath)
				assert.True(t, os.IsNotExist(statErr), "a store was created despite the bad %s", tc.name)
			})
		}
	})
}

// TestServeStopsOnCancel stops an in-process relay (as SIGTERM does, through
// the context): run returns nil, an open long poll is answered, and the store
// is closed with its WAL checkpointed away.
func TestServeStopsOnCancel(t *testing.T) {
	t.Parallel()
	dbPath := testDB(t, "relay.db")
	base, stop := startRun(t, map[string]string{"C2CVIA_ADDR": "127.0.0.1:0"}, "serve", "--db", dbPath)
	rel := &testRelay{t: t, URL: base}
	tok, _ := rel.login("stop-net")
	rid := rel.push(tok, map[string]any{"simEndpoint": "/pending"})
	if !isPostgresURL(dbPath) {
		_, err := os.Stat(dbPath + "-wal")
		require.NoError(t, err, "a running store in WAL mode has a -wal file")
	}

	poll := startLongPoll(t, base+"/api/v1/client/pullsmart", tok, map[string]any{"rid": rid, "wait": 50})
	require.NoError(t, stop())
	// 10 s: at most what is left for the reply to travel once run has
	// returned; a poll left to its 50 s wait fails here.
	rep := awaitPoll(t, "pullsmart", poll, 10*time.Second)
	assert.Equal(t, http.StatusAccepted, rep.Status, string(rep.Body))
	assert.JSONEq(t, fmt.Sprintf(`{"rid":%q,"status":"queued"}`, rid), string(rep.Body))

	assertWALClosed(t, dbPath, false)
	_, err := http.Get(base + "/healthz")
	assert.Error(t, err, "still listening after stop")
	assertStoreHolds(t, dbPath, tok, rid, statusQueued, "", "")
}
