package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// testPostgresEnv names a PostgreSQL server for the tests (a URL,
// postgres://…), which .ci/run starts: the tests of several nodes on one
// database use it, and with C2CVIA_TEST_STORE=postgres every test relay and
// store that is about behaviour, not about SQLite's file, is a fresh
// schema of it (testDB): the suite's second run.
const (
	testPostgresEnv = "C2CVIA_TEST_POSTGRES"
	testStoreEnv    = "C2CVIA_TEST_STORE"
)

// testPostgresURL is the server's URL when the suite runs on PostgreSQL
// (C2CVIA_TEST_STORE=postgres), else "".
func testPostgresURL() string {
	if os.Getenv(testStoreEnv) != "postgres" {
		return ""
	}
	return os.Getenv(testPostgresEnv)
}

var testSchemas atomic.Int64

// testDB is where a test's store lives: a SQLite file in its temp dir, or,
// with C2CVIA_TEST_POSTGRES set, a new schema of that database, dropped
// when the test ends.
func testDB(t testing.TB, file string) string {
	t.Helper()
	url := testPostgresURL()
	if url == "" {
		return filepath.Join(t.TempDir(), file)
	}
	return newTestSchema(t, url)
}

// newTestSchema creates an empty schema in the database at url and returns
// url with search_path set to it.
func newTestSchema(t testing.TB, url string) string {
	t.Helper()
	db, err := openPostgresDB(url)
	require.NoError(t, err)
	defer db.Close()
	name := fmt.Sprintf("t%d_%d", os.Getpid(), testSchemas.Add(1))
	_, err = db.ExecContext(context.Background(), `CREATE SCHEMA `+name)
	require.NoError(t, err)
	t.Cleanup(func() {
		db, err := openPostgresDB(url)
		if err != nil {
			return
		}
		defer db.Close()
		db.ExecContext(context.Background(), `DROP SCHEMA `+name+` CASCADE`)
	})
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	return url + sep + "search_path=" + name
}

// onlyOneNode skips a test of what a relay spares itself because it alone
// writes its store (the recent-message cache, polls that trust its own
// counts and leases, answers handed over in memory, the one writer's group
// commit): on PostgreSQL other nodes write too, so each of these reads or
// writes the database (README, "Scale out"); the TestNodes tests check what
// is kept instead.
func onlyOneNode(t testing.TB) {
	t.Helper()
	if testPostgresURL() != "" {
		t.Skip("a single relay's shortcut, off on a shared PostgreSQL store")
	}
}

// onlySQLite skips a test about SQLite's file when the suite runs on
// PostgreSQL.
func onlySQLite(t testing.TB) {
	t.Helper()
	if testPostgresURL() != "" {
		t.Skip("about the SQLite store's file")
	}
}

// sqlHex is SQL for col (a blob) as upper-case hex, on either engine:
// SQLite's hex(), PostgreSQL's encode().
func sqlHex(col string) string {
	if testPostgresURL() != "" {
		return "upper(encode(" + col + ", 'hex'))"
	}
	return "hex(" + col + ")"
}

// TestPostgresStatements prepares every statement of the store on
// PostgreSQL, naming each one PostgreSQL refuses.
func TestPostgresStatements(t *testing.T) {
	url := newTestSchema(t, needPostgres(t))
	db, err := openPostgresDB(url)
	require.NoError(t, err)
	defer db.Close()
	require.NoError(t, migratePostgres(context.Background(), db, "test"))
	var q statements
	for _, s := range q.list(db, db) {
		stmt, err := db.PrepareContext(context.Background(), s.sql)
		if err != nil {
			t.Errorf("%v\n%s", err, rebind(s.sql))
			continue
		}
		stmt.Close()
	}
}

