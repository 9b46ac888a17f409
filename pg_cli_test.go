// Tests of the operator's commands on a PostgreSQL store: inspect shows
// what it shows on SQLite and writes nothing, purge runs beside the relays
// serving the database, backup refuses, and no command prints the
// password of the URL.

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// newTestRelayOn is newTestRelay on the store db (a file or a URL).
func newTestRelayOn(t *testing.T, db string, change ...func(*config)) *testRelay {
	t.Helper()
	cfg := testConfig(db)
	for _, c := range change {
		c(&cfg)
	}
	require.NoError(t, cfg.check(nil))
	clock := clockwork.NewFakeClockAt(testEpoch)
	rel, err := startRelay(context.Background(), cfg, clock, io.Discard, io.Discard)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, rel.stop()) })
	return &testRelay{t: t, URL: rel.url(), DBPath: db, store: rel.store, srv: rel.srv, clock: clock, cfg: cfg}
}

// withUser is the URL u with user and password instead of its own.
func withUser(t *testing.T, u, user, password string) string {
	t.Helper()
	p, err := url.Parse(u)
	require.NoError(t, err)
	p.User = url.UserPassword(user, password)
	return p.String()
}

// pgExec runs statements on the database at u.
func pgExec(t *testing.T, u string, stmts ...string) {
	t.Helper()
	db, err := openPostgresDB(u)
	require.NoError(t, err)
	defer db.Close()
	for _, s := range stmts {
		_, err := db.Exec(s)
		require.NoError(t, err, s)
	}
}

// schemaTables lists the tables of the schema u's search_path names.
func schemaTables(t *testing.T, u string) []string {
	t.Helper()
	db, err := openPostgresDB(u)
	require.NoError(t, err)
	defer db.Close()
	rows, err := db.Query(`SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY 1`)
	require.NoError(t, err)
	defer rows.Close()
	var tables []string
	for rows.Next() {
		var s string
		require.NoError(t, rows.Scan(&s))
		tables = append(tables, s)
	}
	require.NoError(t, rows.Err())
	return tables
}

// inspectScene is what both stores are given for TestInspectPostgresLikeSQLite:
// requests of each status, logins, peers and their messages, at the same
// moments. ids are its rids and peer ids in the order they were made,
// rids the places of the rids among them.
func inspectScene(t *testing.T, r *testRelay, now time.Time) (ids []string, rids []int) {
	defer func() {
		for i, id := range ids {
			var n int
			require.NoError(t, r.store.r.QueryRow(`SELECT count(*) FROM requests WHERE rid = ?`, id).Scan(&n))
			if n == 1 {
				rids = append(rids, i)
			}
		}
	}()
	ago := func(d time.Duration) time.Time { return now.Add(-d) }
	moveClockTo(r, ago(25*time.Hour))
	r.login("alpha") // expired an hour ago
	moveClockTo(r, ago(3*time.Hour))
	tok, p := r.login("alpha")
	ids = append(ids, p)
	ids = append(ids, r.push(tok, map[string]any{"simEndpoint": "/expired", "simMethod": "GET"}))
	moveClockTo(r, ago(90*time.Minute))
	failed := r.push(tok, map[string]any{"simEndpoint": "/failed", "simMethod": "POST"})
	ids = append(ids, failed)
	for range 5 {
		leaseOne(t, r, "alpha", failed, url.Values{"lease": {"1"}})
		r.clock.Advance(2 * time.Second)
	}
	moveClockTo(r, ago(30*time.Minute))
	answered := r.push(tok, map[string]any{"simEndpoint": "/answered"})
	ids = append(ids, answered)
	leaseOne(t, r, "alpha", answered, nil)
	require.Equal(t, http.StatusOK, r.answer("alpha", testKey, answered, map[string]any{"simBody": "ok", "simStatus": 201}).Status)
	moveClockTo(r, ago(20*time.Minute))
	delivered := r.push(tok, map[string]any{"simEndpoint": "/delivered"})
	ids = append(ids, delivered)
	leaseOne(t, r, "alpha", delivered, nil)
	moveClockTo(r, ago(2*time.Minute))
	ids = append(ids, r.push(tok, map[string]any{"simEndpoint": "/queued", "simHeaders": map[string]any{"X-A": "1"}}))
	betaTok, betaPeer := r.login("beta")
	ids = append(ids, betaPeer, r.push(betaTok, map[string]any{"simEndpoint": "/beta"}))
	// Peers and their messages: one expired, some kept.
	moveClockTo(r, ago(2*time.Hour))
	a, b := r.peerLogin("peers"), r.peerLogin("peers")
	ids = append(ids, a.id, b.id)
	r.sendTo(a, b.id, "old")
	moveClockTo(r, ago(time.Minute))
	r.sendTo(a, b.id, "kept")
	r.fanOut(b, "", "to all")
	r.fanOut(b, "news", map[string]any{"n": 1})
	moveClockTo(r, now)
	flushStoreWrites(t, r)
	return ids, nil
}

