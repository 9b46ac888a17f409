// The store's file as an operator meets it: one relay per store, the
// errors a bad --db gets, the file's mode, another program's database, and
// inspect by a user who may not write beside the store.

package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestOneRelayPerStore: a second `serve` on a store another relay serves
// exits at once, naming the other's pid; inspect and purge work beside the
// relay; once the first relay is killed (kill -9: the kernel drops its
// lock), a new relay starts on the store.
func TestOneRelayPerStore(t *testing.T) {
	t.Parallel()
	dbPath := filepath.Join(t.TempDir(), "relay.db")
	first := startRelayProcess(t, dbPath)
	rel := &testRelay{t: t, URL: first.URL}
	tok, _ := rel.login("one")
	rid := rel.push(tok, map[string]any{"simEndpoint": "/kept"})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	second := exec.CommandContext(ctx, os.Args[0], "serve", "--addr", "127.0.0.1:0", "--db", dbPath)
	second.Env = append(os.Environ(), "C2CVIA_TEST_AS_RELAY=1")
	out, err := second.CombinedOutput()
	require.Error(t, err, "a second relay started on the store:\n%s", out)
	require.NoError(t, ctx.Err(), "the second relay did not exit at once")
	assert.Contains(t, string(out), fmt.Sprintf("another relay (pid %d) is serving the store %s: stop it first", first.cmd.Process.Pid, dbPath))
	assert.NotContains(t, string(out), "listening on")

	// In one process too (the lock is per open file, not per process).
	cfg := testConfig(dbPath)
	_, err = startRelay(context.Background(), cfg, nil, io.Discard, io.Discard)
	if assert.Error(t, err) {
		assert.Contains(t, err.Error(), "is serving the store "+dbPath)
	}

	summary, err := runCLI(t, nil, "inspect", "--db", dbPath)
	require.NoError(t, err)
	assert.Contains(t, summary, "one")
	_, err = runCLI(t, nil, "purge", "--db", dbPath, "--dry-run")
	require.NoError(t, err)

	first.kill(t)
	next := startRelayProcess(t, dbPath)
	rel = &testRelay{t: t, URL: next.URL}
	assert.Equal(t, "queued", rel.get("/api/v1/client/check", map[string][]string{"token": {tok}, "rid": {rid}}).str("status"))
}

// TestServeStartupErrors: what serve says about a --db or --addr it cannot
// use, and that it leaves nothing behind.
func TestServeStartupErrors(t *testing.T) {
	t.Parallel()
	serveErr := func(t *testing.T, args ...string) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		err := run(ctx, append([]string{"serve", "--addr", "127.0.0.1:0"}, args...), func(string) string { return "" }, io.Discard, io.Discard)
		require.Error(t, err)
		require.NoError(t, ctx.Err(), "serve did not fail at once")
		return err
	}

	t.Run("missing folder", func(t *testing.T) {
		dir := t.TempDir()
		db := filepath.Join(dir, "missing", "relay.db")
		err := serveErr(t, "--db", db)
		assert.Equal(t, fmt.Sprintf("--db %s: the folder %s does not exist: create it (mkdir -p %[2]s) or give another --db",
			db, filepath.Join(dir, "missing")), err.Error())
		assertDirEmpty(t, dir)
	})

	t.Run("folder is a file", func(t *testing.T) {
		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, "file"), nil, 0o600))
		err := serveErr(t, "--db", filepath.Join(dir, "file", "relay.db"))
		assert.Contains(t, err.Error(), "is not a folder")
	})

	t.Run("another program's database", func(t *testing.T) {
		db := filepath.Join(t.TempDir(), "app.db")
		other, err := sql.Open("sqlite", db)
		require.NoError(t, err)
		_, err = other.Exec(`CREATE TABLE notes (body TEXT); INSERT INTO notes VALUES ('keep me')`)
		require.NoError(t, err)
		require.NoError(t, other.Close())
		before, err := os.ReadFile(db)
		require.NoError(t, err)

		err = serveErr(t, "--db", db)
		assert.Contains(t, err.Error(), db+" is another program's SQLite database")
		assert.Contains(t, err.Error(), "c2cvia leaves it as it is; give another --db")
		after, err := os.ReadFile(db)
		require.NoError(t, err)
		assert.Equal(t, before, after, "the file was changed (tables added, or switched to WAL)")
		_, err = os.Stat(db + "-wal")
		assert.ErrorIs(t, err, os.ErrNotExist)

		_, err = runCLI(t, nil, "purge", "--db", db)
		assert.ErrorContains(t, err, "another program's SQLite database")
		_, err = runCLI(t, nil, "inspect", "--db", db)
		assert.Error(t, err)
	})

	t.Run("not SQLite", func(t *testing.T) {
		db := filepath.Join(t.TempDir(), "notes.txt")
		require.NoError(t, os.WriteFile(db, bytes.Repeat([]byte("not a database "), 100), 0o600))
		err := serveErr(t, "--db", db)
		assert.Contains(t, err.Error(), db+" is not a SQLite database")
	})

	t.Run("read-only folder", func(t *testing.T) {
		dir := otherUserDir(t)
		require.NoError(t, os.Chmod(dir, 0o555))
		out, err := runAsOtherUser(t, "serve", "--addr", "127.0.0.1:0", "--db", filepath.Join(dir, "relay.db"))
		require.Error(t, err, out)
		assert.Contains(t, out, "cannot write in the folder "+dir)
		assert.Contains(t, out, "the relay's user needs to write there")
		assertDirEmpty(t, dir)
	})
}

