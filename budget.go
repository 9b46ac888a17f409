// The storage budget: the store refuses a write that would take its file
// past --max-store, or a net past --max-net-store, before it writes, so a
// client cannot fill the disk and stop every write of every net.

package main

import (
	"context"
	"database/sql"
	"errors"
)

func budgetStatements(q *statements, w *sql.DB) []statement {
	return []statement{
		{&q.netUsage, w, `SELECT bytes FROM net_usage WHERE net = ?`},
	}
}

// measure reads how many bytes of the file's pages are in use (free pages
// are reused before the file grows) and starts counting anew the payload
// written since. The checkpointer calls it every CheckpointEvery; it runs
// on the checkpointer's own connection, so no write waits for it.
func (s *store) measure(ctx context.Context) error {
	var pages, free, size int64
	err := s.ckpt.QueryRowContext(ctx, `SELECT (SELECT page_count FROM pragma_page_count()),
		(SELECT freelist_count FROM pragma_freelist_count()), (SELECT page_size FROM pragma_page_size())`).Scan(&pages, &free, &size)
	if err != nil {
		return err
	}
	s.used.Store((pages - free) * size)
	s.pending.Store(0)
	return nil
}

// admitBytes checks, inside a write and before it writes, that n more
// payload bytes for net keep the store within --max-store and the net
// within --max-net-store (net "" is checked against the store's budget
// only), and counts them as written. The file's size is the last
// measure's, plus the payload written since: a second of writes at most
// goes uncounted in indexes and page slack, which the budget's headroom
// covers.
func (s *store) admitBytes(ctx context.Context, tx *sql.Tx, net string, n int) error {
	if max := s.opts.MaxStore; max > 0 && s.used.Load()+s.pending.Load()+int64(n) > max {
		return errStoreFull
	}
	if max := s.opts.MaxNetStore; max > 0 && net != "" {
		var used int64
		err := tx.StmtContext(ctx, s.q.netUsage).QueryRowContext(ctx, net).Scan(&used)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if used+int64(n) > max {
			return errNetStoreFull
		}
	}
	s.pending.Add(int64(n))
	return nil
}
