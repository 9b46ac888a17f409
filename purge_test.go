// `c2cvia purge`, run in-process through run() against the store of a relay
// that is still serving it: what it removes and when, and what it refuses.

package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestPurgeMissingStore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "missing.db")
	for _, args := range [][]string{
		{"purge", "--db", path},
		{"purge", "--db", path, "--dry-run"},
		{"purge", "--db", path, "--all", "--json"},
	} {
		out, err := runCLI(t, nil, args...)
		if assert.Error(t, err, args) {
			assert.Contains(t, err.Error(), "no store at "+path)
		}
		assert.Empty(t, out)
		assertDirEmpty(t, dir)
	}
}

// TestPurgeRefusesOtherFiles: purge does not turn an empty or foreign file
// into a store.
func TestPurgeRefusesOtherFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, content := range map[string]string{"empty.db": "", "notes.txt": "not a database"} {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
		_, err := runCLI(t, nil, "purge", "--db", path)
		assert.Error(t, err, name)
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		assert.Equal(t, content, string(b), name)
	}
}

func assertDirEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	assert.Empty(t, names, "files made in %s", dir)
}

// TestPurgeLifetimes drives the store's purge (the janitor's and the CLI's)
// with the relay's fake clock: each request goes exactly when its retention
// runs out, not a millisecond before, and stays readable until then.
func TestPurgeLifetimes(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.MaxAttempts = 2 })
	ctx := context.Background()
	t0 := r.clock.Now()
	const reqTTL, resTTL, tokenTTL = 5 * time.Minute, 10 * time.Minute, 24 * time.Hour

	tokA, _ := r.login("alpha")
	tokB, _ := r.login("beta")
	tokC, _ := r.login("gamma")

	answered := r.push(tokA, map[string]any{"simEndpoint": "/a"})
	leaseOne(t, r, "alpha", answered, nil)
	require.Equal(t, http.StatusOK, r.answer("alpha", testKey, answered, map[string]any{"simBody": "a"}).Status)

	queued := r.push(tokB, map[string]any{"simEndpoint": "/b"}) // never answered: expired at t0+5m

	failed := r.push(tokC, map[string]any{"simEndpoint": "/c"})
	leaseOne(t, r, "gamma", failed, url.Values{"lease": {"60"}})
	r.clock.Advance(61 * time.Second)
	leaseOne(t, r, "gamma", failed, url.Values{"lease": {"60"}}) // attempt 2 of 2
	leaseEnd := t0.Add(61*time.Second + 60*time.Second)

	purgeAt := func(at time.Time, o purgeOptions) purgeReport {
		t.Helper()
		moveClockTo(r, at)
		rep, err := r.store.purge(ctx, o)
		require.NoError(t, err)
		return rep
	}
	none := purgeReport{Marked: map[string]map[string]int{}, Requests: map[string]map[string]int{}}
	pull := func(tok, rid string) reply {
		return r.get("/api/v1/client/pullres", url.Values{"token": {tok}, "rid": {rid}})
	}

	// Before any retention ends nothing goes, though all three are done;
	// the two past their TTL or attempts are marked so, and reported.
	assert.Equal(t, purgeReport{Marked: map[string]map[string]int{"beta": {statusExpired: 1}, "gamma": {statusFailed: 1}},
		Requests: map[string]map[string]int{}}, purgeAt(t0.Add(resTTL-time.Millisecond), purgeOptions{}))
	assert.Equal(t, 3, r.count("requests"))
	assert.Equal(t, statusAnswered, ridStatus(t, r, tokA, answered))
	assert.Equal(t, statusExpired, ridStatus(t, r, tokB, queued))
	assert.Equal(t, statusFailed, ridStatus(t, r, tokC, failed))
	assert.Equal(t, http.StatusOK, pull(tokA, answered).Status, "readable until its retention ends")

	// The answered response: a dry run counts it and keeps it.
	want := purgeReport{Marked: map[string]map[string]int{}, Requests: map[string]map[string]int{"alpha": {statusAnswered: 1}}}
	assert.Equal(t, want, purgeAt(t0.Add(resTTL), purgeOptions{DryRun: true}))
	assert.Equal(t, 3, r.count("requests"))
	assert.Equal(t, http.StatusOK, pull(tokA, answered).Status)
	assert.Equal(t, want, purgeAt(t0.Add(resTTL), purgeOptions{}))
	assert.Equal(t, 2, r.count("requests"))
	assert.Equal(t, "gone", ridStatus(t, r, tokA, answered))

	// The failed request: retention counts from the end of its last lease.
	assert.Equal(t, none, purgeAt(leaseEnd.Add(resTTL-time.Millisecond), purgeOptions{}))
	assert.Equal(t, statusFailed, ridStatus(t, r, tokC, failed))
	if rep := pull(tokC, failed); assert.Equal(t, http.StatusGone, rep.Status) {
		assert.Equal(t, "failed", rep.errorCode())
	}
	assert.Equal(t, purgeReport{Marked: map[string]map[string]int{}, Requests: map[string]map[string]int{"gamma": {statusFailed: 1}}},
		purgeAt(leaseEnd.Add(resTTL), purgeOptions{}))
	assert.Equal(t, "gone", ridStatus(t, r, tokC, failed))

	// The expired request: retention counts from the end of its TTL.
	assert.Equal(t, none, purgeAt(t0.Add(reqTTL+resTTL-time.Millisecond), purgeOptions{}))
	assert.Equal(t, statusExpired, ridStatus(t, r, tokB, queued))
	if rep := pull(tokB, queued); assert.Equal(t, http.StatusGone, rep.Status) {
		assert.Equal(t, "expired", rep.errorCode())
	}
	assert.Equal(t, purgeReport{Marked: map[string]map[string]int{}, Requests: map[string]map[string]int{"beta": {statusExpired: 1}}},
		purgeAt(t0.Add(reqTTL+resTTL), purgeOptions{}))
	assert.Equal(t, "gone", ridStatus(t, r, tokB, queued))
	assert.Zero(t, r.count("requests"))

	// Tokens go when they expire; the relay then no longer knows them.
	assert.Equal(t, none, purgeAt(t0.Add(tokenTTL-time.Millisecond), purgeOptions{}))
	assert.Equal(t, 3, r.count("tokens"))
	assert.Equal(t, purgeReport{Marked: map[string]map[string]int{}, Requests: map[string]map[string]int{}, Tokens: 3},
		purgeAt(t0.Add(tokenTTL), purgeOptions{}))
	assert.Zero(t, r.count("tokens"))
	rep := r.postJSON("/api/v1/client/pushreq", tokA, map[string]any{"simEndpoint": "/late"})
	assert.Equal(t, http.StatusUnauthorized, rep.Status)
	assert.Equal(t, "unknown_token", rep.errorCode())
}