// TestServeListeningLine: bound to every interface, serve prints a URL a
// browser opens (localhost, not [::]) and says it is every interface.
func TestServeListeningLine(t *testing.T) {
	t.Parallel()
	var stdout syncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	db := filepath.Join(t.TempDir(), "relay.db")
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"serve", "--addr", ":0", "--db", db}, func(string) string { return "" }, &stdout, io.Discard)
	}()
	defer func() { cancel(); <-done }()
	var line string
	waitFor(t, 30*time.Second, func() bool { line = stdout.String(); return strings.Contains(line, "\n") }, "the listening line")
	assert.Regexp(t, `^c2cvia listening on http://localhost:\d+ \(every interface; store `+regexpQuote(db)+`\)\n$`, line)
	base := strings.Fields(strings.TrimPrefix(line, "c2cvia listening on "))[0]
	waitHealthy(t, base)
}

func regexpQuote(s string) string {
	return strings.NewReplacer(`.`, `\.`, `/`, `/`, `(`, `\(`, `)`, `\)`).Replace(s)
}

// TestStoreFileMode: a new store, its WAL, shared-memory and lock files
// are 0600 whatever the umask: the store holds forwarded Authorization and
// Cookie headers.
func TestStoreFileMode(t *testing.T) {
	t.Parallel()
	onlySQLite(t)
	old := syscall.Umask(0o022) // the usual one; the test process's own may be tighter
	defer syscall.Umask(old)
	r := newTestRelay(t)
	tok, _ := r.login("mode")
	r.push(tok, map[string]any{"simEndpoint": "/x"})
	for _, suffix := range []string{"", "-wal", "-shm", lockSuffix} {
		fi, err := os.Stat(r.DBPath + suffix)
		if assert.NoError(t, err, suffix) {
			assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "mode of %s", r.DBPath+suffix)
		}
	}
}

// TestInspectWithoutWriteAccess: a user who may read the store but not
// write beside it (another account than the relay's) can inspect it.
func TestInspectWithoutWriteAccess(t *testing.T) {
	t.Parallel()
	dir := otherUserDir(t)
	db := filepath.Join(dir, "relay.db")
	base, stop := startRun(t, map[string]string{"C2CVIA_ADDR": "127.0.0.1:0"}, "serve", "--db", db)
	rel := &testRelay{t: t, URL: base}
	rel.login("readable")
	require.NoError(t, stop()) // the relay is gone: its WAL is folded in and removed
	require.NoError(t, os.Chmod(db, 0o644))
	require.NoError(t, os.Chmod(dir, 0o555))
	before, err := os.ReadFile(db)
	require.NoError(t, err)

	out, err := runAsOtherUser(t, "inspect", "--db", db)
	require.NoError(t, err, out)
	assert.Contains(t, out, "readable")
	after, err := os.ReadFile(db)
	require.NoError(t, err)
	assert.Equal(t, before, after)
}

// otherUserDir is a folder the user of runAsOtherUser can reach: t.TempDir
// with its parents opened to everyone (as /var/lib is).
func otherUserDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	require.NoError(t, os.Chmod(filepath.Dir(dir), 0o755))
	require.NoError(t, os.Chmod(dir, 0o755))
	t.Cleanup(func() { _ = os.Chmod(dir, 0o755) }) // so that TempDir can remove it
	return dir
}

// runAsOtherUser runs the program in a child process as a user that owns
// none of the test's files: nobody (65534) when the tests run as root
// (CI), else the test's own user, for whom the files' modes hold anyway.
// It returns stdout and stderr together.
func runAsOtherUser(t *testing.T, args ...string) (string, error) {
	t.Helper()
	bin := os.Args[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var cmd *exec.Cmd
	if os.Geteuid() == 0 {
		// nobody cannot run the test binary where go test built it (0700).
		binDir := otherUserDir(t)
		copyFile(t, bin, filepath.Join(binDir, "c2cvia.test"), 0o755)
		cmd = exec.CommandContext(ctx, filepath.Join(binDir, "c2cvia.test"), args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	} else {
		cmd = exec.CommandContext(ctx, bin, args...)
	}
	cmd.Env = append(os.Environ(), "C2CVIA_TEST_AS_RELAY=1")
	out, err := cmd.CombinedOutput()
	require.NoError(t, ctx.Err(), "%v did not end within 30s:\n%s", args, out)
	return string(out), err
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(to, b, mode))
}

// TestBackupWhileServing: `c2cvia backup` copies a store the relay is
// serving and writing, to a new 0600 file, and a relay started on that
// copy has everything acknowledged before it.
func TestBackupWhileServing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	db, dest := filepath.Join(dir, "relay.db"), filepath.Join(dir, "backup.db")
	env := map[string]string{"C2CVIA_ADDR": "127.0.0.1:0"}
	base, stop := startRun(t, env, "serve", "--db", db)
	rel := &testRelay{t: t, URL: base}
	tok, _ := rel.login("saved")
	rid := rel.push(tok, map[string]any{"simEndpoint": "/saved"})

	out, err := runCLI(t, nil, "backup", "--db", db, dest)
	require.NoError(t, err)
	assert.Regexp(t, `^backed up .*relay\.db to .*backup\.db \(\d+ bytes\)\n$`, out)
	fi, err := os.Stat(dest)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	rel.push(tok, map[string]any{"simEndpoint": "/after the backup"})
	_, err = runCLI(t, nil, "backup", "--db", db, dest)
	assert.ErrorContains(t, err, "exists: backup writes a new file only")
	require.NoError(t, stop())

	base, _ = startRun(t, env, "serve", "--db", dest)
	rel = &testRelay{t: t, URL: base}
	assert.Equal(t, "queued", ridStatus(t, rel, tok, rid))
	assert.Equal(t, 1, countRows(t, dest, "requests"), "as of the backup")
}