// TestPostgresPasswordNeverShown: serve names its PostgreSQL store in its
// listening line and its logs without the URL's password, however the
// URL spells it, and so does the error of a store it cannot reach.
func TestPostgresPasswordNeverShown(t *testing.T) {
	url := testPostgresURL()
	if url == "" {
		t.Skip("needs " + testPostgresEnv)
	}
	t.Parallel()
	const secret = "s3cret-pw@x/y:z"
	cfg, err := pgconn.ParseConfig(url)
	require.NoError(t, err)
	// The server trusts the suite's connections: any password opens it.
	withPassword := func(u string) string {
		return strings.Replace(u, "://"+cfg.User+"@", "://"+cfg.User+":"+neturl.QueryEscape(secret)+"@", 1)
	}
	secretShown := func(t *testing.T, s string) {
		t.Helper()
		for _, form := range []string{secret, neturl.QueryEscape(secret), neturl.PathEscape(secret), "s3cret-pw"} {
			assert.NotContains(t, s, form)
		}
	}
	db := withPassword(newTestSchema(t, url))
	require.Contains(t, db, neturl.QueryEscape(secret), "the URL holds the password")

	t.Run("serve", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var stdout, stderr syncBuffer
		done := make(chan error, 1)
		go func() {
			done <- run(ctx, []string{"serve", "--addr", "127.0.0.1:0", "--db", db, "--log-level", "debug"},
				func(string) string { return "" }, &stdout, &stderr)
		}()
		waitFor(t, 30*time.Second, func() bool { return strings.Contains(stdout.String(), "listening on ") }, "the listening line")
		base := strings.Fields(strings.SplitN(stdout.String(), "listening on ", 2)[1])[0]
		r := &testRelay{t: t, URL: base}
		tok, _ := r.login("alpha")
		r.push(tok, map[string]any{"simEndpoint": "/x"})
		r.get("/api/v1/client/pullres", neturl.Values{"token": {"nope"}})
		cancel()
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(30 * time.Second):
			t.Fatal("serve did not stop within 30s")
		}
		assert.Contains(t, stdout.String(), "(store postgres://", "the listening line names the store")
		assert.Contains(t, stderr.String(), "listening")
		secretShown(t, stdout.String())
		secretShown(t, stderr.String())
	})

	t.Run("unreachable", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		addr := ln.Addr().String()
		ln.Close() // nothing listens there now
		bad := withPassword(strings.Replace(url, cfg.Host+":"+strconv.Itoa(int(cfg.Port)), addr, 1))
		require.Contains(t, bad, addr)
		var stdout, stderr syncBuffer
		err = run(context.Background(), []string{"serve", "--addr", "127.0.0.1:0", "--db", bad},
			func(string) string { return "" }, &stdout, &stderr)
		require.Error(t, err)
		secretShown(t, err.Error())
		secretShown(t, stdout.String())
		secretShown(t, stderr.String())
	})

}

// TestRedactURL: a PostgreSQL URL's password, in its user part (as
// written, or escaped) or its query, is not in what redactURL gives.
func TestRedactURL(t *testing.T) {
	t.Parallel()
	const secret = "s3cret-pw@x/y:z"
	for _, u := range []string{
		"postgres://u:" + neturl.QueryEscape(secret) + "@h:5432/db",
		"postgresql://u:s3cret-pw@h/db?sslmode=disable",
		"postgres://u@h/db?password=s3cret-pw&sslmode=disable",
		"postgres://u:s3cret-pw@h1:5432,h2:5433/db",
		"postgres://u:s3cret-pw@h/db?sslmode=bogus", // pgconn refuses it
	} {
		got := redactURL(u)
		assert.NotContains(t, got, "s3cret-pw", u)
		assert.Contains(t, got, "u", u)
		assert.Contains(t, got, "/db", u)
	}
	assert.Equal(t, "postgres://u@h/db?sslmode=disable", redactURL("postgres://u@h/db?sslmode=disable"), "no password: as given")
	assert.Equal(t, "relay.db", redactURL("relay.db"), "a file: as given")
	assert.Equal(t, "/data/50%zz off.db", redactURL("/data/50%zz off.db"), "a file: as given")
}

