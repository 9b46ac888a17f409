// A store that cannot be written: a full disk, a file the relay may not
// write, another process holding the write lock. Writes answer 507 or 503
// with a code and write nothing; /healthz says why.

package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sqlite3 "modernc.org/sqlite/lib"
)

// sqliteCode is an error with SQLite's result code, as the driver's are.
type sqliteCode int

func (c sqliteCode) Error() string { return fmt.Sprintf("sqlite result code %d", int(c)) }
func (c sqliteCode) Code() int     { return int(c) }

// failCommits makes every commit of r's store fail with err until the
// returned func is called.
func failCommits(r *testRelay, err error) (restore func()) {
	f := func() error { return err }
	r.store.commitFault.Store(&f)
	return func() { r.store.commitFault.Store(nil) }
}

// TestDiskFull: with the disk full every write is 507 disk_full and
// /healthz is 503 with the reason; once there is room again, /healthz finds
// out by itself and writes work.
func TestDiskFull(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, _ := r.login("full")
	requests := r.count("requests")

	restore := failCommits(r, sqliteCode(sqlite3.SQLITE_FULL))
	rep := r.postJSON("/api/v1/client/pushreq", tok, map[string]any{"sim_req": map[string]any{"simEndpoint": "/x"}})
	assert.Equal(t, http.StatusInsufficientStorage, rep.Status, string(rep.Body))
	assert.Equal(t, "disk_full", rep.errorCode())
	rep = r.get("/api/v1/client/login", map[string][]string{"net": {"full"}})
	assert.Equal(t, http.StatusInsufficientStorage, rep.Status, string(rep.Body))
	assert.Equal(t, requests, r.count("requests"), "nothing written")

	rep = r.get("/healthz", nil)
	assert.Equal(t, http.StatusServiceUnavailable, rep.Status)
	assert.JSONEq(t, `{"status":"unavailable","reason":"the disk that holds the store is full"}`, string(rep.Body))

	restore()
	rep = r.get("/healthz", nil)
	assert.Equal(t, http.StatusOK, rep.Status, "no write since: /healthz tries one")
	assert.JSONEq(t, `{"status":"ok"}`, string(rep.Body))
	r.push(tok, map[string]any{"simEndpoint": "/x"})
}

// TestStoreUnwritable: an I/O error or a read-only file is 503
// store_unavailable, and /healthz says the store cannot be written.
func TestStoreUnwritable(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, _ := r.login("ro")
	restore := failCommits(r, sqliteCode(sqlite3.SQLITE_READONLY))
	defer restore()
	rep := r.postJSON("/api/v1/client/pushreq", tok, map[string]any{"sim_req": map[string]any{"simEndpoint": "/x"}})
	assert.Equal(t, http.StatusServiceUnavailable, rep.Status, string(rep.Body))
	assert.Equal(t, "store_unavailable", rep.errorCode())
	rep = r.get("/healthz", nil)
	assert.Equal(t, http.StatusServiceUnavailable, rep.Status)
	assert.JSONEq(t, `{"status":"unavailable","reason":"the store cannot be written"}`, string(rep.Body))
}

// TestPostgresFaults: PostgreSQL's own disk_full is 507 disk_full and its
// read-only transaction 503 store_unavailable, as SQLite's FULL and
// READONLY are, and /healthz says so.
func TestPostgresFaults(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		code, errCode, health string
		status                int
	}{
		{"53100", "disk_full", "the disk that holds the store is full", http.StatusInsufficientStorage},
		{"25006", "store_unavailable", "the store cannot be written", http.StatusServiceUnavailable},
	} {
		t.Run(c.code, func(t *testing.T) {
			t.Parallel()
			r := newTestRelay(t)
			tok, _ := r.login("pg")
			restore := failCommits(r, &pgconn.PgError{Severity: "ERROR", Code: c.code, Message: "injected"})
			rep := r.postJSON("/api/v1/client/pushreq", tok, map[string]any{"sim_req": map[string]any{"simEndpoint": "/x"}})
			assert.Equal(t, c.status, rep.Status, string(rep.Body))
			assert.Equal(t, c.errCode, rep.errorCode())
			rep = r.get("/healthz", nil)
			assert.Equal(t, http.StatusServiceUnavailable, rep.Status)
			assert.JSONEq(t, `{"status":"unavailable","reason":"`+c.health+`"}`, string(rep.Body))
			restore()
			r.push(tok, map[string]any{"simEndpoint": "/x"})
		})
	}
}

