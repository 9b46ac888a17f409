// One configuration: every bad setting stops its command at once, naming
// the flag (and its variable when the value came from one) and what it
// accepts, before anything is written; destructive flags are never taken
// from the environment.

package main

import (
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// serveError runs serve with args and env and returns its error, requiring
// that it failed at once and made no store.
func serveError(t *testing.T, env map[string]string, args ...string) string {
	t.Helper()
	db := filepath.Join(t.TempDir(), "never.db")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args = append([]string{"serve", "--addr", "127.0.0.1:0", "--db", db}, args...)
	err := run(ctx, args, func(k string) string { return env[k] }, io.Discard, io.Discard)
	require.Error(t, err, "serve %v started", args)
	require.NoError(t, ctx.Err(), "serve did not fail at once")
	_, statErr := os.Stat(db)
	assert.True(t, os.IsNotExist(statErr), "a store was made despite %v", args)
	return err.Error()
}

// TestConfigRefusesBadSettings: the settings that used to be taken
// silently, and their neighbours of each kind.
func TestConfigRefusesBadSettings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		args []string
		want []string // each must be in the error
	}{
		{"zero token TTL", []string{"--token-ttl", "0"}, []string{`--token-ttl "0": must be more than 0`}},
		{"negative request TTL", []string{"--req-ttl", "-1s"}, []string{`--req-ttl "-1s": must be more than 0`}},
		{"origin without scheme", []string{"--cors-origin", "example.com"}, []string{"--cors-origin", `"example.com" is not an origin`, "https://"}},
		{"origin with a path", []string{"--cors-origin", "https://app.example/x"}, []string{"--cors-origin", "not an origin"}},
		{"origin list with a bad one", []string{"--cors-origin", "https://a.example, b.example"}, []string{`"b.example" is not an origin`}},
		{"origin list of nothing", []string{"--cors-origin", " , "}, []string{"--cors-origin", "names no origin"}},
		{"star in a list", []string{"--cors-origin", "https://a.example,*"}, []string{"--cors-origin"}},
		{"lease over max lease", []string{"--lease", "1m", "--max-lease", "30s"},
			[]string{`--lease "1m" and --max-lease "30s": --max-lease must be at least --lease`}},
		{"unknown log level", []string{"--log-level", "verbose"}, []string{`--log-level "verbose": must be one of debug, info, warn, error`}},
		{"unknown log format", []string{"--log-format", "xml"}, []string{"--log-format", "text, json"}},
		{"unknown sync", []string{"--sync", "off"}, []string{"--sync", "normal, full"}},
		{"ACME on PostgreSQL without a cache", []string{"--db", "postgres://db.internal/c2cvia", "--acme-domain", "relay.example.com"},
			[]string{"--acme-domain on a PostgreSQL store needs --acme-cache"}},
		{"no attempts", []string{"--max-attempts", "0"}, []string{`--max-attempts "0": must be a whole number of deliveries, 1 or more`}},
		{"negative queue", []string{"--max-queue", "-1"}, []string{`--max-queue "-1": must be a whole number of requests, or 0 for no limit`}},
		{"negative polls", []string{"--max-polls-per-token", "-1"}, []string{"--max-polls-per-token"}},
		{"negative peers", []string{"--max-peers", "-1"}, []string{"--max-peers"}},
		{"negative subscriptions", []string{"--max-subs", "-1"}, []string{`--max-subs "-1": must be a whole number of subscriptions, or 0 for no limit`}},
		{"negative connections", []string{"--max-conns", "-1"}, []string{`--max-conns "-1"`, "0 for a cap under the open-file limit"}},
		{"a /48 below one address", []string{"--max-conns-per-ip", "256", "--max-conns-per-48", "128"},
			[]string{`--max-conns-per-ip "256" and --max-conns-per-48 "128"`, "at least --max-conns-per-ip"}},
		{"bodies below one body", []string{"--max-inflight-body", "1MiB"},
			[]string{`--max-inflight-body "1MiB": must hold at least the largest body, 1463640 bytes`}},
		{"negative rate", []string{"--rate-ip", "-1"}, []string{"--rate-ip", "or 0 for no limit"}},
		{"rate without burst", []string{"--rate-token", "5", "--rate-token-burst", "0"}, []string{"--rate-token-burst"}},
		{"via host without dot", []string{"--via-host", "via.example.com"}, []string{"--via-host", ".via.example.com"}},
		{"via host with port", []string{"--via-host", ".via.example.com:8080"}, []string{"--via-host"}},
		{"address", []string{"--addr", "8080"}, []string{"--addr", ":8080"}},
		{"empty store", []string{"--db", ""}, []string{"--db", "must name a SQLite file or a postgres:// URL"}},
		{"acme directory", []string{"--acme-domain", "relay.example.com", "--acme-directory", "ftp://ca.example"}, []string{"--acme-directory"}},
		{"below the store's millisecond", []string{"--lease", "500us"}, []string{`--lease "500us": must be at least 1ms`}},
		{"janitor back to back", []string{"--janitor-every", "500ms"}, []string{`--janitor-every "500ms": must be at least 1s`}},
		{"duration without unit", []string{"--token-ttl", "5"}, []string{`--token-ttl "5": want a duration such as 30s, 5m or 24h`}},
		{"count that is no number", []string{"--max-queue", "lots"}, []string{`--max-queue "lots": want a whole number`}},
		{"size that is no size", []string{"--max-body", "big"}, []string{`--max-body "big": want a positive size such as 1048576 or 1MiB`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			msg := serveError(t, nil, tc.args...)
			for _, w := range tc.want {
				assert.Contains(t, msg, w)
			}
		})
	}
}

