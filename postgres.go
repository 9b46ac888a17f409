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
	neturl "net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

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
	lower := strings.ToLower(db)
	return strings.HasPrefix(lower, "postgres://") || strings.HasPrefix(lower, "postgresql://")
}

// conninfoWord finds a libpq keyword/value setting (host=… dbname=…).
var conninfoWord = regexp.MustCompile(`(?i)(^|\s)(host|hostaddr|port|dbname|user|password|sslmode|service)\s*=`)

// errConninfo refuses a --db written as libpq's keyword/value string: it
// would otherwise name a SQLite file, password included.
var errConninfo = errors.New("--db looks like a PostgreSQL keyword/value string (host=… dbname=…): give it as a URL, postgres://USER@HOST:PORT/DB?sslmode=…, with the password in $PGPASSWORD or ~/.pgpass")

// checkDB refuses a --db that is neither a postgres:// URL nor a plausible
// SQLite file name; its errors never repeat the value, which may hold a
// password.
func checkDB(db string) error {
	if !isPostgresURL(db) && conninfoWord.MatchString(db) {
		return errConninfo
	}
	return nil
}

// pgConnectTimeout is how long a connection to PostgreSQL may take when
// the URL sets no connect_timeout: a server that accepts the connection
// and never answers would otherwise hang serve and inspect.
const pgConnectTimeout = 10 * time.Second

// pgConfig parses url for pgx, with pgConnectTimeout when it sets none.
func pgConfig(url string) (*pgx.ConnConfig, error) {
	// A scheme is case-insensitive (RFC 3986, 3.1); pgx reads only
	// lowercase ones as URLs.
	if scheme, rest, ok := strings.Cut(url, "://"); ok && isPostgresURL(url) {
		url = strings.ToLower(scheme) + "://" + rest
	}
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		return nil, err
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = pgConnectTimeout
	}
	return cfg, nil
}

// redactedUser and redactedParam find the password of a URL that does
// not parse: after the user, up to the authority's last @; or ?password=.
var (
	redactedUser  = regexp.MustCompile(`^([a-z]+://[^:/@?#]*:)[^/?#]*@`)
	redactedParam = regexp.MustCompile(`([?&]password=)[^&#]*`)
)

// redactURL is url without its password (in its user info, percent-encoded
// or not, or as ?password=), for messages and logs.
func redactURL(url string) string {
	u, err := neturl.Parse(url)
	if err != nil { // what the password may be, without a URL's rules
		return redactedParam.ReplaceAllString(redactedUser.ReplaceAllString(url, "${1}xxxxx@"), "${1}xxxxx")
	}
	changed := false
	if _, ok := u.User.Password(); ok {
		u.User, changed = neturl.UserPassword(u.User.Username(), "xxxxx"), true
	}
	if q := u.Query(); q.Has("password") {
		q.Set("password", "xxxxx")
		u.RawQuery, changed = q.Encode(), true
	}
	if !changed {
		return url
	}
	return u.String()
}

