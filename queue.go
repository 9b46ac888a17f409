// The request queue: pushreq, lease (pullreqsmart), answer (pushres),
// extend, and the client's reads. A request's status moves:
//
//	queued --lease--> delivered --pushres--> answered
//	                  |  ^
//	                  |  +-- lease ran out: handed out again, attempt + 1
//	                  +----- last lease (--max-attempts) ran out: failed
//	queued or delivered past --req-ttl: expired
//
// Expired and failed are decided from the clock on every read (effective
// status), so they hold the moment they are due; the janitor writes them down
// later and deletes what has outlived its retention.

package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

const (
	statusQueued    = "queued"
	statusDelivered = "delivered"
	statusAnswered  = "answered"
	statusExpired   = "expired"
	statusFailed    = "failed"
)

// statements are prepared once per store. Writer statements run inside the
// writer's transaction through tx.StmtContext, reusing the prepared form.
type statements struct {
	insertToken, claimNet, touchNet,
	insertRequest, leaseQueued, leaseExpired, markDelivered,
	answer, extend, markPulled, takeUnpulled, requestForNet, claimedKey,
	touchToken, peerInNet, netPeers, topicReceivers, insertMessage,
	openSubscription, subscribe, unsubscribe, dropEmptySubscription *sql.Stmt // writer

	tokenByHash, netKey, readyState, requestForOwner, hasUnpulled,
	lastMessageID, readMessages, recentPeers *sql.Stmt // readers
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

func (q *statements) list(w, r *sql.DB) []statement {
	return append([]statement{
		{&q.insertToken, w, `INSERT INTO tokens (token_hash, peer_id, net, created_at, expires_at, last_seen_at, msg_floor)
			VALUES (?1, ?2, ?3, ?4, ?5, ?4, ` + lastMessageIDSQL + `) RETURNING msg_floor`},
		{&q.claimNet, w, `INSERT INTO nets (name, key_hash, claimed_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING`},
		{&q.touchNet, w, `UPDATE nets SET last_poll_at = ? WHERE name = ?`},
		{&q.insertRequest, w, `INSERT INTO requests (rid, net, token_hash, from_peer, status, sim_req, created_at, expires_at)
			VALUES (?, ?, ?, ?, 'queued', ?, ?, ?)`},
		{&q.leaseQueued, w, `SELECT seq, rid, sim_req, from_peer, attempt, created_at FROM requests
			WHERE net = ?1 AND status = 'queued' AND expires_at > ?2 ORDER BY seq LIMIT ?3`},
		{&q.leaseExpired, w, `SELECT seq, rid, sim_req, from_peer, attempt, created_at FROM requests
			WHERE net = ?1 AND status = 'delivered' AND lease_expires_at <= ?2
			  AND expires_at > ?2 AND attempt < ?3 AND lease_expires_at < expires_at
			ORDER BY seq LIMIT ?4`},
		{&q.markDelivered, w, `UPDATE requests SET status = 'delivered', attempt = attempt + 1, lease_expires_at = ? WHERE seq = ?`},
		{&q.answer, w, `UPDATE requests SET status = 'answered', sim_res = ?1, done_at = ?2, lease_expires_at = NULL
			WHERE rid = ?3 AND net = ?4 AND status IN ('queued', 'delivered') AND expires_at > ?2
			  AND NOT (status = 'delivered' AND attempt >= ?5 AND lease_expires_at <= ?2)
			RETURNING token_hash, attempt`},
		{&q.extend, w, `UPDATE requests SET lease_expires_at = ?1
			WHERE rid = ?2 AND net = ?3 AND status = 'delivered' AND lease_expires_at > ?4 AND expires_at > ?4`},
		{&q.markPulled, w, `UPDATE requests SET pulled = 1 WHERE seq = ?`},
		{&q.takeUnpulled, w, `UPDATE requests SET pulled = 1 WHERE seq = (
			SELECT seq FROM requests WHERE token_hash = ? AND status = 'answered' AND pulled = 0
			ORDER BY done_at, seq LIMIT 1) RETURNING rid, sim_res`},

		{&q.claimedKey, w, `SELECT key_hash FROM nets WHERE name = ?`},

		{&q.tokenByHash, r, `SELECT peer_id, net, expires_at, msg_floor FROM tokens WHERE token_hash = ?`},
		{&q.netKey, r, `SELECT key_hash FROM nets WHERE name = ?`},
		{&q.readyState, r, `SELECT
			EXISTS (SELECT 1 FROM requests WHERE net = ?1 AND status = 'queued' AND expires_at > ?2),
			EXISTS (SELECT 1 FROM requests WHERE net = ?1 AND status = 'delivered' AND lease_expires_at <= ?2
			        AND expires_at > ?2 AND attempt < ?3 AND lease_expires_at < expires_at),
			(SELECT min(lease_expires_at) FROM requests WHERE net = ?1 AND status = 'delivered' AND lease_expires_at > ?2)`},
		{&q.requestForOwner, r, `SELECT seq, status, attempt, expires_at, lease_expires_at, sim_res, pulled
			FROM requests WHERE rid = ? AND token_hash = ?`},
		{&q.requestForNet, w, `SELECT seq, status, attempt, expires_at, lease_expires_at, sim_res, pulled
			FROM requests WHERE rid = ? AND net = ?`},
		{&q.hasUnpulled, r, `SELECT EXISTS (SELECT 1 FROM requests WHERE token_hash = ? AND status = 'answered' AND pulled = 0)`},
	}, peerStatements(q, w, r)...)
}

func (q *statements) close() {
	for _, s := range q.list(nil, nil) {
		if *s.stmt != nil {
			(*s.stmt).Close()
		}
	}
}

// pushRequest queues a validated sim_req from t and returns its rid.
func (s *store) pushRequest(ctx context.Context, t token, simReq []byte) (string, error) {
	rid := newRID()
	now := s.nowMS()
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if _, err := tx.StmtContext(ctx, s.q.insertRequest).ExecContext(ctx,
			rid, t.Net, t.Hash, t.PeerID, string(simReq), now, now+s.opts.ReqTTL.Milliseconds()); err != nil {
			return err
		}
		return s.counts.admitRequest(t.Net, s.opts.MaxQueue)
	})
	return rid, err
}

