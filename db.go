// The store: SQLite through modernc.org/sqlite (no cgo), in WAL mode. This
// file opens, migrates and closes it, and holds its errors and prepared
// statements. Every write goes through the one writer (writer.go); reads run
// on a separate pool and never wait for it. Each concern keeps its queries
// beside the Go that uses them: tokens.go, requests.go, messages.go,
// purge.go, inspect.go; the status rule is in status.go.

package main

import (
	"context"
	"database/sql"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	_ "modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

//go:embed schema.sql
var schemaV1 string

//go:embed schema_v2.sql
var schemaV2 string

//go:embed schema_v3.sql
var schemaV3 string

//go:embed schema_v4.sql
var schemaV4 string

//go:embed schema_v5.sql
var schemaV5 string

//go:embed schema_v6.sql
var schemaV6 string

//go:embed schema_v7.sql
var schemaV7 string

//go:embed schema_v8.sql
var schemaV8 string

// The store's errors: what it refuses, in its own terms. The HTTP edge
// (errors.go) gives each its status and code; the store knows neither.
var (
	errNotFound     = errors.New("no such request")
	errAnswered     = errors.New("the request was already answered")
	errExpired      = errors.New("the request was not answered within its time to live")
	errFailed       = errors.New("the request was handed out too many times without an answer")
	errLeaseLost    = errors.New("the lease ran out")
	errCancelled    = errors.New("the request was withdrawn by its caller")
	errAborted      = errors.New("the streamed answer's lease ran out before its last part")
	errNoStream     = errors.New("the request has no streamed answer to continue")
	errUnknownToken = errors.New("no such token")
	errTokenExpired = errors.New("the token has expired")
	errWrongKey     = errors.New("the net is claimed by another key")
	errKeyTooShort  = errors.New("a key that claims a net must be at least 16 characters")
	errUnknownPeer  = errors.New("no such peer in the net")
	errQueueFull    = errors.New("the net's queue is full")
	errNetFull      = errors.New("the net has as many logins as allowed")
	errTooManySubs  = errors.New("the login has as many subscriptions as allowed")
	errNotClaimed   = errors.New("the net is not claimed")
	errCursorAhead  = errors.New("the cursor is past the newest message of this store")
	errStoreClosed  = errors.New("the store is closed")
	errStoreFull    = errors.New("the store is at its storage budget")
	errNetStoreFull = errors.New("the net is at its storage budget")

	// The budgets of who sent a request (budget.go, which also wraps
	// errNetStoreFull, errQueueFull and errAddrStoreFull for a gateway's).
	errAddrStoreFull     = errors.New("the client address's requests and peer messages are at its storage budget")
	errUnservedStoreFull = errors.New("no SimServer polls the net, and its requests are at the budget of such a net")

	// What the file system or another process refuses a write (storeFault).
	errDiskFull        = errors.New("the disk that holds the store is full")
	errStoreBusy       = errors.New("another process holds the store's write lock")
	errStoreUnwritable = errors.New("the store cannot be written")
)

// storeFault gives a write's failure in SQLite's own terms the store's
// error for it: SQLITE_FULL is errDiskFull, BUSY and LOCKED (a purge
// holding the lock past busy_timeout) errStoreBusy, IOERR, READONLY and
// CANTOPEN errStoreUnwritable. On PostgreSQL, disk_full (53100) is
// errDiskFull and read_only_sql_transaction (25006: a standby, or a
// database made read-only) errStoreUnwritable. Anything else passes
// unchanged.
func storeFault(err error) error {
	if err := pgFault(err); err != nil {
		return err
	}
	var coded interface{ Code() int }
	if err == nil || !errors.As(err, &coded) {
		return err
	}
	switch coded.Code() & 0xff { // the primary code of an extended one
	case sqlite3.SQLITE_FULL:
		return fmt.Errorf("%w: %v", errDiskFull, err)
	case sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED:
		return fmt.Errorf("%w: %v", errStoreBusy, err)
	case sqlite3.SQLITE_IOERR, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN:
		return fmt.Errorf("%w: %v", errStoreUnwritable, err)
	}
	return err
}

// isWriteFault reports a failure of the store's file, not of the write:
// what /healthz reports.
func isWriteFault(err error) bool {
	return errors.Is(err, errDiskFull) || errors.Is(err, errStoreUnwritable)
}

// migrations are the schema steps; step i brings user_version from i to i+1.
// A shipped step never changes: add a new one.
var migrations = []string{schemaV1, schemaV2, schemaV3, schemaV4, schemaV5, schemaV6, schemaV7, schemaV8}

// storeOptions are the lifetimes and limits the store enforces. The
// lifetimes come from the relay's flags (config.storeOptions); the store has
// no defaults of its own for them.
type storeOptions struct {
	ReqTTL      time.Duration   // unanswered request: then expired
	ResTTL      time.Duration   // answered, expired or failed: then deleted
	TokenTTL    time.Duration   // login token lifetime
	MsgTTL      time.Duration   // peer message retention
	MaxAttempts int             // deliveries before a request is failed
	ClaimTTL    time.Duration   // a net unused this long loses its claim; 0: never
	MaxQueue    int             // queued requests per net; 0: no limit
	MaxPeers    int             // logins per net; 0: no limit
	MaxSubs     int             // subscription rows per login; 0: no limit
	MaxStore    int64           // bytes the store's file may use (its pages in use); 0: no limit
	MaxNetStore int64           // payload bytes one net may store (net_usage); 0: no limit
	MsgCache    int64           // bytes of recent peer messages kept in memory, all nets together; 0: 64 MiB
	Sync        string          // "normal" or "full": PRAGMA synchronous
	Clock       clockwork.Clock // every time the store reads; nil: the real clock

	// MustExist refuses a missing file or one that is not a store, rather
	// than making it one (purge, inspect). Such a store applies the
	// lifetimes its relay recorded (settings), not those given here.
	MustExist bool

	// Owner is the relay that serves the store (serve): it records its
	// lifetimes in it for purge and inspect, and turns a store made before
	// incremental vacuum into one that gives free pages back.
	Owner bool

	// LifetimesFrom says where the lifetimes above came from, once the
	// store is open: lifetimesRecorded or lifetimesDefaults.
	LifetimesFrom string

	// CheckpointEvery is how often the WAL is copied into the database
	// file, when anything was written: 1 s keeps the WAL small (a second of
	// writes) without a checkpoint per commit. 0: 1 s.
	CheckpointEvery time.Duration

	// WALLimit is the WAL's size in frames (pages) past which the
	// checkpointer empties it with a TRUNCATE checkpoint. 0: 4096 frames,
	// 16 MiB of 4 KiB pages.
	WALLimit int

	// LaterWait is how long writes nobody waits for (writeLater) may wait
	// for a write to share a commit with: 5 ms, more than the gap between
	// one exchange's end and the next one's pushreq, and nothing to a write
	// whose loss in a crash costs a repeat. 0: 5 ms.
	LaterWait time.Duration

	// The budgets of who sent a request (budget.go). MaxAddrStore: sim_req
	// bytes and peer message data one client address (addrKey) may have
	// stored, all nets together (msgbudget.go). MaxUnservedStore: sim_req
	// bytes a net may store while it is not served, no SimServer having
	// polled it within ServedWithin (servedWithin; 0: no net is served).
	// ViaAddrShare: the part of a net's gateway queue and gateway bytes, and
	// of its SimClients' queue (addrqueue.go), one address may take (0 or 1:
	// all of them). Bytes 0: no limit.
	MaxAddrStore     int64
	MaxUnservedStore int64
	ServedWithin     time.Duration
	ViaAddrShare     float64
}

// check refuses options the store cannot keep, and fills in the tuning
// knobs left at zero.
func (o *storeOptions) check() error {
	if o.ReqTTL <= 0 || o.ResTTL <= 0 || o.TokenTTL <= 0 || o.MsgTTL <= 0 || o.MaxAttempts < 1 {
		return fmt.Errorf("store: lifetimes must be positive and max attempts at least 1: %+v", *o)
	}
	if o.Sync != "normal" && o.Sync != "full" {
		return fmt.Errorf("store: sync must be normal or full, not %q", o.Sync)
	}
	if o.Clock == nil {
		o.Clock = clockwork.NewRealClock()
	}
	if o.CheckpointEvery == 0 {
		o.CheckpointEvery = time.Second
	}
	if o.WALLimit == 0 {
		o.WALLimit = 4096
	}
	if o.LaterWait == 0 {
		o.LaterWait = 5 * time.Millisecond
	}
	return nil
}

type store struct {
	opts  storeOptions
	clock clockwork.Clock // opts.Clock
	w     *sql.DB         // one connection: every write
	r     *sql.DB         // a pool: reads
	ckpt  *sql.DB         // one connection: WAL checkpoints; on PostgreSQL the readers
	pg    bool            // the store is a PostgreSQL database (postgres.go), not a SQLite file
	q     statements
	sp    struct{ save, rollback, release *sql.Stmt } // the savepoint around each write of a batch

	// version is the schema version: the newest, except for a read-only
	// store that no relay of this version has opened yet (inspect).
	version int

	ops        chan *writeOp
	mu         sync.RWMutex // held for reading while sending on ops; Close takes it to stop
	closed     bool
	quit       chan struct{}
	background sync.WaitGroup // the writer and the checkpointer

	tokens   sync.Map     // string(token hash) -> token: logins in use, up to maxCachedTokens
	nTokens  atomic.Int64 // entries in tokens
	maxToks  int64        // maxCachedTokens; tests lower it
	netKeys  sync.Map     // net -> key hash
	lastPoll sync.Map     // net -> int64 ms last written to nets.last_poll_at
	seen     sync.Map     // string(token hash) -> *lastSeen, up to maxCachedTokens
	nSeen    atomic.Int64 // entries in seen
	msgs     *msgCache    // the recent peer messages of each net
	busiest  sync.Map     // net -> busiestSeen: the address that filled it, while its logins do not change

	queued        atomic.Int64  // writes submitted and not yet committed or failed
	commits       atomic.Int64  // transactions committed by the writer
	writes        atomic.Int64  // write operations in them
	checkpoints   atomic.Int64  // WAL checkpoints run
	walResets     atomic.Int64  // TRUNCATE checkpoints that emptied a WAL past WALLimit
	walFull       atomic.Bool   // the checkpointer saw the WAL past WALLimit
	queueReads    atomic.Int64  // reads of a request's or a queue's state (what long polls look at)
	leases        leaseTimes    // when a lease in the store may run out, per net
	fresh         freshRequests // SimClients' requests pending, for their owners' first wait
	msgReads      atomic.Int64  // reads of peer messages from SQL, not from the cache
	receiverReads atomic.Int64  // reads of a cached multicast's receivers (loadReceivers)
	subsRefused   atomic.Int64  // subscribes refused at --max-subs, for the metrics
	loginsShared  atomic.Int64  // logins that took the slot of an address holding more (createToken)

	used    atomic.Int64 // bytes of the file's pages in use, as the checkpointer last measured them
	pending atomic.Int64 // payload bytes written since that measure

	counts storeCounts                 // what the store holds, for quotas and metrics
	hooks  atomic.Pointer[storeHooks]  // observers, for the metrics; nil: none
	events atomic.Pointer[storeEvents] // observers, for the log; nil: none

	janitor struct { // on PostgreSQL: the connection that holds the janitor's lock (janitorTurn)
		mu   sync.Mutex
		conn *sql.Conn
	}

	// fault is the last commit's failure of the file (isWriteFault), nil
	// once a commit succeeds: what /healthz reports.
	fault atomic.Pointer[error]
	// commitFault, when set, fails every commit with what it returns: the
	// tests' full disk.
	commitFault atomic.Pointer[func() error]
}

// openStore opens (creating and migrating as needed) the store at path and
// starts its writer.
func openStore(ctx context.Context, path string, opts storeOptions) (*store, error) {
	if err := opts.check(); err != nil {
		return nil, err
	}
	if err := checkDB(path); err != nil {
		return nil, err
	}
	if isPostgresURL(path) {
		if opts.MustExist { // purge, net: never make nor upgrade a store
			if err := checkPostgresStore(ctx, path); err != nil {
				return nil, err
			}
		}
		return openPostgresStore(ctx, path, opts)
	}
	// WAL: readers never block the writer. busy_timeout: another process (an
	// operator's purge) may hold the write lock for a moment. synchronous:
	// NORMAL survives a killed process (the WAL is in the OS); FULL also
	// survives power loss, at one fsync per commit.
	//
	// No automatic checkpoint on the writer: SQLite would run it inside a
	// commit, fsync there, and every write in the batch would wait (4 ms at
	// p99.9 here); the checkpointer does it on its own connection instead.
	pragmas := "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(5000)&_pragma=synchronous(" + opts.Sync + ")"
	if opts.MustExist {
		if _, err := os.Stat(path); err != nil {
			return nil, fmt.Errorf("no store at %s: %w", path, err)
		}
	} else if err := createStoreFile(path); err != nil {
		return nil, err
	}
	// Check on a plain connection: the writer's pragmas would turn any
	// file into a WAL database before its version is read.
	version, _, err := probeStore(ctx, path, opts.MustExist)
	if err != nil {
		return nil, err
	}
	if opts.MustExist && version < len(migrations) {
		// Only serve upgrades a store: a newer purge or net command run
		// beside an older relay would leave it a schema it cannot read.
		return nil, fmt.Errorf("the store %s is at schema step %d and this c2cvia knows step %d: "+
			"start this version's c2cvia serve once to upgrade it, or use the c2cvia that serves it", path, version, len(migrations))
	}
	w, err := sql.Open("sqlite", path+pragmas+"&_pragma=wal_autocheckpoint(0)&_txlock=immediate")
	if err != nil {
		return nil, err
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	if err := migrate(ctx, w, path); err != nil {
		w.Close()
		return nil, err
	}
	if err := settle(ctx, w, path, &opts); err != nil {
		w.Close()
		return nil, err
	}
	r, err := sql.Open("sqlite", path+pragmas+"&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return nil, err
	}
	sizeReaders(r)
	r.SetConnMaxLifetime(0)
	ckpt, err := sql.Open("sqlite", path+pragmas)
	if err != nil {
		w.Close()
		r.Close()
		return nil, err
	}
	ckpt.SetMaxOpenConns(1)

	return finishOpen(ctx, path, &store{opts: opts, clock: opts.Clock, w: w, r: r, ckpt: ckpt,
		maxToks: maxCachedTokens, version: len(migrations)})
}

// finishOpen prepares the statements of a migrated store, counts what it
// holds, and starts its writer (and on SQLite its checkpointer). name is
// the store's path or redacted URL, for errors. On failure it closes the
// store's databases.
func finishOpen(ctx context.Context, name string, s *store) (_ *store, err error) {
	s.ops = make(chan *writeOp, 4*maxBatch)
	s.quit = make(chan struct{})
	defer func() {
		if err != nil {
			s.q.close()
			for _, stmt := range []*sql.Stmt{s.sp.save, s.sp.rollback, s.sp.release} {
				if stmt != nil {
					stmt.Close()
				}
			}
			s.closeDBs()
			err = fmt.Errorf("open store %s: %w", name, err)
		}
	}()
	if err := s.q.prepare(ctx, s.w, s.r); err != nil {
		return nil, err
	}
	for stmt, text := range map[**sql.Stmt]string{&s.sp.save: `SAVEPOINT op`, &s.sp.rollback: `ROLLBACK TO op`, &s.sp.release: `RELEASE op`} {
		if *stmt, err = s.w.PrepareContext(ctx, text); err != nil {
			return nil, err
		}
	}
	// Nothing older than the newest message is cached: reads below it go
	// to SQL until they catch up.
	var lastID int64
	if err := s.q.lastMessageID.QueryRowContext(ctx).Scan(&lastID); err != nil {
		return nil, err
	}
	if err := s.count(ctx, s.w); err != nil {
		return nil, err
	}
	s.msgs = newMsgCache(lastID, int(s.opts.MsgCache))
	// Other nodes write to a shared store: its messages and leases are read
	// from it, not from what this node remembers writing.
	s.msgs.off, s.leases.shared, s.fresh.off = s.pg, s.pg, s.pg
	if err := s.measure(ctx); err != nil {
		return nil, err
	}
	if s.pg {
		for range pgWriters {
			s.background.Go(s.writeEach)
		}
		s.background.Go(s.measurer)
	} else {
		s.background.Go(s.writer)
		s.background.Go(s.checkpointer)
	}
	return s, nil
}

// sizeReaders gives a store's pool of readers its size: one connection a
// CPU, at least 4.
func sizeReaders(r *sql.DB) {
	readers := max(4, runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(readers)
	r.SetMaxIdleConns(readers)
}

func (s *store) closeDBs() error {
	if s.pg {
		s.releaseJanitor()
		return errors.Join(s.r.Close(), s.w.Close())
	}
	return errors.Join(s.r.Close(), s.ckpt.Close(), s.w.Close())
}

// openStoreReadOnly opens an existing store for reading only (inspect). It
// never creates a file and refuses one that is not a c2cvia store. It needs
// no write access: without a relay on the store, one that may not write
// beside it reads it as immutable. On PostgreSQL its connections are
// read-only (openPostgresReadOnly).
func openStoreReadOnly(ctx context.Context, path string, opts storeOptions) (*store, error) {
	if err := checkDB(path); err != nil {
		return nil, err
	}
	if isPostgresURL(path) {
		return openPostgresReadOnly(ctx, path, opts)
	}
	if opts.Clock == nil {
		opts.Clock = clockwork.NewRealClock()
	}
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("no store at %s: %w", path, err)
	}
	version, mode, err := probeStore(ctx, path, true)
	if err != nil {
		return nil, err
	}
	r, err := sql.Open("sqlite", "file:"+path+"?"+mode+"&_pragma=busy_timeout(5000)&_pragma=query_only(1)")
	if err != nil {
		return nil, err
	}
	if err := loadLifetimes(ctx, r, version, &opts); err != nil {
		r.Close()
		return nil, fmt.Errorf("read store %s: %w", path, err)
	}
	return &store{opts: opts, clock: opts.Clock, r: r, version: version}, nil
}

// migrate brings the schema to the newest version, one step per
// transaction. A new store gives its free pages back to the file system
// (auto_vacuum INCREMENTAL, set before its first table; the janitor
// reclaims them).
func migrate(ctx context.Context, db *sql.DB, path string) error {
	var version int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return fmt.Errorf("read store %s: %w", path, err)
	}
	if version > len(migrations) {
		return fmt.Errorf("%s is not a c2cvia store this version can read (schema version %d, known up to %d)",
			path, version, len(migrations))
	}
	if version == 0 {
		if _, err := db.ExecContext(ctx, `PRAGMA auto_vacuum = INCREMENTAL`); err != nil {
			return fmt.Errorf("open store %s: %w", path, err)
		}
	}
	for ; version < len(migrations); version++ {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, migrations[version]); err != nil {
			tx.Rollback()
			return fmt.Errorf("open store %s: schema step %d: %w", path, version+1, err)
		}
		if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, version+1)); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