// openPostgresDB opens a database/sql pool on url whose statements may use
// SQLite's placeholders.
func openPostgresDB(url string) (*sql.DB, error) {
	cfg, err := pgConfig(url)
	if err != nil {
		return nil, parseURLError(url, err)
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
	var version int
	var exists bool
	if err := conn.QueryRowContext(ctx, `SELECT to_regclass('c2cvia_schema') IS NOT NULL`).Scan(&exists); err != nil {
		return fmt.Errorf("open store %s: %w", name, err)
	}
	if exists {
		if err := conn.QueryRowContext(ctx, `SELECT version FROM c2cvia_schema`).Scan(&version); err != nil {
			return fmt.Errorf("open store %s: %w", name, err)
		}
	} else {
		// A schema that holds another program's tables of the same names
		// is refused before anything is written to it.
		var schema, clash sql.NullString
		if err := conn.QueryRowContext(ctx, `SELECT current_schema(), (SELECT string_agg(table_name, ', ' ORDER BY table_name)
			FROM information_schema.tables WHERE table_schema = current_schema()
			AND table_name IN ('nets', 'tokens', 'requests', 'messages', 'subscriptions', 'net_usage', 'settings', 'answer_parts'))`).
			Scan(&schema, &clash); err != nil {
			return fmt.Errorf("open store %s: %w", name, err)
		}
		if !schema.Valid { // search_path names no schema the role may use
			var path string
			conn.QueryRowContext(ctx, `SHOW search_path`).Scan(&path)
			return fmt.Errorf("open store %s: no schema of the search_path %q exists, or the role may not use it: "+
				"CREATE SCHEMA it (and GRANT USAGE, CREATE ON SCHEMA it TO the role)", name, path)
		}
		if clash.Valid {
			return fmt.Errorf("open store %s: the schema %q already holds tables named %s: give c2cvia a schema of its own "+
				"(CREATE SCHEMA c2cvia, then ?search_path=c2cvia in the URL)", name, schema.String, clash.String)
		}
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
		if version == 0 {
			if _, err := tx.ExecContext(ctx, `CREATE TABLE c2cvia_schema (version bigint NOT NULL);
				INSERT INTO c2cvia_schema (version) VALUES (0)`); err != nil {
				tx.Rollback()
				return fmt.Errorf("open store %s: %w", name, err)
			}
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

// pgWriters is how many writers a node of a PostgreSQL store runs
// (writeEach): one, so that its writes commit in the order they were
// queued, as SQLite's one writer's do. A write queued and not waited for
// (writeLater: a pulled mark, an answer dropped once read) then commits
// before any write its caller makes next.
const pgWriters = 1

// openPostgresStore is openStore on a PostgreSQL database: its writer
// commits one write at a time, and a pool of readers reads.
// Long polls hold no connection: they wait on the hub.
func openPostgresStore(ctx context.Context, url string, opts storeOptions) (*store, error) {
	name := redactURL(url)
	w, err := openPostgresDB(url)
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(pgWriters)
	w.SetMaxIdleConns(pgWriters)
	if err := w.PingContext(ctx); err != nil {
		w.Close()
		return nil, fmt.Errorf("open store %s: %w", name, err)
	}
	// MustExist (purge, net): openStore checked the schema is this
	// build's; a role that may only read and write rows runs them.
	if !opts.MustExist {
		if err := migratePostgres(ctx, w, name); err != nil {
			w.Close()
			return nil, err
		}
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
	sizeReaders(r)
	// Other nodes write the same rows: no cache of logins (one may be
	// dropped on another node: cacheToken), of claims, or of recent
	// messages.
	return finishOpen(ctx, name, &store{opts: opts, clock: opts.Clock, w: w, r: r, ckpt: r, pg: true,
		maxToks: maxCachedTokens, version: len(migrations)})
}

// Locks a node takes on a net, until its transaction ends, where nodes
// would otherwise race (pg_advisory_xact_lock's first key).
const (
	lockMessages = 1 // a message's id: each net's ids are given in commit order
	lockQuotas   = 2 // a quota's count and the write it admits
)

// lockNet takes lock on net for the rest of tx, on a shared store; on
// SQLite, whose one writer is the lock, it does nothing.
func (s *store) lockNet(ctx context.Context, tx *sql.Tx, lock int32, net string) error {
	if !s.pg {
		return nil
	}
	_, err := tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(CAST(? AS integer), hashtext(CAST(? AS text)))`, lock, net)
	return err
}

// maxTries is how many times the writer runs a write that another node's
// transaction deadlocked with, or that a serialization failure stopped.
const maxTries = 5

// retryable reports PostgreSQL's failures that running the write again
// may cure: deadlock_detected, serialization_failure, lock_not_available.
func retryable(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	switch pgErr.Code {
	case "40P01", "40001", "55P03":
		return true
	}
	return false
}

// pgFault is storeFault for PostgreSQL's failures, nil for any other:
// disk_full is errDiskFull; deadlocks and serialization failures that
// outlived their tries, and too many connections, errStoreBusy; a database
// that refuses writes (read-only, a standby, shutting down) or that
// cannot be reached errStoreUnwritable.
func pgFault(err error) error {
	var pgErr *pgconn.PgError
	var connErr *pgconn.ConnectError
	switch {
	case errors.As(err, &pgErr):
		switch {
		case pgErr.Code == "53100":
			return fmt.Errorf("%w: %v", errDiskFull, err)
		case retryable(err), pgErr.Code == "53300":
			return fmt.Errorf("%w: %v", errStoreBusy, err)
		case pgErr.Code == "25006", strings.HasPrefix(pgErr.Code, "57P"), strings.HasPrefix(pgErr.Code, "08"):
			return fmt.Errorf("%w: %v", errStoreUnwritable, err)
		}
	case errors.As(err, &connErr), errors.Is(err, driver.ErrBadConn):
		return fmt.Errorf("%w: %v", errStoreUnwritable, err)
	}
	return nil
}

// syncQuotas, on a shared store, takes net's quota lock for the rest of
// tx and reads what net's quotas count from the database, where every
// node's writes are: its queued requests (its SimClients' queue and its
// gateway's) and its logins. The counts this node keeps then decide
// --max-queue and --max-peers as on SQLite, and no other node admits into
// net until tx ends. On SQLite it does nothing: the counts are exact.
func (s *store) syncQuotas(ctx context.Context, tx *sql.Tx, net string) error {
	if !s.pg {
		return nil
	}
	if err := s.lockNet(ctx, tx, lockQuotas, net); err != nil {
		return err
	}
	if s.opts.MaxQueue <= 0 && s.opts.MaxPeers <= 0 {
		return nil // the lock alone: --max-net-store reads net_usage under it
	}
	var clients, via, logins int
	err := tx.QueryRowContext(ctx, `SELECT
		(SELECT count(*) FROM requests WHERE net = ?1 AND status = 'queued' AND from_peer <> 'via'),
		(SELECT count(*) FROM requests WHERE net = ?1 AND status = 'queued' AND from_peer = 'via'),
		(SELECT count(*) FROM tokens WHERE net = ?1)`, net).Scan(&clients, &via, &logins)
	if err != nil {
		return err
	}
	c := &s.counts
	c.mu.Lock()
	defer c.mu.Unlock()
	setQueued := func(queue string, n int) {
		c.byStatus[statusQueued] += int64(n - c.queued[queue])
		addTo(c.queued, queue, n-c.queued[queue])
	}
	setQueued(queueOf(net, ""), clients)
	setQueued(queueOf(net, detachedFrom), via)
	addTo(c.tokens, net, logins-c.tokens[net])
	return nil
}

// pgJanitorLock is the advisory lock key of the janitor: one node at a
// time purges.
const pgJanitorLock = 0x63326a61 // "c2ja"

// janitorTurn reports whether this node runs the janitor's purge now. On
// SQLite, always. On PostgreSQL, only the node that holds the janitor's
// advisory lock: the first node that asks takes it, on a connection it
// keeps, and holds it until it stops or that connection is lost; the
// others then take their turn.
func (s *store) janitorTurn(ctx context.Context) bool {
	if !s.pg {
		return true
	}
	j := &s.janitor
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.conn != nil {
		if err := j.conn.PingContext(ctx); err == nil {
			return true
		}
		j.conn.Raw(func(c any) error { return driver.ErrBadConn }) // never back to the pool
		j.conn.Close()
		j.conn = nil
	}
	conn, err := s.r.Conn(ctx)
	if err != nil {
		return false
	}
	var got bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock(?)`, pgJanitorLock).Scan(&got); err != nil || !got {
		conn.Close()
		return false
	}
	j.conn = conn
	return true
}

// releaseJanitor gives the janitor's lock back, as the store closes.
func (s *store) releaseJanitor() {
	j := &s.janitor
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.conn != nil {
		j.conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock(?)`, pgJanitorLock)
		j.conn.Close()
		j.conn = nil
	}
}

// writeEach is a PostgreSQL store's writer: it commits one write at a
// time, in a transaction of its own. Many writes in one transaction, as
// SQLite's one writer commits them, would take the nets' locks and rows in
// no set order, and two nodes' batches would deadlock each other (each
// found only after PostgreSQL's deadlock_timeout, a second); one write
// takes its net's locks first and its rows after.
func (s *store) writeEach() {
	for {
		select {
		case op := <-s.ops:
			s.commit([]*writeOp{op})
		case <-s.quit:
			for { // Close holds no sender any more: drain what was queued
				select {
				case op := <-s.ops:
					s.commit([]*writeOp{op})
				default:
					return
				}
			}
		}
	}
}

// measurer measures the database's size every second, for --max-store:
// the other nodes' writes count from the next measure on.
func (s *store) measurer() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
			s.measure(context.Background())
		}
	}
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
	// budget.go's measure, for --max-store: the payload the store holds,
	// as pages of 1 byte (net_usage's bytes, and loginBytes a login). A
	// database's files keep their size after a DELETE (autovacuum reuses
	// the space), and hold what else the database holds.
	measureSQL, `SELECT CAST((SELECT coalesce(sum(bytes), 0) FROM net_usage) + (SELECT count(*) FROM tokens) * 1024 AS bigint), 0, 1`,
	// counts.go's syncCounts: PostgreSQL has no counter of commits by
	// others, and other nodes write: every janitor run counts again.
	`PRAGMA data_version`, `SELECT -1`,
	// purge.go's shrink: PostgreSQL's own vacuum gives space back.
	`PRAGMA freelist_count`, `SELECT 0`,
	// counts.go: SQLite's index hint; PostgreSQL's planner picks its own.
	`INDEXED BY requests_done`, ``,
	// requests.go's leaseQueued and leaseExpired: the rows leased are
	// locked until the lease commits, and a row another node is leasing
	// is passed over, so no two nodes hand out one request.
	`ORDER BY seq LIMIT ?4`, `ORDER BY seq LIMIT ?4 FOR UPDATE SKIP LOCKED`,
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