// normalise replaces ids (rids, peer ids) with their place in the scene
// and the ages of inspect's table (which read the real clock) with AGE.
func normalise(out string, ids []string) string {
	for i, id := range ids {
		out = strings.ReplaceAll(out, id, fmt.Sprintf("ID%d", i))
	}
	return regexp.MustCompile(`\b(\d+h)?(\d+m)?\d+(\.\d+)?s ago\b`).ReplaceAllString(out, "AGE")
}

// TestInspectPostgresLikeSQLite: the same scene on a SQLite store and a
// PostgreSQL one, each served by a relay: every view of inspect, net list
// and purge (a dry run, then for real) print the same on both.
func TestInspectPostgresLikeSQLite(t *testing.T) {
	t.Parallel()
	pg := newTestSchema(t, needPostgres(t))
	lite := newTestRelayOn(t, filepath.Join(t.TempDir(), "relay.db"))
	post := newTestRelayOn(t, pg)
	now := realNowMS()
	liteIDs, rids := inspectScene(t, lite, now)
	pgIDs, pgRIDs := inspectScene(t, post, now)
	require.Equal(t, rids, pgRIDs)
	require.Len(t, rids, 6)

	same := func(args ...string) string {
		t.Helper()
		run := func(r *testRelay, ids []string) string {
			out, err := runCLI(t, nil, append(args[:1:1], append([]string{"--db", r.DBPath}, args[1:]...)...)...)
			require.NoError(t, err, "%s on %s", args, r.DBPath)
			return normalise(out, ids)
		}
		want := run(lite, liteIDs)
		assert.Equal(t, want, run(post, pgIDs), "%s", args)
		return want
	}
	summary := same("inspect", "--json")
	assert.Contains(t, summary, `"queued": 1`)
	assert.Contains(t, summary, `"failed": 1`)
	assert.Contains(t, summary, `"messages": 3`)
	same("inspect")
	same("inspect", "alpha")
	assert.Contains(t, same("inspect", "alpha", "--json"), `"method": "POST"`)
	same("inspect", "beta", "--limit", "1")
	for _, i := range rids {
		for _, asJSON := range []bool{false, true} {
			flags := []string{}
			if asJSON {
				flags = append(flags, "--json")
			}
			lo, err := runCLI(t, nil, append([]string{"inspect", "--rid", liteIDs[i], "--db", lite.DBPath}, flags...)...)
			require.NoError(t, err)
			po, err := runCLI(t, nil, append([]string{"inspect", "--rid", pgIDs[i], "--db", post.DBPath}, flags...)...)
			require.NoError(t, err)
			assert.Equal(t, normalise(lo, liteIDs), normalise(po, pgIDs), "inspect --rid ID%d", i)
		}
	}
	same("net", "list", "--json")
	dry := same("purge", "--dry-run", "--json")
	assert.Contains(t, dry, `"expired": 2`)
	same("purge", "--json")
	same("inspect", "--json")
	same("purge")
}