// pushGateway stores /via/ request rid for net. It belongs to a fresh
// token that nobody holds, except with capability: then the token is stored
// too, readable by its secret until the request's retention ends, and can
// fetch this one request. expiresAt is when the request expires unanswered.
func (s *store) pushGateway(ctx context.Context, net, rid string, simReq []byte, capability bool) (owner token, secret string, expiresAt int64, err error) {
	secret = newToken()
	now := s.nowMS()
	expiresAt = now + s.opts.ReqTTL.Milliseconds()
	owner = token{Hash: secretHash(secret), PeerID: viaPeer + ":" + rid, Net: net, ExpiresAt: expiresAt + s.opts.ResTTL.Milliseconds()}
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if capability {
			// The token is in no net (""): it is no peer, and no peer call sees it.
			if _, err := tx.StmtContext(ctx, s.q.insertToken).ExecContext(ctx, owner.Hash, owner.PeerID, "", now, owner.ExpiresAt); err != nil {
				return err
			}
		}
		if _, err := tx.StmtContext(ctx, s.q.insertRequest).ExecContext(ctx, rid, net, owner.Hash, viaPeer, string(simReq), now, expiresAt); err != nil {
			return err
		}
		// The queue quota refuses last, so that its savepoint undoes the
		// inserts; the token is counted only once the request is in.
		if err := s.counts.admitRequest(net, s.opts.MaxQueue); err != nil {
			return err
		}
		if capability {
			return s.counts.admitToken("", 0)
		}
		return nil
	})
	if !capability {
		secret = ""
	}
	return owner, secret, expiresAt, err
}

// leasedRequest is one request handed to a SimServer.
type leasedRequest struct {
	RID            string          `json:"rid"`
	SimReq         json.RawMessage `json:"sim_req"`
	From           string          `json:"from"`
	Attempt        int             `json:"attempt"`
	LeaseExpiresAt string          `json:"lease_expires_at"`
	seq            int64
	created        int64 // ms
}

// readyState tells, without writing, whether net has a request to hand out,
// and if not, when the next lease runs out (zero if none is out).
func (s *store) readyState(ctx context.Context, net string) (ready bool, nextLease time.Time, err error) {
	s.queueReads.Add(1)
	var queued, redeliver bool
	var next sql.NullInt64
	err = s.q.readyState.QueryRowContext(ctx, net, s.nowMS(), s.opts.MaxAttempts).Scan(&queued, &redeliver, &next)
	if next.Valid {
		nextLease = time.UnixMilli(next.Int64)
	}
	return queued || redeliver, nextLease, err
}

