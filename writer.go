// The store's single writer: every write queues here, and the writer
// commits what is waiting as one transaction, each write under its own
// savepoint (group commit); a checkpointer keeps the WAL small.

package main

import (
	"context"
	"database/sql"
	"slices"
	"time"
)

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
		_ = s.measure(context.Background()) // a failed measure keeps counting from the last one
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

// writeFault is the last commit's failure of the store's file, or nil.
func (s *store) writeFault() error {
	if p := s.fault.Load(); p != nil {
		return *p
	}
	return nil
}

// probeWrite commits a write that changes nothing but still reaches the
// file (a WAL frame): whether the store can be written now.
func (s *store) probeWrite(ctx context.Context) error {
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE settings SET value = value WHERE name = 'max_attempts'`)
		return err
	})
}

// write runs fn in the writer's transaction and waits for the commit.
func (s *store) write(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) error {
	return <-s.writeAsync(ctx, fn)
}

// writeAsync queues fn as write does and returns at once: the channel
// gets fn's outcome once its transaction has committed (or failed).
// Writes queued together share a commit.
func (s *store) writeAsync(ctx context.Context, fn func(ctx context.Context, tx *sql.Tx) error) <-chan error {
	op := &writeOp{ctx: ctx, fn: fn, done: make(chan error, 1)}
	if err := s.submit(op); err != nil {
		op.done <- err
	}
	return op.done
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
	s.queued.Add(1)
	select {
	case s.ops <- op:
		return nil
	case <-op.ctx.Done():
		s.queued.Add(-1)
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

// claimsKey is the context key of the nets a batch claims (claimIn).
type claimsKey struct{}

// commit runs a batch in one transaction. Each write runs under a savepoint,
// so a failing one is rolled back alone; a failed commit fails them all.
//
// Statements run under a background context, not the caller's: the driver
// answers a cancelled context with sqlite3_interrupt, and an interrupted
// write rolls back the whole transaction, the other callers' writes with it.
// A caller that is gone before its turn is skipped instead.
func (s *store) commit(batch []*writeOp) { s.commitTry(batch, 1) }

// commitTry is commit's try number try: on PostgreSQL, a write alone whose
// transaction another's deadlocked with is run again in a new one, up to
// maxTries times.
func (s *store) commitTry(batch []*writeOp, try int) {
	ctx := context.Background()
	start := time.Now()
	errs := make([]error, len(batch))
	finish := func() {
		defer s.queued.Add(-int64(len(batch)))
		for i, op := range batch {
			errs[i] = storeFault(errs[i])
			if isWriteFault(errs[i]) {
				s.fault.Store(&errs[i])
			}
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
	claimed := []string{} // nets this batch claims (claimIn), logged once committed
	ctx = context.WithValue(ctx, claimsKey{}, &claimed)
	single := len(batch) == 1
	for i, op := range batch {
		if err := op.ctx.Err(); err != nil {
			errs[i] = err // the caller is gone: do not write for it
			continue
		}
		claims := len(claimed)
		if single {
			if errs[i] = op.fn(ctx, tx); errs[i] != nil {
				claimed = claimed[:claims]
			}
			continue
		}
		if _, err := tx.StmtContext(ctx, s.sp.save).ExecContext(ctx); err != nil {
			errs[i] = err
			continue
		}
		if errs[i] = op.fn(ctx, tx); errs[i] != nil {
			_, _ = tx.StmtContext(ctx, s.sp.rollback).ExecContext(ctx)
			claimed = claimed[:claims]
		}
		_, _ = tx.StmtContext(ctx, s.sp.release).ExecContext(ctx)
	}
	if single && errs[0] != nil {
		if s.pg && try < maxTries && retryable(errs[0]) {
			tx.Rollback()
			s.commitTry(batch, try+1)
			return
		}
		finish() // deferred rollback undoes it
		return
	}
	err = nil
	if f := s.commitFault.Load(); f != nil {
		err = (*f)()
	}
	if err == nil {
		err = tx.Commit()
	}
	if err != nil {
		for i := range errs {
			if errs[i] == nil {
				errs[i] = err
			}
		}
		s.counts.stale.Store(true) // the writes counted what did not happen
	} else {
		s.fault.Store(nil)
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
		if ev := s.events.Load(); ev != nil {
			for _, net := range claimed {
				ev.claimed(net)
			}
		}
	}
	finish()
}