// TestConfigEveryFlagChecked: each duration flag refuses 0 (but
// --claim-ttl, where 0 is never) and a negative value, each count a negative one, naming the flag; a bad value given
// through the flag's variable names the variable too.
func TestConfigEveryFlagChecked(t *testing.T) {
	t.Parallel()
	var durations, counts []string
	newServeCmd(io.Discard, io.Discard).Flags().VisitAll(func(f *pflag.Flag) {
		switch f.Value.Type() {
		case "duration":
			durations = append(durations, f.Name)
		case "int", "float64":
			counts = append(counts, f.Name)
		}
	})
	require.GreaterOrEqual(t, len(durations), 12)
	require.GreaterOrEqual(t, len(counts), 8)
	for _, name := range durations {
		for _, v := range []string{"0s", "-1s"} {
			if name == "claim-ttl" && v == "0s" {
				continue // 0: claims never lapse
			}
			t.Run(name+"="+v, func(t *testing.T) {
				t.Parallel()
				assert.Contains(t, serveError(t, nil, "--"+name, v), "--"+name+" ")
				assert.Contains(t, serveError(t, map[string]string{envName(name): v}), "--"+name+` "`+v+`" (from `+envName(name)+`)`)
			})
		}
	}
	for _, name := range counts {
		t.Run(name+"=-1", func(t *testing.T) {
			t.Parallel()
			assert.Contains(t, serveError(t, nil, "--"+name, "-1"), "--"+name+` "-1"`)
		})
	}
}

// TestConfigListsEveryProblem: several bad settings are refused together,
// one line each.
func TestConfigListsEveryProblem(t *testing.T) {
	t.Parallel()
	msg := serveError(t, nil, "--token-ttl", "0", "--log-level", "loud", "--cors-origin", "example.com")
	assert.True(t, strings.HasPrefix(msg, "bad settings:\n"), msg)
	lines := regexp.MustCompile(`\n  --`).FindAllString(msg, -1)
	assert.Len(t, lines, 3, msg)
}

// TestConfigEnvProblemsWithTheRest: variables the flags cannot take are
// reported together with every other bad setting, each naming its flag
// and variable.
func TestConfigEnvProblemsWithTheRest(t *testing.T) {
	t.Parallel()
	msg := serveError(t, map[string]string{"C2CVIA_TOKEN_TTL": "5", "C2CVIA_MAX_BODY": "0", "C2CVIA_LOG_LEVEL": "verbose"},
		"--cors-origin", "example.com")
	for _, want := range []string{
		`--token-ttl "5" (from C2CVIA_TOKEN_TTL): want a duration such as 30s, 5m or 24h`,
		`--max-body "0" (from C2CVIA_MAX_BODY): want a positive size`,
		`--log-level "verbose" (from C2CVIA_LOG_LEVEL): must be one of debug, info, warn, error`,
		`--cors-origin "example.com": "example.com" is not an origin`,
	} {
		assert.Contains(t, msg, want)
	}
	assert.Equal(t, 1, strings.Count(msg, "--token-ttl"), "a value the flag cannot read is reported once: %s", msg)
}

// TestConfigCommandLineProblemsTogether: a value a flag cannot read, on the
// command line, does not hide the other problems; each is named as typed.
func TestConfigCommandLineProblemsTogether(t *testing.T) {
	t.Parallel()
	msg := serveError(t, map[string]string{"C2CVIA_LOG_LEVEL": "verbose"},
		"--token-ttl", "5", "--lease", "abc", "--max-lease", "0", "--cors-origin", "example.com", "--addr", ":99999")
	for _, want := range []string{
		`--token-ttl "5": want a duration such as 30s, 5m or 24h`,
		`--lease "abc": want a duration`,
		`--max-lease "0": must be more than 0`,
		`--cors-origin "example.com"`,
		`--addr ":99999": must be host:port`,
		`--log-level "verbose" (from C2CVIA_LOG_LEVEL)`,
	} {
		assert.Contains(t, msg, want)
	}
	assert.Equal(t, 6, strings.Count(msg, "\n  --"), msg)
	msg = serveError(t, nil, "--metrics", "maybe")
	assert.Contains(t, msg, "a true/false flag takes its value with =, as in --metrics=false")
	assert.Contains(t, serveError(t, nil, "--metrics=maybe"), `--metrics "maybe": want true or false`)
}