// lease hands out up to max requests of net, oldest first: queued ones and
// ones whose lease ran out. Each is delivered for lease.
func (s *store) lease(ctx context.Context, net string, max int, lease time.Duration) ([]leasedRequest, error) {
	var out []leasedRequest
	var now int64
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		out = out[:0]
		now = s.nowMS()
		scan := func(rows *sql.Rows, err error) error {
			if err != nil {
				return err
			}
			defer rows.Close()
			for rows.Next() {
				var l leasedRequest
				var simReq string
				if err := rows.Scan(&l.seq, &l.RID, &simReq, &l.From, &l.Attempt, &l.created); err != nil {
					return err
				}
				l.SimReq = json.RawMessage(simReq)
				out = append(out, l)
			}
			return rows.Err()
		}
		if err := scan(tx.StmtContext(ctx, s.q.leaseQueued).QueryContext(ctx, net, now, max)); err != nil {
			return err
		}
		if err := scan(tx.StmtContext(ctx, s.q.leaseExpired).QueryContext(ctx, net, now, s.opts.MaxAttempts, max)); err != nil {
			return err
		}
		sortBySeq(out)
		if len(out) > max {
			out = out[:max]
		}
		until := now + lease.Milliseconds()
		mark := tx.StmtContext(ctx, s.q.markDelivered)
		for i := range out {
			if _, err := mark.ExecContext(ctx, until, out[i].seq); err != nil {
				return err
			}
		}
		fromQueue := 0
		for i := range out {
			if out[i].Attempt == 0 { // stored as queued: only leases ever deliver
				fromQueue++
			}
			out[i].Attempt++
			out[i].LeaseExpiresAt = formatMS(until)
		}
		s.counts.move(net, statusQueued, statusDelivered, fromQueue)
		return nil
	})
	if h := s.hooks.Load(); h != nil && err == nil {
		for _, l := range out {
			if l.Attempt == 1 {
				h.handedOut(l.RID, l.created, now)
			}
		}
	}
	return out, err
}

func sortBySeq(l []leasedRequest) {
	for i := 1; i < len(l); i++ { // two short sorted runs: insertion sort
		for j := i; j > 0 && l[j].seq < l[j-1].seq; j-- {
			l[j], l[j-1] = l[j-1], l[j]
		}
	}
}

// requestState is a request as its owner or its net's SimServer sees it.
type requestState struct {
	seq       int64
	status    string // effective: expired and failed hold from the moment they are due
	attempt   int
	expiresAt int64
	leaseExp  int64
	simRes    []byte
	pulled    bool
}

func (s *store) scanState(row *sql.Row) (requestState, error) {
	var st requestState
	var lease sql.NullInt64
	var simRes sql.NullString
	err := row.Scan(&st.seq, &st.status, &st.attempt, &st.expiresAt, &lease, &simRes, &st.pulled)
	if errors.Is(err, sql.ErrNoRows) {
		return st, errNotFound
	}
	if err != nil {
		return st, err
	}
	st.leaseExp = lease.Int64
	st.simRes = []byte(simRes.String)
	st.status = s.effectiveStatus(st.status, st.attempt, st.expiresAt, lease, s.nowMS())
	return st, nil
}

// effectiveStatus applies the clock to a stored status: an unanswered
// request past its TTL is expired; a delivered one whose last allowed lease
// ran out (before its TTL) is failed.
func (s *store) effectiveStatus(status string, attempt int, expiresAt int64, lease sql.NullInt64, now int64) string {
	if status != statusQueued && status != statusDelivered {
		return status
	}
	if status == statusDelivered && lease.Valid && lease.Int64 <= now && lease.Int64 < expiresAt && attempt >= s.opts.MaxAttempts {
		return statusFailed
	}
	if expiresAt <= now {
		return statusExpired
	}
	return status
}

// nextChange is when st changes on its own (expires or fails); zero if never.
func (s *store) nextChange(st requestState) time.Time {
	switch {
	case st.status == statusQueued:
		return time.UnixMilli(st.expiresAt)
	case st.status == statusDelivered && st.attempt >= s.opts.MaxAttempts && st.leaseExp < st.expiresAt:
		return time.UnixMilli(st.leaseExp)
	case st.status == statusDelivered:
		return time.UnixMilli(st.expiresAt)
	}
	return time.Time{}
}