// TestInspectPostgresReadOnly: inspect and net list run as a role that may
// only read the store's tables, so that any write, DDL or migration would
// fail; the store's rows are the same after. The role's password shows
// nowhere.
func TestInspectPostgresReadOnly(t *testing.T) {
	t.Parallel()
	pg := newTestSchema(t, needPostgres(t))
	r := newTestRelayOn(t, pg)
	ids, _ := inspectScene(t, r, realNowMS())
	schema := regexp.MustCompile(`search_path=(\w+)`).FindStringSubmatch(pg)[1]
	role := "reader_" + schema
	const secret = "s3cret-pw"
	pgExec(t, pg, `CREATE ROLE `+role+` LOGIN PASSWORD '`+secret+`'`,
		`GRANT USAGE ON SCHEMA `+schema+` TO `+role,
		`GRANT SELECT ON ALL TABLES IN SCHEMA `+schema+` TO `+role)
	t.Cleanup(func() { pgExec(t, pg, `DROP OWNED BY `+role, `DROP ROLE `+role) })
	reader := withUser(t, pg, role, secret)

	before := storeRows(t, r)
	tables := schemaTables(t, pg)
	for _, args := range [][]string{
		{"inspect"}, {"inspect", "--json"}, {"inspect", "alpha"}, {"inspect", "alpha", "--json"},
		{"inspect", "--rid", ids[1]}, {"inspect", "--rid", ids[3], "--json"}, {"net", "list"},
	} {
		out, err := runCLI(t, nil, append(args, "--db", reader)...)
		require.NoError(t, err, args)
		assert.NotContains(t, out, secret)
	}
	// C2CVIA_DB names it as --db does.
	out, err := runCLI(t, map[string]string{"C2CVIA_DB": reader}, "inspect", "--json")
	require.NoError(t, err)
	assert.Contains(t, out, `"net": "alpha"`)
	assert.Equal(t, before, storeRows(t, r), "inspect wrote nothing")
	assert.Equal(t, tables, schemaTables(t, pg))

	// Errors name the database without its password.
	_, err = runCLI(t, nil, "inspect", "--db", reader, "--rid", "nosuchrid")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "no request nosuchrid in "+redactURL(reader))
	assert.NotContains(t, err.Error(), secret)
	_, err = runCLI(t, nil, "purge", "--db", reader)
	require.Error(t, err, "the reader may not write")
	assert.NotContains(t, err.Error(), secret)
	assert.Equal(t, before, storeRows(t, r))

	// The connections refuse writes themselves, whoever the user.
	db, err := openPostgresReadOnlyDB(pg)
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Exec(`DELETE FROM requests`)
	require.ErrorContains(t, err, "read-only transaction")
}

// TestPostgresCLINoStore: on a schema with no c2cvia store, inspect, purge
// and net say so and make nothing; on a store of a newer schema they
// refuse it.
func TestPostgresCLINoStore(t *testing.T) {
	t.Parallel()
	base := needPostgres(t)
	empty := newTestSchema(t, base)
	for _, args := range [][]string{{"inspect"}, {"inspect", "--json"}, {"purge"}, {"purge", "--dry-run"}, {"net", "list"}, {"net", "release", "alpha"}} {
		_, err := runCLI(t, nil, append(args, "--db", empty)...)
		require.Error(t, err, args)
		assert.Contains(t, err.Error(), "no c2cvia store in "+empty, args)
	}
	assert.Empty(t, schemaTables(t, empty), "nothing was made")

	newer := newTestSchema(t, base)
	r := newTestRelayOn(t, newer)
	r.login("alpha")
	pgExec(t, newer, fmt.Sprintf(`UPDATE c2cvia_schema SET version = %d`, len(pgMigrations)+1))
	for _, args := range [][]string{{"inspect"}, {"purge"}, {"net", "list"}} {
		_, err := runCLI(t, nil, append(args, "--db", newer)...)
		require.Error(t, err, args)
		assert.Contains(t, err.Error(), "not a c2cvia store this version can read", args)
	}
	pgExec(t, newer, fmt.Sprintf(`UPDATE c2cvia_schema SET version = %d`, len(pgMigrations)))
}