// TestRebind: SQLite's placeholders become PostgreSQL's, numbered as
// SQLite numbers them; quoted strings and identifiers are left alone.
func TestRebind(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ sql, want string }{
		{`SELECT ?`, `SELECT $1`},
		{`SELECT a FROM t WHERE b = ? AND c = ?`, `SELECT a FROM t WHERE b = $1 AND c = $2`},
		{`SELECT ?3, ?1`, `SELECT $3, $1`},
		{`SELECT ?2, ?, ?1, ?`, `SELECT $2, $3, $1, $4`},
		{`SELECT ?10 + ?`, `SELECT $10 + $11`},
		{`SELECT '?' || ?`, `SELECT '?' || $1`},
		{`SELECT "?" FROM t WHERE x = ?`, `SELECT "?" FROM t WHERE x = $1`},
		{`SELECT 'it''s ?', ?`, `SELECT 'it''s ?', $1`},
		{`SELECT "a""?", '?1' WHERE y = ?1`, `SELECT "a""?", '?1' WHERE y = $1`},
		{`SELECT 'no end ?`, `SELECT 'no end ?`},
		{`SELECT 1`, `SELECT 1`},
	} {
		assert.Equal(t, c.want, rebind(c.sql), c.sql)
	}
}

// TestDBKinds: a postgres:// URL in any case is PostgreSQL; a libpq
// keyword/value string is refused, without repeating it (it may hold the
// password), rather than taken for a SQLite file's name.
func TestDBKinds(t *testing.T) {
	t.Parallel()
	for _, db := range []string{"postgres://h/db", "postgresql://h/db", "POSTGRES://u:pw@h/db", "PostgreSQL://h/db"} {
		assert.True(t, isPostgresURL(db), db)
		assert.NoError(t, checkDB(db), db)
	}
	for _, db := range []string{"c2cvia.db", "/var/lib/c2cvia/c2cvia.db", "./host.db", "my store=old.db"} {
		assert.False(t, isPostgresURL(db), db)
	}
	assert.NoError(t, checkDB("c2cvia.db"))
	for _, db := range []string{
		"host=127.0.0.1 port=5432 user=relay password=Secret_pw dbname=relaydb sslmode=disable",
		"dbname=c2cvia", "user=relay password=Secret_pw", "HOST=db.internal",
	} {
		err := checkDB(db)
		require.ErrorIs(t, err, errConninfo, db)
		assert.NotContains(t, err.Error(), "Secret_pw")
		_, err = openStore(context.Background(), db, testStoreOptions(nil))
		require.ErrorIs(t, err, errConninfo, "openStore %s", db)
		_, err = openStoreReadOnly(context.Background(), db, testStoreOptions(nil))
		require.ErrorIs(t, err, errConninfo, "openStoreReadOnly %s", db)
	}
	for _, cmd := range [][]string{{"backup", "/tmp/never.db"}, {"inspect"}, {"purge", "--dry-run"}, {"net", "list"}} {
		_, err := runCLI(t, nil, append(cmd, "--db", "host=db password=Secret_pw dbname=x")...)
		require.ErrorIs(t, err, errConninfo, "%v", cmd)
		assert.NotContains(t, err.Error(), "Secret_pw", "%v", cmd)
	}
	cfg := testConfig("host=db password=Secret_pw dbname=x")
	err := cfg.check(nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "keyword/value")
	assert.NotContains(t, err.Error(), "Secret_pw")
}

// TestPgConnectTimeout: a URL without connect_timeout gets one, so a
// server that never answers cannot hang serve or inspect; one the URL sets
// is kept.
func TestPgConnectTimeout(t *testing.T) {
	t.Parallel()
	cfg, err := pgConfig("postgres://u@127.0.0.1:1/db")
	require.NoError(t, err)
	assert.Equal(t, pgConnectTimeout, cfg.ConnectTimeout)
	cfg, err = pgConfig("postgres://u@127.0.0.1:1/db?connect_timeout=3")
	require.NoError(t, err)
	assert.Equal(t, 3*time.Second, cfg.ConnectTimeout)
}