// TestSQLiteFull: SQLite's own SQLITE_FULL (the file at its largest, as
// PRAGMA max_page_count makes it) is 507 disk_full, not 500.
func TestSQLiteFull(t *testing.T) {
	t.Parallel()
	onlySQLite(t)
	r := newTestRelay(t)
	tok, _ := r.login("pages")
	var pages int
	require.NoError(t, r.store.w.QueryRow(`PRAGMA page_count`).Scan(&pages))
	_, err := r.store.w.Exec(fmt.Sprintf(`PRAGMA max_page_count = %d`, pages))
	require.NoError(t, err)
	body := strings.Repeat("x", 8000) // two pages a request: past the last free page at once
	var rep reply
	for range 50 {
		rep = r.postJSON("/api/v1/client/pushreq", tok, map[string]any{"sim_req": map[string]any{"simEndpoint": "/x", "simBody": body}})
		if rep.Status != http.StatusCreated {
			break
		}
	}
	assert.Equal(t, http.StatusInsufficientStorage, rep.Status, string(rep.Body))
	assert.Equal(t, "disk_full", rep.errorCode())
}

// TestStoreBusy: while another process holds the store's write lock past
// busy_timeout (5 s), a write is 503 store_busy with Retry-After, not 500.
func TestStoreBusy(t *testing.T) {
	t.Parallel()
	onlySQLite(t)
	r := newTestRelay(t)
	tok, _ := r.login("busy")
	other, err := sql.Open("sqlite", r.DBPath+"?_pragma=busy_timeout(5000)")
	require.NoError(t, err)
	defer other.Close()
	conn, err := other.Conn(context.Background())
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.ExecContext(context.Background(), `BEGIN IMMEDIATE`)
	require.NoError(t, err)
	rep := r.postJSON("/api/v1/client/pushreq", tok, map[string]any{"sim_req": map[string]any{"simEndpoint": "/x"}})
	assert.Equal(t, http.StatusServiceUnavailable, rep.Status, string(rep.Body))
	assert.Equal(t, "store_busy", rep.errorCode())
	assert.Equal(t, "1", rep.Header.Get("Retry-After"))
	_, err = conn.ExecContext(context.Background(), `ROLLBACK`)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, r.get("/healthz", nil).Status, "a busy store is no fault of the file")
	r.push(tok, map[string]any{"simEndpoint": "/x"})
}

// TestHealthzDiskFree: a disk with less than 16 MiB free makes /healthz
// 503 with the reason, though a write may still find room in the WAL's own
// pages; with room, or when the space cannot be read, it is 200.
func TestHealthzDiskFree(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	for _, c := range []struct {
		free   int64
		known  bool
		status int
	}{{1 << 20, true, http.StatusServiceUnavailable}, {minDiskFree, true, http.StatusOK}, {0, false, http.StatusOK}} {
		h := handleHealthz(r.store, func() (int64, bool) { return c.free, c.known })
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/healthz", nil))
		assert.Equal(t, c.status, rec.Code, "%d bytes free (known %v): %s", c.free, c.known, rec.Body)
		if c.status != http.StatusOK {
			assert.Contains(t, rec.Body.String(), "the disk that holds the store is full (1024 KiB free)")
		}
	}
	free, ok := diskFree(t.TempDir())
	assert.True(t, ok, "the free space of a real folder can be read here")
	assert.Positive(t, free)
}