// TestConfigAcceptsNeighbours: settings next to the refused ones start.
func TestConfigAcceptsNeighbours(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{
		{"--via-host", ".localhost"},
		{"--via-host", ".via.example.com"},
		{"--log-level", "INFO"},
		{"--lease", "1ms", "--max-lease", "1ms"},
		{"--janitor-every", "1s"},
		{"--cors-origin", "https://a.example, http://localhost:3000"},
		{"--max-queue", "0", "--max-peers", "0", "--max-polls-per-token", "0", "--rate-ip", "0", "--rate-token", "0"},
	} {
		_, err := parseServeConfig(args)
		assert.NoError(t, err, "%v", args)
	}
}

// TestConfigOtherCommands: purge and inspect check their flags the same way.
func TestConfigOtherCommands(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"purge", "--db", r.DBPath, "--res-ttl", "1h"}, `unknown flag: --res-ttl`}, // the relay's, from the store
		{[]string{"purge", "--db", r.DBPath, "--max-attempts", "9"}, `unknown flag: --max-attempts`},
		{[]string{"purge", "--db", r.DBPath, "--net", "no spaces"}, `--net "no spaces": must be a net name`},
		{[]string{"inspect", "--db", r.DBPath, "--limit", "0"}, `--limit "0": must be a whole number of requests, 1 or more`},
		{[]string{"inspect", "--db", r.DBPath, "--max-attempts", "9"}, `unknown flag: --max-attempts`},
		{[]string{"inspect", "--db", r.DBPath, "bad net"}, `NET "bad net": must be a net name`},
	} {
		_, err := runCLI(t, nil, tc.args...)
		if assert.Error(t, err, "%v", tc.args) {
			assert.Contains(t, err.Error(), tc.want)
		}
	}
}

// TestDestructiveFlagsNeverFromEnv: C2CVIA_ALL=true does not make a plain
// purge remove queued requests; --all on the command line does. Its help
// says so.
func TestDestructiveFlagsNeverFromEnv(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	moveClockTo(r, realNowMS()) // purge reads the real clock
	tok, _ := r.login("alpha")
	r.push(tok, map[string]any{"simEndpoint": "/keep"})
	flushStoreWrites(t, r)

	out, err := runCLI(t, map[string]string{"C2CVIA_ALL": "true"}, "purge", "--db", r.DBPath)
	require.NoError(t, err)
	assert.Equal(t, "removed 0 requests and 0 expired tokens\n", out)
	assert.Equal(t, 1, r.count("requests"), "the queued request is still there")

	out, err = runCLI(t, nil, "purge", "--db", r.DBPath, "--all")
	require.NoError(t, err)
	assert.Equal(t, "removed 1 requests and 0 expired tokens\n  alpha: 1 queued\n", out)

	f := newPurgeCmd(io.Discard).Flags().Lookup("all")
	assert.Contains(t, f.Usage, "never read from the environment")
	assert.NotContains(t, f.Usage, "$C2CVIA_ALL")
}

// TestServeBusyPortMakesNoStore: a busy port stops serve before the store
// is made.
func TestServeBusyPortMakesNoStore(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	db := filepath.Join(t.TempDir(), "never.db")
	err = run(context.Background(), []string{"serve", "--addr", ln.Addr().String(), "--db", db},
		func(string) string { return "" }, io.Discard, io.Discard)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "--addr "+ln.Addr().String()+": the address is in use by another program")
	_, statErr := os.Stat(db)
	assert.True(t, os.IsNotExist(statErr), "a store was made for a relay that could not listen")
}

// TestConfigDBFromEnv: a --db in libpq's keyword/value form given by
// C2CVIA_DB is refused naming the variable, and never its value.
func TestConfigDBFromEnv(t *testing.T) {
	t.Parallel()
	const conninfo = "host=db password=Secret_pw dbname=x"
	refused := func(env map[string]string, args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := run(ctx, append([]string{"serve", "--addr", "127.0.0.1:0"}, args...), func(k string) string { return env[k] }, io.Discard, io.Discard)
		require.Error(t, err)
		require.NoError(t, ctx.Err(), "serve did not fail at once")
		return err.Error()
	}
	msg := refused(map[string]string{"C2CVIA_DB": conninfo})
	assert.Contains(t, msg, "keyword/value")
	assert.Contains(t, msg, "(from C2CVIA_DB)")
	assert.NotContains(t, msg, "Secret_pw")
	msg = refused(nil, "--db", conninfo)
	assert.Contains(t, msg, "keyword/value")
	assert.NotContains(t, msg, "(from C2CVIA_DB)")
	assert.NotContains(t, msg, "Secret_pw")
}