// TestInspectReadWriteURL: the read-only opens of inspect and net list
// take the URL the nodes use, target_session_attrs=read-write included.
func TestInspectReadWriteURL(t *testing.T) {
	url := newTestSchema(t, needPostgres(t))
	st, err := openStore(context.Background(), url, testStoreOptions(nil))
	require.NoError(t, err)
	require.NoError(t, st.Close())
	ro, err := openStoreReadOnly(context.Background(), url+"&target_session_attrs=read-write", testStoreOptions(nil))
	require.NoError(t, err)
	defer ro.Close()
	var n int
	require.NoError(t, ro.r.QueryRow(`SELECT count(*) FROM requests`).Scan(&n))
}

// TestPostgresForeignTables: a schema that holds another program's table
// of a name the store uses is refused before anything is written to it.
func TestPostgresForeignTables(t *testing.T) {
	url := newTestSchema(t, needPostgres(t))
	db, err := openPostgresDB(url)
	require.NoError(t, err)
	defer db.Close()
	_, err = db.Exec(`CREATE TABLE messages (body text)`)
	require.NoError(t, err)
	_, err = openStore(context.Background(), url, testStoreOptions(nil))
	require.Error(t, err)
	assert.Contains(t, err.Error(), "already holds tables named messages")
	assert.Contains(t, err.Error(), "search_path")
	var tables int
	require.NoError(t, db.QueryRow(`SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()`).Scan(&tables))
	assert.Equal(t, 1, tables, "nothing written beside the other program's table")
}

// TestPostgresReadFaults: a read that meets PostgreSQL's failure gets the
// status a write would: 503 for a connection ended by an administrator or
// a database that cannot be reached, 507 for a full disk; any other error
// of PostgreSQL's stays a 500.
func TestPostgresReadFaults(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err    error
		status int
	}{
		{&pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}, http.StatusServiceUnavailable},
		{fmt.Errorf("read: %w", &pgconn.PgError{Code: "08006"}), http.StatusServiceUnavailable},
		{&pgconn.PgError{Code: "25006"}, http.StatusServiceUnavailable},
		{&pgconn.PgError{Code: "53100"}, http.StatusInsufficientStorage},
		{&pgconn.PgError{Code: "40P01"}, http.StatusServiceUnavailable},
	} {
		e := asAPIError(tc.err)
		require.NotNil(t, e, "%v", tc.err)
		assert.Equal(t, tc.status, e.Status, "%v", tc.err)
	}
	assert.Nil(t, asAPIError(&pgconn.PgError{Code: "42601"}), "a syntax error is the relay's own: 500")
}

// TestPostgresNoSuchSchema: a search_path that names no schema the role
// may use is said so, not met with a scan error.
func TestPostgresNoSuchSchema(t *testing.T) {
	url := needPostgres(t)
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	_, err := openStore(context.Background(), url+sep+"search_path=no_such_schema_c2cvia", testStoreOptions(nil))
	require.Error(t, err)
	assert.Contains(t, err.Error(), `no schema of the search_path "no_such_schema_c2cvia" exists`)
}

// TestPostgresSchemeAnyCase: a URL whose scheme is in capitals opens the
// database it names, as the lowercase one does (RFC 3986: schemes are
// case-insensitive).
func TestPostgresSchemeAnyCase(t *testing.T) {
	url := newTestSchema(t, needPostgres(t))
	for _, scheme := range []string{"POSTGRES", "PostgreSQL"} {
		upper := scheme + strings.TrimPrefix(url, "postgres")
		st, err := openStore(context.Background(), upper, testStoreOptions(nil))
		require.NoError(t, err, scheme)
		require.NoError(t, st.Close())
	}
}