// TestPurgeCLI runs `c2cvia purge` against the file of a running relay.
func TestPurgeCLI(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t) // --req-ttl 5m, --res-ttl 10m, --token-ttl 24h
	now := realNowMS()
	ago := func(d time.Duration) time.Time { return now.Add(-d) }

	moveClockTo(r, ago(25*time.Hour))
	r.login("alpha") // expired an hour ago
	r.login("beta")  // likewise

	moveClockTo(r, ago(3*time.Hour))
	tokA, _ := r.login("alpha")
	tokB, _ := r.login("beta")
	failed := r.push(tokA, map[string]any{"simEndpoint": "/failed"})
	for range 5 {
		leaseOne(t, r, "alpha", failed, url.Values{"lease": {"1"}})
		r.clock.Advance(2 * time.Second)
	}
	oldAnswered := r.push(tokA, map[string]any{"simEndpoint": "/old-answered"})
	leaseOne(t, r, "alpha", oldAnswered, nil)
	require.Equal(t, http.StatusOK, r.answer("alpha", testKey, oldAnswered, map[string]any{"simBody": 1}).Status)
	oldExpired := r.push(tokA, map[string]any{"simEndpoint": "/old-expired"})
	betaExpired := r.push(tokB, map[string]any{"simEndpoint": "/beta-expired"})

	moveClockTo(r, ago(12*time.Minute))
	recentExpired := r.push(tokA, map[string]any{"simEndpoint": "/recent-expired"}) // expired 7 min ago: kept 3 more

	moveClockTo(r, ago(time.Minute))
	recentAnswered := r.push(tokA, map[string]any{"simEndpoint": "/recent-answered"})
	leaseOne(t, r, "alpha", recentAnswered, nil)
	require.Equal(t, http.StatusOK, r.answer("alpha", testKey, recentAnswered, map[string]any{"simBody": 2}).Status)
	alphaQueued := r.push(tokA, map[string]any{"simEndpoint": "/alpha-queued"})
	betaQueued := r.push(tokB, map[string]any{"simEndpoint": "/beta-queued"})
	moveClockTo(r, now)
	flushStoreWrites(t, r)
	require.Equal(t, 8, r.count("requests"))
	require.Equal(t, 4, r.count("tokens"))

	purge := func(args ...string) string {
		t.Helper()
		out, err := runCLI(t, nil, append([]string{"purge", "--db", r.DBPath}, args...)...)
		require.NoError(t, err, args)
		return out
	}

	t.Run("dry run", func(t *testing.T) {
		before := storeRows(t, r)
		assert.Equal(t, "would mark 4 requests expired or failed\n"+
			"  alpha: 2 expired, 1 failed\n"+
			"  beta: 1 expired\n"+
			"would remove 4 requests and 2 expired tokens\n"+
			"  alpha: 1 answered, 1 expired, 1 failed\n"+
			"  beta: 1 expired\n", purge("--dry-run"))
		assert.Equal(t, before, storeRows(t, r), "a dry run changes nothing")
		assert.Equal(t, 8, r.count("requests"))
		assert.Equal(t, 4, r.count("tokens"))
		assert.JSONEq(t, `{"dry_run": true, "tokens": 2, "messages": {}, "released": [],
			"marked": {"alpha": {"expired": 2, "failed": 1}, "beta": {"expired": 1}},
			"requests": {"alpha": {"answered": 1, "expired": 1, "failed": 1}, "beta": {"expired": 1}}}`,
			withoutLifetimes(t, purge("--dry-run", "--json")))
		assert.Equal(t, before, storeRows(t, r))
	})

	t.Run("one net", func(t *testing.T) {
		assert.Equal(t, "marked 1 requests expired or failed\n  beta: 1 expired\n"+
			"removed 1 requests and 1 expired tokens\n  beta: 1 expired\n", purge("--net", "beta"))
		assert.Equal(t, 7, r.count("requests"))
		assert.Equal(t, 3, r.count("tokens"))
		assert.Equal(t, "gone", ridStatus(t, r, tokB, betaExpired))
		assert.Equal(t, statusExpired, ridStatus(t, r, tokA, oldExpired), "alpha is left alone")
		assert.Equal(t, statusQueued, ridStatus(t, r, tokB, betaQueued))
	})

	t.Run("expired", func(t *testing.T) {
		assert.JSONEq(t, `{"dry_run": false, "tokens": 1, "messages": {}, "released": [],
			"marked": {"alpha": {"expired": 2, "failed": 1}},
			"requests": {"alpha": {"answered": 1, "expired": 1, "failed": 1}}}`, withoutLifetimes(t, purge("--json")))
		assert.Equal(t, 4, r.count("requests"))
		assert.Equal(t, 2, r.count("tokens"))
		for _, rid := range []string{oldAnswered, oldExpired, failed} {
			assert.Equal(t, "gone", ridStatus(t, r, tokA, rid))
		}
		// Kept: within retention, or still pending.
		assert.Equal(t, statusAnswered, ridStatus(t, r, tokA, recentAnswered))
		rep := r.get("/api/v1/client/pullres", url.Values{"token": {tokA}, "rid": {recentAnswered}})
		assert.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
		assert.Equal(t, statusExpired, ridStatus(t, r, tokA, recentExpired))
		assert.Equal(t, statusQueued, ridStatus(t, r, tokA, alphaQueued))
		assert.Equal(t, statusQueued, ridStatus(t, r, tokB, betaQueued))

		assert.Equal(t, "removed 0 requests and 0 expired tokens\n", purge(), "nothing more is due")
	})

	t.Run("all", func(t *testing.T) {
		assert.Equal(t, "removed 1 requests and 0 expired tokens\n  beta: 1 queued\n", purge("--all", "--net", "beta"))
		assert.Equal(t, "gone", ridStatus(t, r, tokB, betaQueued))
		assert.Equal(t, statusQueued, ridStatus(t, r, tokA, alphaQueued))

		assert.Equal(t, "removed 3 requests and 0 expired tokens\n  alpha: 1 queued, 1 answered, 1 expired\n", purge("--all"))
		assert.Zero(t, r.count("requests"))
		assert.Equal(t, 2, r.count("tokens"), "--all keeps valid logins")

		// The relay goes on serving from the purged file.
		r.push(tokA, map[string]any{"simEndpoint": "/after"})
	})

	t.Run("bad net", func(t *testing.T) {
		before := storeRows(t, r)
		_, err := runCLI(t, nil, "purge", "--db", r.DBPath, "--net", "a b")
		assert.Error(t, err)
		assert.Equal(t, before, storeRows(t, r))
	})
}

