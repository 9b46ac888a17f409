// Streamed answers and cancellation in the store (docs/API.md, "Streamed
// answers and cancellation"): an answer begun with its head (pushres with
// more), continued part by part (pushpart), read from an offset (pullsmart,
// the gateway); and requests withdrawn by their caller (cancel), which a
// SimServer learns of by watching the requests it holds.

package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

// maxReadBytes is the most body bytes one pull of a streamed answer gives
// (pullres, pullsmart): 1 MiB.
const maxReadBytes = 1 << 20

// viaWriteBytes is the most body bytes the gateway reads from the store
// and writes to a caller in one step: 64 KiB. A caller that never reads
// pins at most this much (plus its socket's buffers), and each write
// meets --write-timeout at any rate above about 7 KiB/s.
const viaWriteBytes = 64 << 10

// maxWatched is the most rids one watch call names.
const maxWatched = 1000

// offsetMismatchError is a pushpart whose offset is past the committed
// body, or disagrees with it: Committed is where the next part must start.
type offsetMismatchError struct{ Committed int64 }

func (e *offsetMismatchError) Error() string {
	if e.Committed < 0 {
		return "the part's offset and length run past the largest body a stream can have"
	}
	return fmt.Sprintf("the part's offset does not follow the committed body: %d bytes are committed; send the part at offset %d", e.Committed, e.Committed)
}

// streamStatements are the prepared statements of streamed answers and
// cancellation. ?2 is now where a statement needs it.
func streamStatements(q *statements, w, r *sql.DB) []statement {
	return []statement{
		// The head of a streamed answer (answer with streamHead): answered,
		// its stream open under a lease, its first bytes (if any) counted in
		// body_bytes.
		{&q.answerHead, w, `UPDATE requests SET status = 'answered', sim_res = ?1, done_at = ?2, lease_expires_at = ?6,
			stream = 'open', body_bytes = ?7
			WHERE rid = ?3 AND net = ?4 AND ` + statusSQL("?2", "?5") + ` IN ('queued', 'delivered')
			RETURNING seq, token_hash, attempt, from_peer, remote_addr`},
		// One more part of an open stream: only at the committed offset,
		// while its lease runs and its caller has not withdrawn it.
		{&q.appendPart, w, `UPDATE requests SET body_bytes = body_bytes + ?5, done_at = ?2, lease_expires_at = ?6,
			stream = CASE WHEN ?7 THEN 'complete' ELSE 'open' END
			WHERE rid = ?3 AND net = ?4 AND status = 'answered' AND stream = 'open' AND cancelled_at IS NULL
			  AND lease_expires_at > ?2 AND body_bytes = ?1
			RETURNING seq, token_hash`},
		{&q.insertPart, w, `INSERT INTO answer_parts (req_seq, "offset", data) VALUES (?, ?, ?)`},
		{&q.dropParts, w, `DELETE FROM answer_parts WHERE req_seq = ?1 AND "offset" + length(data) <= ?2
			RETURNING "offset" + length(data), length(data)`},
		{&q.keepFrom, w, `UPDATE requests SET kept_from = ?2 WHERE seq = ?1 AND kept_from < ?2
			RETURNING net, from_peer, remote_addr`},
		// Retention counts from the stream's last sign of life, so an idle
		// stream whose SimServer keeps it is not removed under its caller.
		{&q.extendStream, w, `UPDATE requests SET lease_expires_at = ?1, done_at = ?2
			WHERE rid = ?3 AND net = ?4 AND status = 'answered' AND stream = 'open' AND cancelled_at IS NULL
			  AND lease_expires_at > ?2
			RETURNING token_hash`},
		// Withdrawing a request that has no answer yet: stored as failed, so
		// it leaves the queue and the lease indexes, and reads as cancelled.
		{&q.cancelPending, w, `UPDATE requests SET status = 'failed', cancelled_at = ?2, done_at = ?2, lease_expires_at = NULL
			WHERE rid = ?1 AND token_hash = ?3 AND ` + statusSQL("?2", "?4") + ` IN ('queued', 'delivered')
			RETURNING net, attempt, from_peer, remote_addr`},
		{&q.cancelStream, w, `UPDATE requests SET cancelled_at = ?2
			WHERE rid = ?1 AND token_hash = ?3 AND status = 'answered' AND stream = 'open' AND cancelled_at IS NULL
			  AND lease_expires_at > ?2
			RETURNING net`},

		{&q.requestForOwnerW, w, `SELECT ` + requestStateColumns + ` FROM requests WHERE rid = ? AND token_hash = ?`},

		// At most ?3 bytes of the part that holds body offset ?2 (the last
		// one starting at or before it: parts are contiguous), from ?2 on;
		// one index step, and only those bytes cross into Go.
		{&q.readParts, r, `SELECT substr(data, ?2 - "offset" + 1, ?3) FROM answer_parts
			WHERE req_seq = ?1 AND "offset" <= ?2 ORDER BY "offset" DESC LIMIT 1`},
		// Of the rids a SimServer holds (a JSON array), those that need no
		// more work: not a request of the net, withdrawn, finished without
		// an answer, answered whole, or a stream no longer open.
		{&q.watchDone, r, `SELECT j.value FROM json_each(?1) AS j
			LEFT JOIN requests ON requests.rid = j.value AND requests.net = ?2
			WHERE requests.seq IS NULL OR requests.cancelled_at IS NOT NULL
			   OR ` + statusSQL("?3", "?4") + ` IN ('expired', 'failed')
			   OR (requests.status = 'answered' AND (requests.stream IS NULL OR requests.stream = 'complete'
			       OR requests.lease_expires_at <= ?3))`},
	}
}