// requestForOwner reads rid if t owns it; another token's rid is not found.
func (s *store) requestForOwner(ctx context.Context, t token, rid string) (requestState, error) {
	s.queueReads.Add(1)
	return s.scanState(s.q.requestForOwner.QueryRowContext(ctx, rid, t.Hash))
}

// markPulled records that a pull call returned rid's response. It is not
// waited for: a later pull queues behind it, and a crash before it only
// means the response can be pulled once more.
func (s *store) markPulled(st requestState) {
	if st.pulled {
		return
	}
	s.writeLater(func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.StmtContext(ctx, s.q.markPulled).ExecContext(ctx, st.seq)
		return err
	})
}

// hasUnpulled tells, without writing, whether t has an answered response it
// has not pulled yet.
func (s *store) hasUnpulled(ctx context.Context, t token) (bool, error) {
	s.queueReads.Add(1)
	var ok bool
	err := s.q.hasUnpulled.QueryRowContext(ctx, t.Hash).Scan(&ok)
	return ok, err
}

// takeUnpulled returns t's oldest answered response not yet pulled and marks
// it pulled; ok is false if there is none.
func (s *store) takeUnpulled(ctx context.Context, t token) (rid string, simRes []byte, ok bool, err error) {
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var res string
		err := tx.StmtContext(ctx, s.q.takeUnpulled).QueryRowContext(ctx, t.Hash).Scan(&rid, &res)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		ok, simRes = err == nil, []byte(res)
		return err
	})
	return rid, simRes, ok, err
}

// answer stores simRes for rid of k's net and returns the owner's token
// hash. A request answered before, expired or failed, or of another net, is
// refused.
func (s *store) answer(ctx context.Context, k serverKey, rid string, simRes []byte) (owner []byte, err error) {
	net := k.net
	var now int64
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := s.claimIn(ctx, tx, k); err != nil {
			return err
		}
		now = s.nowMS()
		var attempt int
		err := tx.StmtContext(ctx, s.q.answer).QueryRowContext(ctx, string(simRes), now, rid, net, s.opts.MaxAttempts).Scan(&owner, &attempt)
		if errors.Is(err, sql.ErrNoRows) {
			if err := s.refusal(ctx, tx, net, rid); err != nil {
				return err
			}
			return fmt.Errorf("request %s of net %s: answer refused in an unexpected state", rid, net)
		}
		if err != nil {
			return err
		}
		s.counts.move(net, wasStatus(attempt), statusAnswered, 1)
		return nil
	})
	if h := s.hooks.Load(); h != nil && err == nil {
		h.answered(rid, now)
	}
	return owner, err
}

// wasStatus is the stored status of an unanswered request from its attempt:
// a request is stored as queued until its first lease, and delivered after.
func wasStatus(attempt int) string {
	if attempt == 0 {
		return statusQueued
	}
	return statusDelivered
}

// extend renews the lease on rid of k's net to now+lease, if it is still
// held.
func (s *store) extend(ctx context.Context, k serverKey, rid string, lease time.Duration) (until int64, err error) {
	net := k.net
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := s.claimIn(ctx, tx, k); err != nil {
			return err
		}
		now := s.nowMS()
		until = now + lease.Milliseconds()
		res, err := tx.StmtContext(ctx, s.q.extend).ExecContext(ctx, until, rid, net, now)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			if err := s.refusal(ctx, tx, net, rid); err != nil {
				return err
			}
			return errLeaseLost
		}
		return nil
	})
	return until, err
}

// refusal explains why a SimServer's write to rid did not apply: not found
// (also for another net's rid), answered, expired or failed; nil otherwise.
func (s *store) refusal(ctx context.Context, tx *sql.Tx, net, rid string) error {
	st, err := s.scanState(tx.StmtContext(ctx, s.q.requestForNet).QueryRowContext(ctx, rid, net))
	if err != nil {
		return err
	}
	switch st.status {
	case statusAnswered:
		return errAnswered
	case statusExpired:
		return errExpired
	case statusFailed:
		return errFailed
	}
	return nil
}

// formatMS renders a store time for clients: RFC 3339 in UTC, milliseconds.
func formatMS(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z07:00")
}