// storeRows renders every row of the store, to compare before and after.
// The columns are read as they come and formatted here, so that the same
// queries run on SQLite and PostgreSQL.
func storeRows(t *testing.T, r *testRelay) string {
	t.Helper()
	flushStoreWrites(t, r)
	var b strings.Builder
	for _, q := range []string{
		`SELECT rid, net, status, attempt, lease_expires_at, done_at, pulled, expires_at, sim_res FROM requests ORDER BY seq`,
		`SELECT name, key_hash, last_poll_at FROM nets ORDER BY name`,
		`SELECT peer_id, net, expires_at, last_seen_at, msg_floor FROM tokens ORDER BY peer_id`,
		`SELECT id, net, kind, from_peer, to_peer, topic, data, expires_at, receivers FROM messages ORDER BY id`,
		`SELECT net, topic, peer_id, from_id, until_id FROM subscriptions ORDER BY net, topic, peer_id, from_id`,
	} {
		rows, err := r.store.r.Query(q)
		require.NoError(t, err)
		cols, err := rows.Columns()
		require.NoError(t, err)
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			require.NoError(t, rows.Scan(ptrs...))
			for i, v := range vals {
				if i > 0 {
					b.WriteByte(' ')
				}
				switch v := v.(type) {
				case nil:
					b.WriteString("-")
				case []byte:
					fmt.Fprintf(&b, "%X", v)
				default:
					fmt.Fprint(&b, v)
				}
			}
			b.WriteByte('\n')
		}
		require.NoError(t, rows.Err())
		rows.Close()
		b.WriteString("--\n")
	}
	return b.String()
}

