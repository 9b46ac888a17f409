// The bench on PostgreSQL (--postgres URL): besides each row on the
// in-process SQLite relay, the same scenario on relays that serve one
// PostgreSQL database, with one node and with two. Each of those rows runs
// on a fresh schema of that database, dropped afterwards, so that no row
// sees another's requests, and on relays started for it alone.

package bench

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/jackc/pgx/v5"
)

// The stores a row runs on, as its STORE column and its JSON "store".
const (
	storeSQLite = "sqlite"
	storePG1    = "postgres 1 node"
	storePG2    = "postgres 2 nodes"
)

// rowStores are the stores each scenario and client count runs on: the
// in-process SQLite relay alone, or, with --postgres, that and PostgreSQL
// with one and two nodes.
func (o options) rowStores() []string {
	if o.Postgres == "" {
		return []string{""}
	}
	return []string{storeSQLite, storePG1, storePG2}
}

// validPostgresURL checks --postgres before anything starts.
func validPostgresURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "postgres" && u.Scheme != "postgresql" {
		return fmt.Errorf("--postgres must be a postgres:// URL, such as postgres://user@localhost:5432/db, not %q", s)
	}
	return nil
}

// redactedURL is s without its password, for the table's heading.
func redactedURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "the --postgres database"
	}
	return u.Redacted()
}

// pgSchema is a fresh schema in the database at base; URL is base with
// search_path set to it, as a relay's --db.
type pgSchema struct {
	base, name, URL string
}

// newPGSchema creates an empty schema, named prefix and random letters, in
// the database at base.
func newPGSchema(ctx context.Context, base, prefix string) (*pgSchema, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	s := &pgSchema{base: base, name: prefix + "_" + lowerRandom(10)}
	if err := pgExec(ctx, base, `CREATE SCHEMA `+s.name); err != nil {
		return nil, fmt.Errorf("create schema %s: %w", s.name, err)
	}
	q := u.Query()
	q.Set("search_path", s.name)
	u.RawQuery = q.Encode()
	s.URL = u.String()
	return s, nil
}

// drop removes the schema and everything in it.
func (s *pgSchema) drop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := pgExec(ctx, s.base, `DROP SCHEMA `+s.name+` CASCADE`); err != nil {
		return fmt.Errorf("drop schema %s: %w", s.name, err)
	}
	return nil
}

// pgExec runs one statement on a connection of its own.
func pgExec(ctx context.Context, dbURL, sql string) error {
	conn, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	_, err = conn.Exec(ctx, sql)
	return err
}

// lowerRandom is n random characters of a-z, for a schema's name (which
// PostgreSQL folds to lower case unquoted).
func lowerRandom(n int) string {
	b := []byte(randomName(n))
	for i, c := range b {
		b[i] = 'a' + c%26
	}
	return string(b[:n])
}

// onPostgres runs one row on nodes relays in this process on a fresh
// schema of --postgres: the first node (b.base) takes the callers, the
// last (b.servers) the SimServers and the peers that wait, so that with
// two nodes every exchange crosses from one to the other. The relays and
// the schema are gone when it returns.
func (b *bench) onPostgres(ctx context.Context, nodes int, run func() (*result, error)) (res *result, err error) {
	schema, err := newPGSchema(ctx, b.opts.Postgres, "c2cvia_bench")
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, schema.drop()) }()
	var started []Server
	defer func() {
		for _, s := range started {
			if serr := s.Stop(); serr != nil {
				err = errors.Join(err, fmt.Errorf("stop a PostgreSQL node: %w", serr))
			}
		}
	}()
	for range nodes {
		s, err := b.relays.Start(ctx, b.relayArgs(schema.URL), b.stderr)
		if err != nil {
			return nil, fmt.Errorf("start a relay on PostgreSQL: %w", err)
		}
		started = append(started, s)
	}
	saved := b.rowNodes
	defer func() { b.rowNodes = saved }()
	b.rowNodes = rowNodes{base: started[0].URL(), servers: started[len(started)-1].URL(), relay: started[0], nodes: started}
	return run()
}