// TestPurgePostgresBesideRelays: two relays serve one database; while one
// takes requests, `c2cvia purge` removes what has expired, by the
// lifetimes they recorded, and the other node's janitor runs at the same
// moment: each expired row is removed once, by one of them, and nothing
// live is touched.
func TestPurgePostgresBesideRelays(t *testing.T) {
	t.Parallel()
	pg := newTestSchema(t, needPostgres(t))
	a := newTestRelayOn(t, pg)
	b := newTestRelayOn(t, pg)
	now := realNowMS()
	moveClockTo(a, now.Add(-25*time.Hour))
	a.login("stale") // expired an hour ago
	moveClockTo(a, now.Add(-3*time.Hour))
	tok, _ := a.login("alpha")
	const old = 40
	var gone []string
	for i := range old {
		gone = append(gone, a.push(tok, map[string]any{"simEndpoint": fmt.Sprintf("/old/%d", i)}))
	}
	// Some answered, the others handed out and left to expire.
	for i, l := range a.pullReqs("alpha", testKey, nil) {
		if i%2 == 0 {
			require.Equal(t, http.StatusOK, a.answer("alpha", testKey, l.RID, map[string]any{"simBody": i}).Status)
		}
	}
	moveClockTo(a, now.Add(-time.Minute))
	tok2, _ := a.login("alpha")
	kept := a.push(tok2, map[string]any{"simEndpoint": "/kept"})
	moveClockTo(a, now)
	moveClockTo(b, now)
	flushStoreWrites(t, a)

	// The CLI and node b's janitor purge at once, while node a takes
	// requests.
	type result struct {
		rep purgeReport
		err error
	}
	cli := make(chan result, 1)
	go func() {
		out, err := runCLI(t, nil, "purge", "--json", "--db", pg)
		var rep purgeReport
		if err == nil {
			err = json.Unmarshal([]byte(out), &rep)
		}
		cli <- result{rep, err}
	}()
	janitor := make(chan result, 1)
	go func() {
		rep, err := b.store.purgeBatches(context.Background(), janitorBatch, nil)
		janitor <- result{rep, err}
	}()
	var pushed []string
	deadline := time.After(30 * time.Second)
	var got []result
	for len(got) < 2 {
		pushed = append(pushed, a.push(tok2, map[string]any{"simEndpoint": "/during"}))
		select {
		case res := <-cli:
			got = append(got, res)
		case res := <-janitor:
			got = append(got, res)
		case <-deadline:
			t.Fatal("purge and the janitor did not end within 30 s")
		default:
		}
	}
	removed, tokens := 0, 0
	for _, res := range got {
		require.NoError(t, res.err)
		removed += res.rep.requests()
		tokens += res.rep.Tokens
	}
	assert.Equal(t, old, removed, "every old request removed once")
	assert.Equal(t, 1, tokens, "the expired login removed once")

	for _, rid := range gone {
		assert.Equal(t, "gone", ridStatus(t, a, tok, rid))
	}
	assert.Equal(t, statusQueued, ridStatus(t, a, tok2, kept))
	for _, rid := range pushed {
		assert.Equal(t, statusQueued, ridStatus(t, b, tok2, rid), "node b reads what node a took meanwhile")
	}
	assert.Equal(t, 1+len(pushed), a.count("requests"))
	out, err := runCLI(t, nil, "purge", "--db", pg)
	require.NoError(t, err)
	assert.Equal(t, "removed 0 requests and 0 expired tokens\n", out, "nothing more is due")
}