// partResult is what a committed part leaves: the stream's state and the
// body bytes committed in all.
type partResult struct {
	owner  []byte
	stream string
	offset int64
}

// appendPart commits one part of rid's streamed answer: data at offset,
// the last part when last is set; the stream's lease is renewed to
// now+lease. A part whose bytes were committed already (a retry) is
// answered with the stream as it is, and nothing is written. Errors:
// errNotFound, errNoStream (not a streamed answer yet), errAnswered (the
// stream is complete, or the answer came whole), errCancelled, errAborted,
// errExpired, errFailed, *offsetMismatchError.
func (s *store) appendPart(ctx context.Context, k serverKey, rid string, offset int64, data []byte, last bool, lease time.Duration) (partResult, error) {
	net := k.net
	var res partResult
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := s.claimIn(ctx, tx, k); err != nil {
			return err
		}
		now := s.nowMS()
		if offset > math.MaxInt64-int64(len(data)) {
			return &offsetMismatchError{Committed: -1}
		}
		end := offset + int64(len(data))
		st, err := s.scanState(tx.StmtContext(ctx, s.q.requestForNet).QueryRowContext(ctx, rid, net))
		if err != nil {
			return err
		}
		res = partResult{owner: st.owner, stream: st.stream, offset: st.bodyBytes}
		if err := partRefusal(st, offset, end, last); err != nil || st.stream != streamOpen {
			return err // nil: a retry of the committed last part
		}
		if end <= st.bodyBytes && !(last && end == st.bodyBytes) {
			return nil // committed before: a retry after a lost reply
		}
		if offset != st.bodyBytes {
			return &offsetMismatchError{Committed: st.bodyBytes}
		}
		if err := s.admitBytes(ctx, tx, "", len(data)); err != nil {
			return err
		}
		var seq int64
		err = tx.StmtContext(ctx, s.q.appendPart).QueryRowContext(ctx, offset, now, rid, net, len(data),
			now+lease.Milliseconds(), last).Scan(&seq, &res.owner)
		if err != nil {
			return err // the state was read in this transaction: the row matches
		}
		if len(data) > 0 {
			if _, err := tx.StmtContext(ctx, s.q.insertPart).ExecContext(ctx, seq, offset, data); err != nil {
				return err
			}
			if err := s.admitParts(requestRow{net: net, from: st.from, remote: st.remote, bytes: int64(len(data))}); err != nil {
				return err // the savepoint undoes the part
			}
		}
		res.offset = end
		res.stream = streamOpen
		if last {
			res.stream = streamComplete
		}
		return nil
	})
	return res, err
}

// partRefusal is why a part from offset to end (last or not) cannot
// continue the answer st: nil when it may, or when it repeats the last
// part of a complete stream.
func partRefusal(st requestState, offset, end int64, last bool) error {
	if err := st.gone(); err != nil {
		return err
	}
	switch {
	case st.status != statusAnswered:
		return errNoStream
	case st.stream == "":
		return errAnswered
	case st.stream == streamCancelled:
		return errCancelled
	case st.stream == streamAborted:
		return errAborted
	case st.stream == streamComplete:
		if last && end == st.bodyBytes && offset <= end {
			return nil
		}
		return errAnswered
	}
	return nil
}

