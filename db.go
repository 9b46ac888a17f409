// The store: SQLite through modernc.org/sqlite (no cgo), in WAL mode.
//
// One writer connection runs every write. Writes from concurrent requests
// queue up on a channel and the writer commits them together, each inside
// its own savepoint (group commit): under load many pushreq/pushres share one
// transaction, and a failing write still leaves nothing behind. Reads run on
// a separate pool and never wait for the writer.

package main

import (
	"context"
	"crypto/subtle"
	"database/sql"
	_ "embed"
	"errors"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "modernc.org/sqlite"
)

//go:embed schema.sql
var schemaV1 string

//go:embed schema_v2.sql
var schemaV2 string

// migrations are the schema steps; step i brings user_version from i to i+1.
// A shipped step never changes: add a new one.
var migrations = []string{schemaV1, schemaV2}

// storeOptions are the lifetimes and limits the store enforces.
type storeOptions struct {
	ReqTTL      time.Duration    // unanswered request: then expired
	ResTTL      time.Duration    // answered, expired or failed: then deleted
	TokenTTL    time.Duration    // login token lifetime
	MsgTTL      time.Duration    // peer message retention
	MaxAttempts int              // deliveries before a request is failed
	MaxQueue    int              // queued requests per net; 0: no limit
	MaxPeers    int              // logins per net; 0: no limit
	Sync        string           // "normal" or "full": PRAGMA synchronous
	Now         func() time.Time // the clock; tests inject one

	// MustExist refuses a missing file or one that is not a store, rather
	// than making it one (purge, inspect).
	MustExist bool

	// CheckpointEvery is how often the WAL is copied into the database
	// file, when anything was written: 1 s keeps the WAL small (a second of
	// writes) without a checkpoint per commit.
	CheckpointEvery time.Duration

	// WALLimit is the WAL's size in frames (pages) past which the
	// checkpointer empties it with a TRUNCATE checkpoint.
	WALLimit int

	// LaterWait is how long writes nobody waits for (writeLater) may wait
	// for a write to share a commit with: 5 ms, more than the gap between
	// one exchange's end and the next one's pushreq, and nothing to a write
	// whose loss in a crash costs a repeat.
	LaterWait time.Duration
}