// TestPurgePostgresTakesTurns: while another purge of the store holds the
// purge lock, a janitor's run purges nothing and returns at once, and
// `c2cvia purge` waits for the lock, then removes what is due.
func TestPurgePostgresTakesTurns(t *testing.T) {
	t.Parallel()
	pg := newTestSchema(t, needPostgres(t))
	r := newTestRelayOn(t, pg)
	moveClockTo(r, realNowMS().Add(-25*time.Hour))
	r.login("stale")
	moveClockTo(r, realNowMS())
	flushStoreWrites(t, r)

	other, err := openPostgresDB(pg)
	require.NoError(t, err)
	defer other.Close()
	ctx := context.Background()
	tx, err := other.BeginTx(ctx, nil)
	require.NoError(t, err)
	defer tx.Rollback()
	_, err = tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(?, hashtext(current_schema()))`, purgeLockKey)
	require.NoError(t, err)

	rep, err := r.store.purgeBatches(ctx, janitorBatch, nil)
	require.NoError(t, err)
	assert.Zero(t, rep.total(), "the janitor leaves it to the purge under way")
	assert.Equal(t, 1, r.count("tokens"))

	type result struct {
		out string
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := runCLI(t, nil, "purge", "--db", pg)
		done <- result{out, err}
	}()
	// The CLI waits for the lock: PostgreSQL shows it waiting.
	waitFor(t, 10*time.Second, func() bool {
		var n int
		err := other.QueryRow(`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted
			AND classid = ? AND objid = CAST(hashtext(current_schema()) AS oid) AND objsubid = 2`,
			purgeLockKey).Scan(&n)
		return err == nil && n == 1
	}, "purge waiting for the purge lock")
	select {
	case res := <-done:
		t.Fatalf("purge ended while the lock was held: %q %v", res.out, res.err)
	default:
	}
	require.NoError(t, tx.Commit())
	var res result
	select {
	case res = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("purge did not end within 10 s of the lock's release")
	}
	require.NoError(t, res.err)
	assert.Equal(t, "removed 0 requests and 1 expired tokens\n", res.out)
	assert.Zero(t, r.count("tokens"))
}

// TestPurgePostgresRowsOnly: purge and net run as a role that may read and
// write the store's rows but create nothing in its schema.
func TestPurgePostgresRowsOnly(t *testing.T) {
	t.Parallel()
	pg := newTestSchema(t, needPostgres(t))
	r := newTestRelayOn(t, pg)
	moveClockTo(r, realNowMS().Add(-25*time.Hour))
	r.login("stale")
	moveClockTo(r, realNowMS())
	r.pullReqs("alpha", testKey, nil)
	flushStoreWrites(t, r)
	schema := regexp.MustCompile(`search_path=(\w+)`).FindStringSubmatch(pg)[1]
	role := "rows_" + schema
	pgExec(t, pg, `CREATE ROLE `+role+` LOGIN`,
		`GRANT USAGE ON SCHEMA `+schema+` TO `+role,
		`GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA `+schema+` TO `+role,
		`GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA `+schema+` TO `+role)
	t.Cleanup(func() { pgExec(t, pg, `DROP OWNED BY `+role, `DROP ROLE `+role) })
	db := withUser(t, pg, role, "pw")
	tables := schemaTables(t, pg)

	out, err := runCLI(t, nil, "purge", "--db", db, "--dry-run")
	require.NoError(t, err)
	assert.Equal(t, "would remove 0 requests and 1 expired tokens\n", out)
	out, err = runCLI(t, nil, "purge", "--db", db)
	require.NoError(t, err)
	assert.Equal(t, "removed 0 requests and 1 expired tokens\n", out)
	out, err = runCLI(t, nil, "net", "release", "alpha", "--db", db)
	require.NoError(t, err)
	assert.Equal(t, "released alpha; 0 pending requests expired\n", out)
	assert.Equal(t, tables, schemaTables(t, pg))
}

// TestBackupRefusesPostgres: backup copies SQLite files; on a postgres://
// --db it points at pg_dump, before connecting, and never shows the
// password.
func TestBackupRefusesPostgres(t *testing.T) {
	t.Parallel()
	dest := filepath.Join(t.TempDir(), "copy.db")
	_, err := runCLI(t, nil, "backup", "--db", "postgres://relay:hunter22@db.invalid/c2cvia", dest)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "pg_dump")
	assert.NotContains(t, err.Error(), "hunter22")
	assert.NoFileExists(t, dest)
}

// TestDBFlagsNamePostgres: every --db says it takes a SQLite file or a
// postgres:// URL; backup's points at pg_dump.
func TestDBFlagsNamePostgres(t *testing.T) {
	for _, args := range [][]string{{"serve"}, {"inspect"}, {"purge"}, {"net", "list"}, {"backup"}} {
		out, err := runCLI(t, nil, append(args, "--help")...)
		require.NoError(t, err, args)
		line := regexp.MustCompile(`(?m)^\s+--db string.*$`).FindString(out)
		require.NotEmpty(t, line, "%s --help:\n%s", args, out)
		if args[0] == "backup" {
			assert.Contains(t, line, "pg_dump")
		} else {
			assert.Contains(t, line, "SQLite file")
			assert.Contains(t, line, "postgres://", args)
		}
	}
}

// TestPostgresErrorsHidePassword: a database that cannot be reached, or a
// URL that does not parse, fails every command with an error that does not
// show the password, however the URL gives it.
func TestPostgresErrorsHidePassword(t *testing.T) {
	t.Parallel()
	for _, db := range []string{
		"postgres://relay:hunter22@127.0.0.1:1/c2cvia?sslmode=disable&connect_timeout=5",
		"postgres://relay:hunter%4022@127.0.0.1:1/c2cvia?sslmode=disable",
		"postgresql://relay@127.0.0.1:1/c2cvia?sslmode=disable&password=hunter22",
		"postgres://relay:hunter22@127.0.0.1:1/c2cvia?sslmode=bogus",
		"postgres://relay:hun@ter22@host:notaport/c2cvia",
		"postgres://relay:hunter22@[::1/c2cvia",
	} {
		for _, args := range [][]string{{"inspect"}, {"inspect", "--rid", "x"}, {"purge"}, {"purge", "--dry-run"}, {"net", "list"}, {"net", "release", "alpha"}} {
			_, err := runCLI(t, nil, append(args, "--db", db)...)
			require.Error(t, err, "%s on %s", args, db)
			assert.NotContains(t, err.Error(), "hunter", "%s on %s", args, db)
			assert.NotContains(t, err.Error(), "ter22", "%s on %s", args, db)
		}
	}
}
