package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"
)

// testPostgresEnv names the PostgreSQL server the suite runs against
// besides SQLite: a URL (postgres://…), set by .ci/run. With it set, every
// test relay and store that is about behaviour, not about SQLite's file,
// is a fresh schema of that database.
const testPostgresEnv = "C2CVIA_TEST_POSTGRES"

// testPostgresURL is the server's URL, or "" when the suite runs on SQLite.
func testPostgresURL() string { return os.Getenv(testPostgresEnv) }

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

// onlySQLite skips a test about SQLite's file when the suite runs on
// PostgreSQL.
func onlySQLite(t testing.TB) {
	t.Helper()
	if testPostgresURL() != "" {
		t.Skip("about the SQLite store's file")
	}
}

// inspectReadsPostgres reports whether inspect and net list can read the
// suite's store: not yet a PostgreSQL one (openStoreReadOnly opens a
// SQLite file only).
func inspectReadsPostgres() bool { return testPostgresURL() == "" }

// needsInspect skips a test about inspect or net list when the suite runs
// on PostgreSQL, which those commands do not read yet.
func needsInspect(t testing.TB) {
	t.Helper()
	if !inspectReadsPostgres() {
		t.Skip("inspect and net list read only a SQLite store yet")
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
	url := testPostgresURL()
	if url == "" {
		t.Skip("needs " + testPostgresEnv)
	}
	url = newTestSchema(t, url)
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