// TestInspectAndPurgeMessages: inspect counts the peer messages each net
// keeps, in its table and its JSON; purge removes the expired ones, and
// --all every one of its scope.
func TestInspectAndPurgeMessages(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.MsgTTL = 10 * time.Minute })
	now := realNowMS()
	moveClockTo(r, now.Add(-15*time.Minute)) // expired 5 minutes ago
	a, b := r.peerLogin("alpha"), r.peerLogin("alpha")
	r.sendTo(a, b.id, "old")
	moveClockTo(r, now.Add(-time.Minute))
	r.sendTo(a, b.id, "kept")
	r.fanOut(b, "", "kept too")
	r.fanOut(b, "news", "kept, nobody subscribed")
	beta := r.peerLogin("beta")
	r.fanOut(beta, "", "alone")
	r.peerLogin("gamma") // a net with no message
	moveClockTo(r, now)
	flushStoreWrites(t, r)

	out, err := runCLI(t, nil, "inspect", "--db", r.DBPath, "--json")
	require.NoError(t, err)
	var got struct {
		Nets []struct {
			Net      string `json:"net"`
			Messages *int   `json:"messages"`
		} `json:"nets"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &got), out)
	counts := map[string]int{}
	for _, n := range got.Nets {
		require.NotNil(t, n.Messages, out)
		counts[n.Net] = *n.Messages
	}
	assert.Equal(t, map[string]int{"alpha": 3, "beta": 1, "gamma": 0}, counts, "the expired message is not counted")

	out, err = runCLI(t, nil, "inspect", "--db", r.DBPath)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	require.Len(t, lines, 4, out)
	assert.Regexp(t, `\sTOKENS\s+MESSAGES\s*$`, lines[0])
	assert.Regexp(t, `^alpha\s.*\s2\s+3\s*$`, lines[1])
	assert.Regexp(t, `^beta\s.*\s1\s+1\s*$`, lines[2])
	assert.Regexp(t, `^gamma\s.*\s1\s+0\s*$`, lines[3])

	purge := func(args ...string) string {
		t.Helper()
		out, err := runCLI(t, nil, append([]string{"purge", "--db", r.DBPath}, args...)...)
		require.NoError(t, err, args)
		return out
	}
	assert.Equal(t, "would remove 0 requests and 0 expired tokens\nwould remove 1 peer messages\n  alpha: 1\n", purge("--dry-run"))
	assert.Equal(t, 5, r.count("messages"))
	assert.JSONEq(t, `{"dry_run": false, "marked": {}, "requests": {}, "messages": {"alpha": 1}, "tokens": 0, "released": []}`, withoutLifetimes(t, purge("--json")))
	assert.Equal(t, 4, r.count("messages"))
	assert.Equal(t, "removed 0 requests and 0 expired tokens\nremoved 1 peer messages\n  beta: 1\n", purge("--all", "--net", "beta"))
	assert.Equal(t, "removed 0 requests and 0 expired tokens\n", purge(), "nothing more is due")
	assert.Equal(t, 3, r.count("messages"))
	assert.Len(t, r.readAll(b), 1, "alpha's kept messages are still read")
}

// withoutLifetimes is purge's JSON output without its "lifetimes", which
// TestPurgeFollowsRelay checks.
func withoutLifetimes(t *testing.T, out string) string {
	t.Helper()
	var v map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &v), out)
	require.Contains(t, v, "lifetimes")
	delete(v, "lifetimes")
	b, err := json.Marshal(v)
	require.NoError(t, err)
	return string(b)
}

// TestPurgeFollowsRelay: a relay started with --max-attempts 10 and
// --res-ttl 1h in its environment (as the systemd unit's settings file
// gives them) records them in the store, and a plain `c2cvia purge` or
// `inspect`, run without that environment, applies them: a request handed
// out 5 times is not failed, an answer 15 minutes old is not removed, and
// the dry run reports the marks it would make.
func TestPurgeFollowsRelay(t *testing.T) {
	t.Parallel()
	env := map[string]string{"C2CVIA_MAX_ATTEMPTS": "10", "C2CVIA_RES_TTL": "1h"}
	var fromEnv config
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	addServeFlags(fs, &fromEnv)
	require.Empty(t, flagsFromEnv(fs, func(k string) string { return env[k] }))
	r := newTestRelay(t, func(c *config) { c.MaxAttempts, c.ResTTL = fromEnv.MaxAttempts, fromEnv.ResTTL })
	require.Equal(t, 10, r.cfg.MaxAttempts)
	require.Equal(t, time.Hour, r.cfg.ResTTL)
	moveClockTo(r, realNowMS().Add(-20*time.Minute))
	tok, _ := r.login("follow")
	leasedFive := r.push(tok, map[string]any{"simEndpoint": "/five"})
	for range 5 {
		leaseOne(t, r, "follow", leasedFive, url.Values{"lease": {"1"}})
		r.clock.Advance(2 * time.Second)
	}
	tokA, _ := r.login("follow-a")
	answered := r.push(tokA, map[string]any{"simEndpoint": "/answered"})
	leaseOne(t, r, "follow-a", answered, nil)
	require.Equal(t, http.StatusOK, r.answer("follow-a", testKey, answered, map[string]any{"simBody": 1}).Status)
	moveClockTo(r, realNowMS().Add(-time.Second)) // the answer is 20 minutes old, the request 20 minutes queued (--req-ttl 5m)
	flushStoreWrites(t, r)

	purge := func(args ...string) string {
		t.Helper()
		out, err := runCLI(t, nil, append([]string{"purge", "--db", r.DBPath}, args...)...)
		require.NoError(t, err, args)
		return out
	}
	var out struct {
		Lifetimes storeLifetimes            `json:"lifetimes"`
		Marked    map[string]map[string]int `json:"marked"`
		Requests  map[string]map[string]int `json:"requests"`
	}
	require.NoError(t, json.Unmarshal([]byte(purge("--dry-run", "--json")), &out))
	assert.Equal(t, storeLifetimes{ReqTTL: "5m0s", ResTTL: "1h0m0s", TokenTTL: "24h0m0s", MsgTTL: "1h0m0s", MaxAttempts: 10,
		ClaimTTL: "720h0m0s", From: lifetimesRecorded}, out.Lifetimes)
	// Past its --req-ttl the request is expired, not failed: the dry run
	// says so, and removes nothing within the hour.
	assert.Equal(t, map[string]map[string]int{"follow": {statusExpired: 1}}, out.Marked)
	assert.Empty(t, out.Requests)
	assert.Equal(t, statusDelivered, storedStatus(t, r, leasedFive), "a dry run marks nothing")

	assert.Equal(t, "marked 1 requests expired or failed\n  follow: 1 expired\nremoved 0 requests and 0 expired tokens\n", purge())
	assert.Equal(t, statusExpired, storedStatus(t, r, leasedFive))
	rep := r.get("/api/v1/client/pullres", url.Values{"token": {tokA}, "rid": {answered}})
	assert.Equal(t, http.StatusOK, rep.Status, "an answer the relay keeps for --res-ttl 1h: %s", rep.Body)

	// inspect reads the relay's --max-attempts too: 5 of 10 is not failed.
	ins, err := runCLI(t, nil, "inspect", "--db", r.DBPath, "--rid", leasedFive, "--json")
	require.NoError(t, err)
	assert.Contains(t, ins, `"status": "expired"`)

	// A store no relay of this version recorded lifetimes in: serve's
	// defaults, and purge says so.
	_, err = r.store.w.Exec(`DELETE FROM settings`)
	require.NoError(t, err)
	assert.Contains(t, purge("--dry-run"), "no relay of this version has recorded its lifetimes in "+r.DBPath+": using serve's defaults (res-ttl 10m0s, max-attempts 5)")
}

// TestPurgeFollowsRelayAttempts: the request a relay with --max-attempts 10
// handed out 5 times, within its TTL, stays deliverable after a purge.
func TestPurgeFollowsRelayAttempts(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.MaxAttempts, c.ReqTTL = 10, time.Hour })
	moveClockTo(r, realNowMS().Add(-time.Minute))
	tok, _ := r.login("attempts")
	rid := r.push(tok, map[string]any{"simEndpoint": "/five"})
	for range 5 {
		leaseOne(t, r, "attempts", rid, url.Values{"lease": {"1"}})
		r.clock.Advance(2 * time.Second)
	}
	moveClockTo(r, realNowMS().Add(-time.Second))
	flushStoreWrites(t, r)
	out, err := runCLI(t, nil, "purge", "--db", r.DBPath, "--dry-run")
	require.NoError(t, err)
	assert.Equal(t, "would remove 0 requests and 0 expired tokens\n", out)
	out, err = runCLI(t, nil, "purge", "--db", r.DBPath)
	require.NoError(t, err)
	assert.Equal(t, "removed 0 requests and 0 expired tokens\n", out)
	assert.Equal(t, statusDelivered, storedStatus(t, r, rid))
	got := leaseOne(t, r, "attempts", rid, nil)
	assert.Equal(t, 6, got.Attempt, "handed out again after the purge")
}

// storedStatus is the status column of rid, as the store holds it.
func storedStatus(t *testing.T, r *testRelay, rid string) string {
	t.Helper()
	flushStoreWrites(t, r)
	var status string
	require.NoError(t, r.store.r.QueryRow(`SELECT status FROM requests WHERE rid = ?`, rid).Scan(&status))
	return status
}

// TestStoreShrinks: what purge removes goes back to the file system. The
// janitor gives the free pages back (incremental vacuum) and the next
// checkpoint cuts the file; a store made before incremental vacuum is
// converted when a relay starts on it.
func TestStoreShrinks(t *testing.T) {
	t.Parallel()
	onlySQLite(t)
	r := newTestRelay(t, func(c *config) { c.JanitorEvery = time.Second })
	var autoVacuum int
	require.NoError(t, r.store.r.QueryRow(`PRAGMA auto_vacuum`).Scan(&autoVacuum))
	assert.Equal(t, 2, autoVacuum, "a new store is INCREMENTAL")

	tok, _ := r.login("big")
	body := strings.Repeat("x", 8000)
	for range 400 { // 3.2 MB of bodies, two pages each
		r.push(tok, map[string]any{"simEndpoint": "/big", "simBody": body})
	}
	fileSize := func() int64 {
		t.Helper()
		_, err := r.store.ckpt.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`)
		require.NoError(t, err)
		fi, err := os.Stat(r.DBPath)
		require.NoError(t, err)
		return fi.Size()
	}
	full := fileSize()
	require.Greater(t, full, int64(3<<20))
	_, err := runCLI(t, nil, "purge", "--db", r.DBPath, "--all")
	require.NoError(t, err)
	var free int
	require.NoError(t, r.store.r.QueryRow(`PRAGMA freelist_count`).Scan(&free))
	require.Greater(t, free, 700, "purge frees the pages; the janitor gives them back")
	waitFor(t, 30*time.Second, func() bool {
		require.NoError(t, r.store.r.QueryRow(`PRAGMA freelist_count`).Scan(&free))
		return free == 0
	}, "the janitor to give every free page back")
	assert.Less(t, fileSize(), full/8, "the file is cut at the checkpoint")

	t.Run("older store", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "old.db")
		st, err := openStore(context.Background(), path, testStoreOptions(nil))
		require.NoError(t, err)
		require.NoError(t, st.Close())
		db, err := sql.Open("sqlite", path)
		require.NoError(t, err)
		_, err = db.Exec(`PRAGMA auto_vacuum = NONE; VACUUM`)
		require.NoError(t, err)
		require.NoError(t, db.QueryRow(`PRAGMA auto_vacuum`).Scan(&autoVacuum))
		require.NoError(t, db.Close())
		require.Equal(t, 0, autoVacuum)

		old := newTestRelay(t, func(c *config) { c.DB = path })
		require.NoError(t, old.store.r.QueryRow(`PRAGMA auto_vacuum`).Scan(&autoVacuum))
		assert.Equal(t, 2, autoVacuum, "serve converts it")
	})
}