// cancel withdraws rid for its owner t (docs/API.md, "Cancellation"): a
// request not answered yet becomes cancelled, an open stream stops there.
// It returns the request's net and whether a SimServer may be working on
// it (it was delivered, or its stream was open). Cancelling it again is
// not an error. Errors: errNotFound, errAnswered (its answer is complete,
// or its stream was aborted), errExpired, errFailed.
func (s *store) cancel(ctx context.Context, t token, rid string) (net string, held bool, err error) {
	s.fresh.drop(rid) // whatever comes of it, its owner's waits read the store
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		now := s.nowMS()
		var attempt int
		var from, remote string
		err := tx.StmtContext(ctx, s.q.cancelPending).QueryRowContext(ctx, rid, now, t.Hash, s.opts.MaxAttempts).Scan(&net, &attempt, &from, &remote)
		if err == nil {
			s.counts.finished(requestRow{net: net, from: from, remote: remote}, attempt, statusFailed)
			held = attempt > 0
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		err = tx.StmtContext(ctx, s.q.cancelStream).QueryRowContext(ctx, rid, now, t.Hash).Scan(&net)
		if err == nil {
			held = true
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		st, err := s.scanState(tx.StmtContext(ctx, s.q.requestForOwnerW).QueryRowContext(ctx, rid, t.Hash))
		if err != nil {
			return err
		}
		net = st.net
		if st.status == statusCancelled || st.stream == streamCancelled {
			return nil
		}
		if err := st.gone(); err != nil {
			return err
		}
		return errAnswered
	})
	return net, held, err
}

// readBody gives up to max bytes of a streamed answer's body from offset
// on, as committed; fewer (or none) when no more are committed yet. It
// reads part by part, each read an index step that copies only the bytes
// it gives, so a reader's cost follows what it reads, not what is stored.
func (s *store) readBody(ctx context.Context, seq, offset int64, max int) ([]byte, error) {
	var out []byte
	for len(out) < max {
		var chunk []byte
		err := s.q.readParts.QueryRowContext(ctx, seq, offset, max-len(out)).Scan(&chunk)
		if errors.Is(err, sql.ErrNoRows) || (err == nil && len(chunk) == 0) {
			break // nothing committed at offset yet
		}
		if err != nil {
			return nil, err
		}
		out = append(out, chunk...)
		offset += int64(len(chunk))
	}
	return out, nil
}

// watchDone returns which of rids, held by net's SimServer, need no more
// work (docs/API.md, "Cancellation"; watchDone's statement says which).
func (s *store) watchDone(ctx context.Context, net string, rids []string) ([]string, error) {
	list, err := json.Marshal(rids)
	if err != nil {
		return nil, err
	}
	rows, err := s.q.watchDone.QueryContext(ctx, string(list), net, s.nowMS(), s.opts.MaxAttempts)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	done := []string{}
	for rows.Next() {
		var rid string
		if err := rows.Scan(&rid); err != nil {
			return nil, err
		}
		done = append(done, rid)
	}
	return done, rows.Err()
}

// admitParts counts an answer or parts just stored, r.bytes of them,
// against the budgets of who sent their request (senderRefusal: its
// address's, its net's gateway's), as its sim_req counts: an answer is
// stored for whoever asked, and is bounded by what they may store.
// Refused, the write's savepoint undoes them.
func (s *store) admitParts(r requestRow) error {
	if err := s.admitSender(r); err != nil {
		return err
	}
	s.counts.mu.Lock()
	defer s.counts.mu.Unlock()
	s.counts.usage.add(r, 1)
	return nil
}

// dropRead drops the parts of rid's streamed answer wholly before upTo,
// which its one reader (a synchronous /via/ caller: nobody else can read
// them) has been written: a long download then stores only what its caller
// has not read yet, and gives its budget back as it goes. Not waited for
// (writeLater).
func (s *store) dropRead(seq int64, upTo int64) {
	s.writeLater(func(ctx context.Context, tx *sql.Tx) error {
		var dropped, keptFrom int64
		rows, err := tx.StmtContext(ctx, s.q.dropParts).QueryContext(ctx, seq, upTo)
		if err != nil {
			return err
		}
		for rows.Next() {
			var end, n int64
			if err := rows.Scan(&end, &n); err != nil {
				rows.Close()
				return err
			}
			dropped += n
			keptFrom = max(keptFrom, end)
		}
		rows.Close()
		if err := rows.Err(); err != nil || dropped == 0 {
			return err
		}
		var r requestRow
		err = tx.StmtContext(ctx, s.q.keepFrom).QueryRowContext(ctx, seq, keptFrom).Scan(&r.net, &r.from, &r.remote)
		if errors.Is(err, sql.ErrNoRows) {
			return nil // removed meanwhile, with its parts
		}
		if err != nil {
			return err
		}
		r.bytes = dropped
		s.counts.mu.Lock()
		defer s.counts.mu.Unlock()
		s.counts.usage.add(r, -1)
		return nil
	})
}
