// The store's file on disk, before SQLite opens it: its folder, its mode
// (0600: it holds forwarded Authorization and Cookie headers), the lock that
// lets one relay at a time serve it, and the checks that refuse a file that
// is not a c2cvia store.

package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/gofrs/flock"
)

// storeAppID is the store's PRAGMA application_id ("c2cv"), written by
// schema step 5: it tells a c2cvia store from another program's SQLite file.
const storeAppID = 0x63326376

// lockSuffix names the lock file beside the store: FILE-lock. It stays
// after the relay stops (removing it would let two relays lock two files of
// the same name); it holds the pid of the relay that last locked it.
const lockSuffix = "-lock"

// lockStore makes this process the only relay serving the store at path,
// until release: a second serve on the same file (a manual run beside the
// systemd unit) would keep its own wake-up signals, and its SimServers and
// readers would miss what the other acknowledges. The lock is flock(2) on
// FILE-lock: the kernel drops it when the process ends, however it ends.
// inspect and purge take no lock: they work beside the relay.
func lockStore(path string) (release func() error, err error) {
	if isPostgresURL(path) { // several nodes serve one database
		return func() error { return nil }, nil
	}
	if err := checkStoreFolder(path); err != nil {
		return nil, err
	}
	lockPath := path + lockSuffix
	fl := flock.New(lockPath, flock.SetPermissions(0o600))
	ok, err := fl.TryLock()
	if err != nil {
		return nil, folderError(path, err)
	}
	if !ok {
		holder := "another relay"
		if b, err := os.ReadFile(lockPath); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
				holder = fmt.Sprintf("another relay (pid %d)", pid)
			}
		}
		return nil, fmt.Errorf("%s is serving the store %s: stop it first (systemctl stop c2cvia), or give this relay another --db; "+
			"inspect and purge work beside it", holder, path)
	}
	// Another descriptor on the lock file: flock belongs to fl's, and
	// closing this one does not release it.
	if err := os.WriteFile(lockPath, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		fl.Close()
		return nil, folderError(path, err)
	}
	return fl.Close, nil
}

// checkStoreFolder refuses a --db whose folder is missing or not a folder,
// with what to do about it rather than SQLite's "unable to open database
// file (14)".
func checkStoreFolder(path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("--db %s: the folder %s does not exist: create it (mkdir -p %s) or give another --db", path, dir, dir)
	case err != nil:
		return folderError(path, err)
	case !fi.IsDir():
		return fmt.Errorf("--db %s: %s is not a folder", path, dir)
	}
	return nil
}

// folderError explains a failure to write beside the store: SQLite needs
// to make FILE-wal and FILE-shm there too.
func folderError(path string, err error) error {
	dir := filepath.Dir(path)
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, syscall.EROFS) {
		return fmt.Errorf("--db %s: cannot write in the folder %s (%v): the relay's user needs to write there, "+
			"for the store and its -wal, -shm and -lock files (chown it to that user), or give another --db", path, dir, err)
	}
	return fmt.Errorf("--db %s: %w", path, err)
}

// createStoreFile makes an empty store file with mode 0600 if there is
// none, whatever the umask: SQLite then opens it as a new database, and
// makes its -wal and -shm files with the same mode.
func createStoreFile(path string) error {
	if err := checkStoreFolder(path); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return folderError(path, err)
	}
	return f.Close()
}

// openOthers reports whether group or others may read the store file at
// path: its mode, when they may.
func openToOthers(path string) (fs.FileMode, bool) {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o077 == 0 {
		return 0, false
	}
	return fi.Mode().Perm(), true
}

// probeStore reads the schema version of the SQLite file at path on a
// plain read-only connection, and the URI parameters that opened it, before any pragma of the store's changes the
// file (journal_mode=WAL would convert another program's database). It
// refuses a file that is not SQLite, another program's database, or a
// store newer than this build; with mustExist also an empty one. A file
// the user cannot write beside (inspect as another user) is read as
// immutable when no relay has it open (no -wal file).
func probeStore(ctx context.Context, path string, mustExist bool) (version int, mode string, err error) {
	mode = "mode=ro"
	version, err = probeStoreWith(ctx, path, mode)
	if isReadOnlyFolder(err) {
		if _, werr := os.Stat(path + "-wal"); errors.Is(werr, fs.ErrNotExist) {
			mode = "mode=ro&immutable=1"
			version, err = probeStoreWith(ctx, path, mode)
		}
	}
	if err != nil {
		if isReadOnlyFolder(err) {
			err = fmt.Errorf("read store %s: %w; a relay is serving it and this user cannot share its -shm file: run as the relay's user (sudo -u c2cvia)", path, err)
		}
		return 0, "", err
	}
	if version > len(migrations) || mustExist && version == 0 {
		return 0, "", fmt.Errorf("%s is not a c2cvia store this version can read (schema version %d, known up to %d)",
			path, version, len(migrations))
	}
	return version, mode, nil
}

func probeStoreWith(ctx context.Context, path, mode string) (int, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?"+mode+"&_pragma=busy_timeout(5000)")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	var version, appID, objects, ours int
	err = db.QueryRowContext(ctx, `SELECT (SELECT user_version FROM pragma_user_version), (SELECT application_id FROM pragma_application_id),
		(SELECT count(*) FROM sqlite_schema), (SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name IN ('nets', 'tokens', 'requests'))`).
		Scan(&version, &appID, &objects, &ours)
	switch {
	case err != nil && strings.Contains(err.Error(), "file is not a database"):
		return 0, fmt.Errorf("%s is not a SQLite database, so not a c2cvia store: give another --db", path)
	case err != nil:
		return 0, fmt.Errorf("read store %s: %w", path, err)
	case appID == storeAppID:
		return version, nil
	case appID != 0, version == 0 && objects > 0, version > 0 && ours < 3:
		return 0, fmt.Errorf("%s is another program's SQLite database (application id %d, schema version %d, %d tables and indexes), "+
			"not a c2cvia store: c2cvia leaves it as it is; give another --db", path, appID, version, objects)
	}
	return version, nil
}

// isReadOnlyFolder reports SQLite's refusal to read a WAL database whose
// -wal and -shm it cannot create (SQLITE_READONLY_DIRECTORY and kin).
func isReadOnlyFolder(err error) bool {
	return err != nil && strings.Contains(err.Error(), "readonly database")
}