// TestJanitorWritesInBatches: the janitor expires and then deletes 2,500
// requests as writes of at most a batch each, and a write queued between
// two of them commits while most of the requests are still due.
func TestJanitorWritesInBatches(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	ctx := context.Background()
	const n, batch = 2500, 500
	_, tok, err := r.store.createToken(ctx, "alpha", "")
	require.NoError(t, err)
	now := r.store.nowMS()
	require.NoError(t, r.store.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
			INSERT INTO requests (rid, net, token_hash, from_peer, status, sim_req, created_at, expires_at)
			SELECT 'batch-' || i, 'alpha', ?, ?, 'queued', '{}', ?, ? FROM n`,
			n, tok.Hash, tok.PeerID, now, now+r.cfg.ReqTTL.Milliseconds())
		return err
	}))
	expired := func() int { return r.count("requests WHERE status = 'expired'") }

	r.advance(r.cfg.ReqTTL)
	var seen []int // expired requests when the write between two batches committed
	total, err := r.store.purgeBatches(ctx, batch, func(purgeReport) {
		r.login("beta") // a write of another net, between two of the janitor's
		seen = append(seen, expired())
	})
	require.NoError(t, err)
	assert.Equal(t, []int{500, 1000, 1500, 2000, 2500, 2500}, seen,
		"each write expires at most a batch; the last finds none left")
	assert.Zero(t, total.requests())
	assert.Equal(t, n, expired())

	r.advance(r.cfg.ResTTL)
	var removed []int
	total, err = r.store.purgeBatches(ctx, batch, func(rep purgeReport) { removed = append(removed, rep.requests()) })
	require.NoError(t, err)
	assert.Equal(t, []int{500, 500, 500, 500, 500, 0}, removed)
	assert.Equal(t, n, total.requests())
	assert.Zero(t, r.count("requests"))
	assert.Equal(t, 6, r.count("tokens WHERE net = 'beta'"), "the logins between the batches")
}
