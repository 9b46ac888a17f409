// The store on PostgreSQL (--db postgres://…), through pgx's database/sql
// driver: the same queries as on SQLite, their ? and ?N placeholders
// rewritten to PostgreSQL's $N once, when each is prepared or run
// (rebindConn). What differs between the engines lives in the store's
// dialect switches (s.pg); this file opens, migrates and configures the
// PostgreSQL store.

package main

import (
	"context"
	"database/sql"
	"database/sql/driver"
	_ "embed"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/stdlib"
)

//go:embed schema_pg.sql
var schemaPG string

// pgMigrations are the PostgreSQL schema's steps; step i brings
// c2cvia_schema.version from i to i+1.
var pgMigrations = []string{schemaPG}

// pgMigrateLock is the advisory lock key that serialises migrations: nodes
// starting at once on an empty database migrate it once.
const pgMigrateLock = 0x63326376 // "c2cv"

// isPostgresURL reports whether db names a PostgreSQL database
// (postgres:// or postgresql://, as libpq's URIs) rather than a SQLite file.
func isPostgresURL(db string) bool {
	return strings.HasPrefix(db, "postgres://") || strings.HasPrefix(db, "postgresql://")
}

// redactURL is url without its password, for messages and logs.
func redactURL(url string) string {
	cfg, err := pgconn.ParseConfig(url)
	if err == nil && cfg.Password == "" { // one pgconn refuses may still hold one
		return url
	}
	return urlWithoutPassword(url) // escaped, or in the query, the password is not ":"+it+"@"
}

// openPostgresDB opens a database/sql pool on url whose statements may use
// SQLite's placeholders.
func openPostgresDB(url string) (*sql.DB, error) {
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, fmt.Errorf("--db %s: %w", redactURL(url), err)
	}
	return sql.OpenDB(rebindConnector{stdlib.GetConnector(*cfg)}), nil
}