// Lifetimes the serving relay records in the store (settings), in ms but
// max_attempts.
var lifetimeSettings = []struct {
	name string
	ms   func(*storeOptions) *time.Duration // nil: max_attempts
}{
	{"req_ttl_ms", func(o *storeOptions) *time.Duration { return &o.ReqTTL }},
	{"res_ttl_ms", func(o *storeOptions) *time.Duration { return &o.ResTTL }},
	{"token_ttl_ms", func(o *storeOptions) *time.Duration { return &o.TokenTTL }},
	{"msg_ttl_ms", func(o *storeOptions) *time.Duration { return &o.MsgTTL }},
	{"max_attempts", nil},
	{"claim_ttl_ms", func(o *storeOptions) *time.Duration { return &o.ClaimTTL }}, // 0: never
}

// settle finishes opening a writable store once it is migrated. The relay
// that serves it (Owner) records its lifetimes, and turns on incremental
// vacuum in a store made before it (one VACUUM, which rewrites the file:
// seconds for hundreds of MB, once). Anyone else (purge) takes the
// lifetimes the relay recorded, so it removes and marks what the relay
// would.
func settle(ctx context.Context, db *sql.DB, path string, opts *storeOptions) error {
	if !opts.Owner {
		if err := loadLifetimes(ctx, db, len(migrations), opts); err != nil {
			return fmt.Errorf("open store %s: %w", path, err)
		}
		return nil
	}
	var autoVacuum int
	if err := db.QueryRowContext(ctx, `PRAGMA auto_vacuum`).Scan(&autoVacuum); err != nil {
		return fmt.Errorf("open store %s: %w", path, err)
	}
	if autoVacuum != 2 { // 2: INCREMENTAL
		if _, err := db.ExecContext(ctx, `PRAGMA auto_vacuum = INCREMENTAL`); err != nil {
			return fmt.Errorf("open store %s: %w", path, err)
		}
		if _, err := db.ExecContext(ctx, `VACUUM`); err != nil {
			return fmt.Errorf("open store %s: turn on incremental vacuum: %w", path, err)
		}
	}
	return recordLifetimes(ctx, db, path, opts, func(tx *sql.Tx) error {
		// The message ids of this run start past a gap (msgIDGap). No row
		// yet: no id was ever given, so no reader holds a cursor.
		_, err := tx.ExecContext(ctx, `UPDATE sqlite_sequence SET seq = seq + ? WHERE name = 'messages'`, msgIDGap)
		return err
	})
}

