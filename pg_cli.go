// The operator's commands (inspect, purge, net) on a PostgreSQL store:
// the checks that stand for a SQLite file's (is it a c2cvia store, of a
// version this build reads) and inspect's read-only connections.

package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	neturl "net/url"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/jonboulle/clockwork"
)

// probePostgres reads the c2cvia schema version of the database at url
// (in its search_path) without writing: it refuses a database with no
// c2cvia store in it and one newer than this build. With upgraded, it
// also refuses an older one: only serve upgrades a store.
func probePostgres(ctx context.Context, db *sql.DB, url string, upgraded bool) (int, error) {
	name := redactURL(url)
	var schema string
	var table sql.NullString
	err := db.QueryRowContext(ctx, `SELECT coalesce(current_schema(), ''), CAST(to_regclass('c2cvia_schema') AS text)`).Scan(&schema, &table)
	if err != nil {
		return 0, fmt.Errorf("read store %s: %w", name, err)
	}
	if !table.Valid {
		return 0, fmt.Errorf("no c2cvia store in %s: the schema %q has no c2cvia tables (serve --db on it makes one; "+
			"search_path in the URL chooses the schema)", name, schema)
	}
	var version int
	switch err := db.QueryRowContext(ctx, `SELECT version FROM c2cvia_schema`).Scan(&version); {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return 0, fmt.Errorf("read store %s: %w", name, err)
	}
	switch {
	case version == 0:
		return 0, fmt.Errorf("no c2cvia store in %s: its schema %q was never set up (serve --db on it makes one)", name, schema)
	case version > len(pgMigrations):
		return 0, fmt.Errorf("%s is not a c2cvia store this version can read (schema version %d, known up to %d): use the c2cvia that serves it",
			name, version, len(pgMigrations))
	case upgraded && version < len(pgMigrations):
		return 0, fmt.Errorf("the store %s is at schema step %d and this c2cvia knows step %d: "+
			"start this version's c2cvia serve once to upgrade it, or use the c2cvia that serves it", name, version, len(pgMigrations))
	}
	return version, nil
}

// checkPostgresStore is probePostgres on a connection of its own, for the
// commands that then open the store to write (purge, net release|rekey):
// they never make a store nor upgrade one.
func checkPostgresStore(ctx context.Context, url string) error {
	db, err := openPostgresReadOnlyDB(url)
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = probePostgres(ctx, db, url, true)
	return err
}

// openPostgresReadOnlyDB opens a pool on url whose every connection starts
// with default_transaction_read_only on: PostgreSQL refuses any write on
// it, whatever the statement.
func openPostgresReadOnlyDB(url string) (*sql.DB, error) {
	cfg, err := pgConfig(url)
	if err != nil {
		return nil, parseURLError(url, err)
	}
	cfg.RuntimeParams["default_transaction_read_only"] = "on"
	// Reading needs no primary: target_session_attrs=read-write would
	// refuse every connection, each one read-only by the line above.
	cfg.ValidateConnect = nil
	db := sql.OpenDB(rebindConnector{stdlib.GetConnector(*cfg)})
	db.SetMaxOpenConns(2)
	return db, nil
}

// openPostgresReadOnly is openStoreReadOnly on a PostgreSQL database
// (inspect, net list): read-only connections, no migration, no writer.
func openPostgresReadOnly(ctx context.Context, url string, opts storeOptions) (*store, error) {
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	r, err := openPostgresReadOnlyDB(url)
	if err != nil {
		return nil, err
	}
	if _, err := probePostgres(ctx, r, url, false); err != nil {
		r.Close()
		return nil, err
	}
	if err := loadLifetimes(ctx, r, settingsStep, &opts); err != nil {
		r.Close()
		return nil, fmt.Errorf("read store %s: %w", redactURL(url), err)
	}
	// The PostgreSQL schema's one step is the SQLite schema's newest:
	// inspect reads it as such.
	return &store{opts: opts, clock: opts.Clock, r: r, pg: true, version: len(migrations)}, nil
}

// dbFlagUsage is what every --db flag takes.
const dbFlagUsage = "the store: a SQLite file, or a postgres:// URL (postgres://USER@HOST/DB?search_path=SCHEMA; the password in $PGPASSWORD or ~/.pgpass rather than the URL, which ps shows)"

// storeName is db as messages show it: a URL without its password.
func storeName(db string) string {
	if isPostgresURL(db) {
		return redactURL(db)
	}
	return db
}

// parseURLError is pgx's refusal of url without the URL: pgx redacts the
// password of a URL it cannot parse as best it can, and a password with an
// unencoded @ gets past it. What pgx found wrong follows the URL it quotes.
func parseURLError(url string, err error) error {
	msg := err.Error()
	var pce *pgconn.ParseConfigError
	if errors.As(err, &pce) {
		if i := strings.LastIndex(msg, "`: "); i >= 0 {
			msg = msg[i+3:]
		} else {
			msg = "not a connection URL"
		}
	}
	if u, perr := neturl.Parse(url); perr == nil {
		if pw, ok := u.User.Password(); ok && pw != "" {
			msg = strings.ReplaceAll(msg, pw, "xxxxx")
		}
	}
	if strings.Contains(msg, "://") { // a URL quoted again (net/url's errors)
		msg = "not a connection URL pgx can read"
	}
	return fmt.Errorf("--db %s: %s", redactURL(url), msg)
}