func (o *storeOptions) setDefaults() {
	if o.ReqTTL == 0 {
		o.ReqTTL = 5 * time.Minute
	}
	if o.ResTTL == 0 {
		o.ResTTL = 10 * time.Minute
	}
	if o.TokenTTL == 0 {
		o.TokenTTL = 24 * time.Hour
	}
	if o.MsgTTL == 0 {
		o.MsgTTL = time.Hour
	}
	if o.MaxAttempts == 0 {
		o.MaxAttempts = 5
	}
	if o.Sync == "" {
		o.Sync = "normal"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.CheckpointEvery == 0 {
		o.CheckpointEvery = time.Second
	}
	if o.WALLimit == 0 {
		o.WALLimit = 4096 // frames: 16 MiB of 4 KiB pages
	}
	if o.LaterWait == 0 {
		o.LaterWait = 5 * time.Millisecond
	}
}

type store struct {
	opts storeOptions
	now  func() time.Time
	w    *sql.DB // one connection: every write
	r    *sql.DB // a pool: reads
	ckpt *sql.DB // one connection: WAL checkpoints
	q    statements
	sp   struct{ save, rollback, release *sql.Stmt } // the savepoint around each write of a batch

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

	commits     atomic.Int64 // transactions committed by the writer
	writes      atomic.Int64 // write operations in them
	checkpoints atomic.Int64 // WAL checkpoints run
	walResets   atomic.Int64 // TRUNCATE checkpoints that emptied a WAL past WALLimit
	walFull     atomic.Bool  // the checkpointer saw the WAL past WALLimit
	queueReads  atomic.Int64 // reads of a request's or a queue's state (what long polls look at)
	msgReads    atomic.Int64 // reads of peer messages from SQL, not from the cache

	counts storeCounts                // what the store holds, for quotas and metrics
	hooks  atomic.Pointer[storeHooks] // observers, for the metrics; nil: none
}

// writeOp is one write waiting for the writer: fn runs inside the shared
// transaction under its own savepoint.
type writeOp struct {
	ctx  context.Context // the caller's: if it is done before the write's turn, the write is skipped
	fn   func(ctx context.Context, tx *sql.Tx) error
	done chan error // nil: nobody waits (fire and forget)

	// after, if fn set it and fn succeeded, runs in the writer once the
	// transaction has committed, in batch order, before done is sent: what
	// must follow the store in commit order (the message cache).
	after func()
}

// maxBatch bounds a group commit: 256 writes keep one transaction well under
// a millisecond of work while amortising its commit.
const maxBatch = 256

// openStore opens (creating and migrating as needed) the store at path and
// starts its writer.
func openStore(ctx context.Context, path string, opts storeOptions) (*store, error) {
	opts.setDefaults()
	if opts.Sync != "normal" && opts.Sync != "full" {
		return nil, fmt.Errorf("sync must be normal or full, not %q", opts.Sync)
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
		// Check on a plain connection: the writer's pragmas would turn
		// any file into a WAL database before its version is read.
		probe, err := openStoreReadOnly(ctx, path, opts)
		if err != nil {
			return nil, err
		}
		probe.Close()
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
	r, err := sql.Open("sqlite", path+pragmas+"&_pragma=query_only(1)")
	if err != nil {
		w.Close()
		return nil, err
	}
	readers := max(4, runtime.GOMAXPROCS(0))
	r.SetMaxOpenConns(readers)
	r.SetMaxIdleConns(readers)
	r.SetConnMaxLifetime(0)
	ckpt, err := sql.Open("sqlite", path+pragmas)
	if err != nil {
		w.Close()
		r.Close()
		return nil, err
	}
	ckpt.SetMaxOpenConns(1)

	s := &store{
		opts: opts, now: opts.Now, w: w, r: r, ckpt: ckpt, maxToks: maxCachedTokens, version: len(migrations),
		ops:  make(chan *writeOp, 4*maxBatch),
		quit: make(chan struct{}),
	}
	if err := s.q.prepare(ctx, w, r); err != nil {
		s.closeDBs()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	for stmt, text := range map[**sql.Stmt]string{&s.sp.save: `SAVEPOINT op`, &s.sp.rollback: `ROLLBACK TO op`, &s.sp.release: `RELEASE op`} {
		if *stmt, err = w.PrepareContext(ctx, text); err != nil {
			s.q.close()
			s.closeDBs()
			return nil, fmt.Errorf("open store %s: %w", path, err)
		}
	}
	// Nothing older than the newest message is cached: reads below it go
	// to SQL until they catch up.
	var lastID int64
	err = s.q.lastMessageID.QueryRowContext(ctx).Scan(&lastID)
	if err == nil {
		err = s.count(ctx, w)
	}
	if err != nil {
		s.q.close()
		s.closeDBs()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s.msgs = newMsgCache(lastID)
	s.background.Go(s.writer)
	s.background.Go(s.checkpointer)
	return s, nil
}

func (s *store) closeDBs() error {
	return errors.Join(s.r.Close(), s.ckpt.Close(), s.w.Close())
}

// checkpointer copies the WAL into the database file every
// CheckpointEvery, if anything was committed, without blocking the writer
// (PASSIVE). When a checkpoint has caught up, the next commit starts the WAL
// over, so it stays at about one interval of writes.
func (s *store) checkpointer() {
	t := time.NewTicker(s.opts.CheckpointEvery)
	defer t.Stop()
	done := s.commits.Load()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
		c := s.commits.Load()
		if c == done {
			continue
		}
		var busy, frames, copied int
		if err := s.ckpt.QueryRow(`PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &frames, &copied); err != nil {
			continue
		}
		done = c
		s.checkpoints.Add(1)
		// Under steady load a reader is always in the WAL and a write always
		// follows the checkpoint, so the WAL is never started over and grows
		// without end (a gigabyte in 20 s of busy exchanges). Past WALLimit
		// frames the writer empties it between two commits (truncateWAL).
		if frames > s.opts.WALLimit {
			s.walFull.Store(true)
		}
	}
}

// openStoreReadOnly opens an existing store for reading only (inspect). It
// never creates a file and refuses one that is not a c2cvia store.
func openStoreReadOnly(ctx context.Context, path string, opts storeOptions) (*store, error) {
	opts.setDefaults()
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("no store at %s: %w", path, err)
	}
	r, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)&_pragma=query_only(1)")
	if err != nil {
		return nil, err
	}
	version, err := schemaVersion(ctx, r, path, true)
	if err != nil {
		r.Close()
		return nil, err
	}
	return &store{opts: opts, now: opts.Now, r: r, version: version}, nil
}

// schemaVersion reads the store's schema version and refuses one newer than
// this build knows, or, when mustExist, a file that is no store yet (0).
func schemaVersion(ctx context.Context, db *sql.DB, path string, mustExist bool) (int, error) {
	var version int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
		return 0, fmt.Errorf("read store %s: %w", path, err)
	}
	if version > len(migrations) || mustExist && version == 0 {
		return 0, fmt.Errorf("%s is not a c2cvia store this version can read (schema version %d, known up to %d)",
			path, version, len(migrations))
	}
	return version, nil
}

// migrate brings the schema to the newest version, one step per transaction.
func migrate(ctx context.Context, db *sql.DB, path string) error {
	version, err := schemaVersion(ctx, db, path, false)
	if err != nil {
		return err
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

// write runs fn in the writer's transaction and waits for the commit.
func (s *store) write(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	op := &writeOp{ctx: ctx, fn: fn, done: make(chan error, 1)}
	if err := s.submit(op); err != nil {
		return err
	}
	return <-op.done
}

// writeThen is write for a fn that may return an after func: it runs in the
// writer once the transaction has committed, in commit order, before
// writeThen returns. It does not run when fn fails or the commit does.
func (s *store) writeThen(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) (after func(), err error)) error {
	op := &writeOp{ctx: ctx, done: make(chan error, 1)}
	op.fn = func(ctx context.Context, tx *sql.Tx) error {
		after, err := fn(ctx, tx)
		op.after = after // read by the writer, the goroutine that runs fn
		return err
	}
	if err := s.submit(op); err != nil {
		return err
	}
	return <-op.done
}

// writeLater queues fn without waiting for it. Writes are applied in the
// order they are queued, so a later write sees it; it is committed with the
// next write that is waited for, or alone after LaterWait. For bookkeeping
// whose loss in a crash costs nothing but a repeat (the pulled mark, the
// last poll).
func (s *store) writeLater(fn func(ctx context.Context, tx *sql.Tx) error) {
	_ = s.submit(&writeOp{ctx: context.Background(), fn: fn})
}

func (s *store) submit(op *writeOp) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errStoreClosed
	}
	select {
	case s.ops <- op:
		return nil
	case <-op.ctx.Done():
		return op.ctx.Err()
	}
}

// writer is the single goroutine that writes. It takes whatever writes are
// waiting (up to maxBatch) and commits them as one transaction.
func (s *store) writer() {
	batch := make([]*writeOp, 0, maxBatch)
	for {
		batch = batch[:0]
		select {
		case op := <-s.ops:
			batch = append(batch, op)
		case <-s.quit:
			// Close holds no sender any more: drain what was queued, then stop.
			for {
				select {
				case op := <-s.ops:
					s.commit([]*writeOp{op})
				default:
					return
				}
			}
		}
		batch = s.fill(batch)
		if !slices.ContainsFunc(batch, func(op *writeOp) bool { return op.done != nil }) {
			// Only fire-and-forget writes: they ride with the next write
			// that someone waits for rather than cost a commit of their
			// own (one exchange's pulled mark goes with the next pushreq).
			t := time.NewTimer(s.opts.LaterWait)
			select {
			case op := <-s.ops:
				batch = s.fill(append(batch, op))
			case <-t.C:
			case <-s.quit:
			}
			t.Stop()
		}
		s.commit(batch)
		if s.walFull.Swap(false) {
			s.truncateWAL()
		}
	}
}

// truncateWAL copies the rest of the WAL into the database and empties it.
// It runs on the writer, so no write competes for the lock it needs; it
// waits only for the reads in progress (short), while new reads go to the
// database file. The writes queued meanwhile wait that long.
func (s *store) truncateWAL() {
	if _, err := s.w.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err == nil {
		s.walResets.Add(1)
	}
}

// fill adds the writes already waiting to batch, up to maxBatch.
func (s *store) fill(batch []*writeOp) []*writeOp {
	for len(batch) < maxBatch {
		select {
		case op := <-s.ops:
			batch = append(batch, op)
		default:
			return batch
		}
	}
	return batch
}

// commit runs a batch in one transaction. Each write runs under a savepoint,
// so a failing one is rolled back alone; a failed commit fails them all.
//
// Statements run under a background context, not the caller's: the driver
// answers a cancelled context with sqlite3_interrupt, and an interrupted
// write rolls back the whole transaction, the other callers' writes with it.
// A caller that is gone before its turn is skipped instead.
func (s *store) commit(batch []*writeOp) {
	ctx := context.Background()
	start := time.Now()
	errs := make([]error, len(batch))
	finish := func() {
		for i, op := range batch {
			if op.done != nil {
				op.done <- errs[i]
			}
		}
	}
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		for i := range errs {
			errs[i] = err
		}
		finish()
		return
	}
	defer tx.Rollback()
	single := len(batch) == 1
	for i, op := range batch {
		if err := op.ctx.Err(); err != nil {
			errs[i] = err // the caller is gone: do not write for it
			continue
		}
		if single {
			errs[i] = op.fn(ctx, tx)
			continue
		}
		if _, err := tx.StmtContext(ctx, s.sp.save).ExecContext(ctx); err != nil {
			errs[i] = err
			continue
		}
		if errs[i] = op.fn(ctx, tx); errs[i] != nil {
			_, _ = tx.StmtContext(ctx, s.sp.rollback).ExecContext(ctx)
		}
		_, _ = tx.StmtContext(ctx, s.sp.release).ExecContext(ctx)
	}
	if single && errs[0] != nil {
		finish() // deferred rollback undoes it
		return
	}
	if err := tx.Commit(); err != nil {
		for i := range errs {
			if errs[i] == nil {
				errs[i] = err
			}
		}
		s.counts.stale.Store(true) // the writes counted what did not happen
	} else {
		s.commits.Add(1)
		s.writes.Add(int64(len(batch)))
		for i, op := range batch {
			if errs[i] == nil && op.after != nil {
				op.after()
			}
		}
		if h := s.hooks.Load(); h != nil {
			h.committed(time.Since(start), len(batch))
		}
	}
	finish()
}

// ms is the store's time unit: Unix milliseconds.
func (s *store) nowMS() int64 { return s.now().UnixMilli() }

// token is a logged-in SimClient.
type token struct {
	Hash      []byte
	PeerID    string
	Net       string
	ExpiresAt int64
	MsgFloor  int64 // the highest message id at login: later broadcasts reach it
}

// readOnly reports whether t is a gateway result token: its peer_id is
// "via:RID" (a real peer_id never holds a colon), and it only reads RID.
func (t token) readOnly() bool { return strings.HasPrefix(t.PeerID, viaPeer+":") }

// createToken logs a SimClient into net and returns its secret token.
func (s *store) createToken(ctx context.Context, net string) (secret string, t token, err error) {
	secret = newToken()
	now := s.nowMS()
	t = token{Hash: secretHash(secret), PeerID: newPeerID(), Net: net, ExpiresAt: now + s.opts.TokenTTL.Milliseconds()}
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		// Inside the writer, the highest message id is exact.
		if err := tx.StmtContext(ctx, s.q.insertToken).QueryRowContext(ctx, t.Hash, t.PeerID, t.Net, now, t.ExpiresAt).Scan(&t.MsgFloor); err != nil {
			return err
		}
		return s.counts.admitToken(t.Net, s.opts.MaxPeers)
	})
	if err != nil {
		return "", token{}, err
	}
	s.cacheToken(t)
	s.noteSeen(t, now) // login wrote last_seen_at
	return secret, t, nil
}

// lookupToken returns the SimClient a secret token belongs to.
func (s *store) lookupToken(ctx context.Context, secret string) (token, error) {
	if secret == "" {
		return token{}, errMissingToken
	}
	hash := secretHash(secret)
	var t token
	if v, ok := s.tokens.Load(string(hash)); ok {
		t = v.(token)
	} else {
		err := s.q.tokenByHash.QueryRowContext(ctx, hash).Scan(&t.PeerID, &t.Net, &t.ExpiresAt, &t.MsgFloor)
		if errors.Is(err, sql.ErrNoRows) {
			return token{}, errUnknownToken
		}
		if err != nil {
			return token{}, err
		}
		t.Hash = hash
		s.cacheToken(t)
	}
	if t.ExpiresAt <= s.nowMS() {
		return token{}, errTokenExpired
	}
	return t, nil
}

// maxCachedTokens bounds the token cache: 100,000 logins take about 15 MB.
// Past it, tokens are read from the store (an indexed read, ~10 µs).
const maxCachedTokens = 100_000

func (s *store) cacheToken(t token) {
	if s.nTokens.Load() >= s.maxToks {
		return
	}
	if _, loaded := s.tokens.LoadOrStore(string(t.Hash), t); !loaded {
		s.nTokens.Add(1)
	}
}

// serverKey is a SimServer's key, checked against its net. claim is set
// when the net is unclaimed: the write that the call makes claims it in the
// same transaction, so a call that fails claims nothing.
type serverKey struct {
	net   string
	hash  []byte
	claim bool
}

// checkServerKey checks key for net without writing: a wrong key for a
// claimed net is refused; an unclaimed net needs a key of 16+ characters.
func (s *store) checkServerKey(ctx context.Context, net, key string) (serverKey, error) {
	if key == "" {
		return serverKey{}, errMissingKey
	}
	k := serverKey{net: net, hash: secretHash(key)}
	var stored []byte
	if v, ok := s.netKeys.Load(net); ok {
		stored = v.([]byte)
	} else if err := s.q.netKey.QueryRowContext(ctx, net).Scan(&stored); errors.Is(err, sql.ErrNoRows) {
		if len(key) < 16 {
			return serverKey{}, errKeyTooShort
		}
		k.claim = true
		return k, nil
	} else if err != nil {
		return serverKey{}, err
	}
	s.netKeys.Store(net, stored) // claims never change: cache them
	if subtle.ConstantTimeCompare(stored, k.hash) != 1 {
		return serverKey{}, errWrongKey
	}
	return k, nil
}

// claimIn claims k's net inside a write, if k needs it. Another key may
// have claimed the net since checkServerKey: then it is the wrong key.
func (s *store) claimIn(ctx context.Context, tx *sql.Tx, k serverKey) error {
	if !k.claim {
		return nil
	}
	if _, err := tx.StmtContext(ctx, s.q.claimNet).ExecContext(ctx, k.net, k.hash, s.nowMS()); err != nil {
		return err
	}
	var stored []byte
	if err := tx.StmtContext(ctx, s.q.claimedKey).QueryRowContext(ctx, k.net).Scan(&stored); err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(stored, k.hash) != 1 {
		return errWrongKey
	}
	return nil
}

// authorizeServer checks a SimServer's key for net and, if the net is
// unclaimed, claims it now. Only the key's hash is stored.
func (s *store) authorizeServer(ctx context.Context, net, key string) error {
	k, err := s.checkServerKey(ctx, net, key)
	if err != nil || !k.claim {
		return err
	}
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error { return s.claimIn(ctx, tx, k) })
}

// touchNet records that a SimServer polled net, at most once a second.
func (s *store) touchNet(net string) {
	now := s.nowMS()
	if v, ok := s.lastPoll.Load(net); ok && now-v.(int64) < 1000 {
		return
	}
	s.lastPoll.Store(net, now)
	s.writeLater(func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.StmtContext(ctx, s.q.touchNet).ExecContext(ctx, now, net)
		return err
	})
}