// recordLifetimes records the serving relay's lifetimes in the store's
// settings, then runs also in the same transaction.
func recordLifetimes(ctx context.Context, db *sql.DB, path string, opts *storeOptions, also func(*sql.Tx) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	for _, ls := range lifetimeSettings {
		v := int64(opts.MaxAttempts)
		if ls.ms != nil {
			v = ls.ms(opts).Milliseconds()
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO settings (name, value) VALUES (?, ?)
			ON CONFLICT (name) DO UPDATE SET value = excluded.value`, ls.name, v); err != nil {
			return fmt.Errorf("open store %s: record the lifetimes: %w", path, err)
		}
	}
	if err := also(tx); err != nil {
		return fmt.Errorf("open store %s: %w", path, err)
	}
	opts.LifetimesFrom = lifetimesRecorded
	return tx.Commit()
}

// settingsStep is the schema step that adds the settings table.
const settingsStep = 5

// msgIDGap is how far message ids jump at each start of the relay that
// serves a store: a store restored from a backup would otherwise give
// again the ids its lost messages had, and a reader whose cursor is among
// them would skip the new messages that get them. After the jump a cursor
// from the lost messages is behind every new id (so the reader misses
// nothing new) unless more than 2^20 messages were lost; one past the
// store's highest id is refused (409 cursor_ahead: start over). 2^20 a
// start leaves ids below 2^53, exact in JavaScript, for 2^33 starts.
const msgIDGap = 1 << 20

// LifetimesFrom values: where a store's lifetimes come from.
const (
	lifetimesRecorded = "store"    // the serving relay's, as it recorded them
	lifetimesDefaults = "defaults" // no relay of this version recorded any: serve's defaults
)

// loadLifetimes sets opts' lifetimes to those recorded in the store, if a
// relay recorded them; else it leaves them and marks them as defaults.
func loadLifetimes(ctx context.Context, db *sql.DB, version int, opts *storeOptions) error {
	opts.LifetimesFrom = lifetimesDefaults
	if version < settingsStep {
		return nil
	}
	found := 0
	err := eachRow(ctx, db, `SELECT name, value FROM settings`, nil, func(rows *sql.Rows) error {
		var name string
		var v int64
		if err := rows.Scan(&name, &v); err != nil {
			return err
		}
		for _, ls := range lifetimeSettings {
			switch {
			case ls.name != name || v < 0 || v == 0 && ls.name != "claim_ttl_ms":
			case ls.ms == nil:
				opts.MaxAttempts, found = int(v), found+1
			default:
				*ls.ms(opts), found = time.Duration(v)*time.Millisecond, found+1
			}
		}
		return nil
	})
	if found == len(lifetimeSettings) {
		opts.LifetimesFrom = lifetimesRecorded
	}
	return err
}

// Close stops the writer after the writes already queued, then closes the
// database; the last connection out checkpoints and removes the WAL.
func (s *store) Close() error {
	if s.w == nil { // read-only
		return s.r.Close()
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.quit)
	s.mu.Unlock()
	s.background.Wait()
	s.q.close()
	for _, stmt := range []*sql.Stmt{s.sp.save, s.sp.rollback, s.sp.release} {
		stmt.Close()
	}
	return s.closeDBs()
}

// ms is the store's time unit: Unix milliseconds.
func (s *store) nowMS() int64 { return s.now().UnixMilli() }

// now is the store's clock: the injected one in tests.
func (s *store) now() time.Time { return s.clock.Now() }

// eachRow runs query, on a database or in a transaction, and calls fn for
// every row.
func eachRow(ctx context.Context, db queryer, query string, args []any, fn func(*sql.Rows) error) error {
	rows, err := db.QueryContext(ctx, query, args...)
	return scanEach(rows, err, fn)
}

// scanEach calls fn for every row of a query's result and closes it.
func scanEach(rows *sql.Rows, err error, fn func(*sql.Rows) error) error {
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// eachStmtRow runs a prepared query and calls fn for every row.
func eachStmtRow(ctx context.Context, stmt *sql.Stmt, args []any, fn func(*sql.Rows) error) error {
	rows, err := stmt.QueryContext(ctx, args...)
	return scanEach(rows, err, fn)
}

// storeHooks let the metrics observe the store without the store knowing
// about them. Times are the store's clock, in ms.
type storeHooks struct {
	committed func(took time.Duration, writes int)     // a group commit
	handedOut func(rid string, createdMS, nowMS int64) // a request's first hand-out
	answered  func(rid string, nowMS int64)            // a request answered
}

// storeEvents tell the relay's log what the store did, after the commit.
type storeEvents struct {
	claimed func(net string) // a first key claimed net
}

// statements are prepared once per store. Writer statements run inside the
// writer's transaction through tx.StmtContext, reusing the prepared form.
type statements struct {
	insertToken, insertLogin, claimNet, touchNet,
	insertRequest, leaseQueued, leaseExpired, markDelivered, storeLeased, markPulledRID,
	answer, extend, markPulled, takeUnpulled, requestForNet, claimedKey,
	touchToken, peerInNet, netPeers, subscribedNow, insertMessage, netUsage, dropAnswered,
	idlestLogin, busiestAddr, idlestOfAddr, dropLogin, dropSubscriptions,
	openSubscription, subscribe, unsubscribe, dropEmptySubscription, peerSubscriptions,
	answerHead, appendPart, insertPart, dropParts, keepFrom, extendStream, cancelPending, cancelStream, requestForOwnerW *sql.Stmt // writer

	tokenByHash, netKey, readyState, requestForOwner, hasUnpulled,
	lastMessageID, readMessages, topicReceivers, recentPeers, readParts, watchDone *sql.Stmt // readers
}

// statement is one prepared statement: where it goes, on which database
// (the writer or the readers), and its SQL.
type statement struct {
	stmt **sql.Stmt
	db   *sql.DB
	sql  string
}

func (q *statements) prepare(ctx context.Context, w, r *sql.DB) error {
	for _, s := range q.list(w, r) {
		stmt, err := s.db.PrepareContext(ctx, s.sql)
		if err != nil {
			return err
		}
		*s.stmt = stmt
	}
	return nil
}

// list is every statement: each concern's file holds its own.
func (q *statements) list(w, r *sql.DB) []statement {
	return slices.Concat(tokenStatements(q, w, r), requestStatements(q, w, r), streamStatements(q, w, r), peerStatements(q, w, r), budgetStatements(q, w))
}

func (q *statements) close() {
	for _, s := range q.list(nil, nil) {
		if *s.stmt != nil {
			(*s.stmt).Close()
		}
	}
}

// formatMS renders a store time for clients: RFC 3339 in UTC, milliseconds.
func formatMS(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z07:00")
}
