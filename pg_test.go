package main

import (
	"context"
	"fmt"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

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

// newTestDatabase creates an empty database on the server at url and
// returns url naming it: for a test that measures the database's size,
// which other tests' schemas would change under it.
func newTestDatabase(t testing.TB, url string) string {
	t.Helper()
	db, err := openPostgresDB(url)
	require.NoError(t, err)
	defer db.Close()
	name := fmt.Sprintf("c2cvia_test_%d_%d", os.Getpid(), testSchemas.Add(1))
	_, err = db.ExecContext(context.Background(), `CREATE DATABASE `+name)
	require.NoError(t, err)
	t.Cleanup(func() {
		db, err := openPostgresDB(url)
		if err != nil {
			return
		}
		defer db.Close()
		db.ExecContext(context.Background(), `DROP DATABASE `+name+` WITH (FORCE)`)
	})
	u, err := neturl.Parse(url)
	require.NoError(t, err)
	u.Path = "/" + name
	return u.String()
}

// onlySQLite skips a test about SQLite's file when the suite runs on
// PostgreSQL.
func onlySQLite(t testing.TB) {
	t.Helper()
	if testPostgresURL() != "" {
		t.Skip("about the SQLite store's file")
	}
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