// migratePostgres brings the database's schema to the newest step, under
// an advisory lock so that nodes starting at once migrate it once.
func migratePostgres(ctx context.Context, db *sql.DB, name string) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("open store %s: %w", name, err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SELECT pg_advisory_lock(?)`, pgMigrateLock); err != nil {
		return fmt.Errorf("open store %s: %w", name, err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), `SELECT pg_advisory_unlock(?)`, pgMigrateLock)
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS c2cvia_schema (version bigint NOT NULL)`); err != nil {
		return fmt.Errorf("open store %s: %w", name, err)
	}
	var version int
	switch err := conn.QueryRowContext(ctx, `SELECT version FROM c2cvia_schema`).Scan(&version); {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := conn.ExecContext(ctx, `INSERT INTO c2cvia_schema (version) VALUES (0)`); err != nil {
			return fmt.Errorf("open store %s: %w", name, err)
		}
	case err != nil:
		return fmt.Errorf("open store %s: %w", name, err)
	}
	if version > len(pgMigrations) {
		return fmt.Errorf("%s is not a c2cvia store this version can read (schema version %d, known up to %d)",
			name, version, len(pgMigrations))
	}
	for ; version < len(pgMigrations); version++ {
		tx, err := conn.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, pgMigrations[version]); err != nil {
			tx.Rollback()
			return fmt.Errorf("open store %s: schema step %d: %w", name, version+1, err)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE c2cvia_schema SET version = ?`, version+1); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// openPostgresStore is openStore on a PostgreSQL database: the writer has
// one connection of its own (group commits, as on SQLite), readers a pool.
// Long polls hold no connection: they wait on the hub.
func openPostgresStore(ctx context.Context, url string, opts storeOptions) (*store, error) {
	name := redactURL(url)
	w, err := openPostgresDB(url)
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: %w", name, err)
	}
	if err := migratePostgres(ctx, w, name); err != nil {
		w.Close()
		return nil, err
	}
	if opts.Owner {
		// No gap in the message ids, as a SQLite store's starts have
		// (msgIDGap): PostgreSQL's backups restore a sequence with its rows.
		err = recordLifetimes(ctx, w, name, &opts, func(*sql.Tx) error { return nil })
	} else {
		err = loadLifetimes(ctx, w, settingsStep, &opts)
	}
	if err != nil {
		w.Close()
		return nil, err
	}
	r, err := openPostgresDB(url)
	if err != nil {
		w.Close()
		return nil, err
	}
	readers := max(4, runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(readers)
	r.SetMaxIdleConns(readers)
	return finishOpen(ctx, name, &store{opts: opts, clock: opts.Clock, w: w, r: r, ckpt: r, pg: true,
		maxToks: maxCachedTokens, version: len(migrations)})
}

// rebindConnector wraps pgx's connector so that every statement may be
// written with SQLite's placeholders (rebind).
type rebindConnector struct{ driver.Connector }

func (c rebindConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &rebindConn{Conn: conn.(*stdlib.Conn)}, nil
}

// rebindConn is pgx's connection with its statements rebound.
type rebindConn struct{ *stdlib.Conn }

func (c *rebindConn) Prepare(query string) (driver.Stmt, error) {
	return c.Conn.Prepare(rebind(query))
}

func (c *rebindConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return c.Conn.PrepareContext(ctx, rebind(query))
}

func (c *rebindConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	return c.Conn.ExecContext(ctx, rebind(query), args)
}

func (c *rebindConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	return c.Conn.QueryContext(ctx, rebind(query), args)
}

// pgFragments are the pieces of the store's SQL that PostgreSQL spells
// otherwise, each given once as the store's code writes it for SQLite. A
// fragment that drifts from its query fails the PostgreSQL suite.
var pgFragments = strings.NewReplacer(
	// messages.go's lastMessageIDSQL: the highest message id ever given.
	lastMessageIDSQL, `(SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM messages_id_seq)`,
	// streams.go's watchDone: the rids of a JSON array.
	`json_each(?1) AS j`, `json_array_elements_text(CAST(?1 AS json)) AS j(value)`,
	// streams.go's readParts: PostgreSQL's substr of bytea takes integers.
	`substr(data, ?2 - "offset" + 1, ?3)`, `substr(data, CAST(?2 - "offset" + 1 AS integer), CAST(?3 AS integer))`,
	// inspect.go: a sim_req's method and endpoint.
	`json_extract(sim_req, '$.simMethod')`, `(CAST(sim_req AS json) ->> 'simMethod')`,
	`json_extract(sim_req, '$.simEndpoint')`, `(CAST(sim_req AS json) ->> 'simEndpoint')`,
	// budget.go's measure: the database's size in bytes, as pages of 1.
	measureSQL, `SELECT pg_database_size(current_database()), 0, 1`,
	// counts.go's syncCounts: PostgreSQL has no counter of commits by
	// others, and other nodes write: every janitor run counts again.
	`PRAGMA data_version`, `SELECT -1`,
	// purge.go's shrink: PostgreSQL's own vacuum gives space back.
	`PRAGMA freelist_count`, `SELECT 0`,
	// counts.go: SQLite's index hint; PostgreSQL's planner picks its own.
	`INDEXED BY requests_done`, ``,
	// purge.go's sqlLimit: no limit.
	`LIMIT -1`, `LIMIT NULL`,
	// Scalar max and min (SQLite's) are greatest and least.
	`max(?3, ?4)`, `greatest(?3, ?4)`,
	`min(expires_at, ?)`, `least(expires_at, ?)`,
)

// rebound caches rebind's results: the store's statements are a few
// hundred texts, rewritten once each.
var rebound sync.Map // string -> string

// rebind rewrites SQLite's SQL as PostgreSQL's: its fragments
// (pgFragments), and its placeholders: ?N is $N, and
// each bare ? is the next number after the highest one yet, as SQLite
// numbers them. Quoted strings and identifiers are left alone.
func rebind(query string) string {
	if q, ok := rebound.Load(query); ok {
		return q.(string)
	}
	orig := query
	query = pgFragments.Replace(query)
	var b strings.Builder
	b.Grow(len(query) + 8)
	highest := 0
	for i := 0; i < len(query); i++ {
		c := query[i]
		switch c {
		case '\'', '"':
			end := strings.IndexByte(query[i+1:], c)
			if end < 0 {
				b.WriteString(query[i:])
				i = len(query)
				continue
			}
			b.WriteString(query[i : i+end+2])
			i += end + 1
		case '?':
			j := i + 1
			for j < len(query) && query[j] >= '0' && query[j] <= '9' {
				j++
			}
			n := highest + 1
			if j > i+1 {
				n, _ = strconv.Atoi(query[i+1 : j])
			}
			highest = max(highest, n)
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			i = j - 1
		default:
			b.WriteByte(c)
		}
	}
	q := b.String()
	rebound.Store(orig, q)
	return q
}
