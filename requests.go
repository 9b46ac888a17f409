// The request queue in the store: pushreq, lease (pullreqsmart), answer
// (pushres), extend, and the reads of a request's owner. Which status a
// request has is decided in status.go.

package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"
)

// requestStatements are the queue's prepared statements. ?2 is always now
// and, where the status rule needs it, ?3 or ?5 --max-attempts.
func requestStatements(q *statements, w, r *sql.DB) []statement {
	return []statement{
		{&q.insertRequest, w, `INSERT INTO requests (rid, net, token_hash, from_peer, remote_addr, status, sim_req, created_at, expires_at)
			VALUES (?, ?, ?, ?, ?, 'queued', ?, ?, ?)`},
		{&q.leaseQueued, w, `SELECT seq, rid, sim_req, from_peer, remote_addr, attempt, created_at, expires_at, token_hash FROM requests
			WHERE net = ?1 AND status = 'queued' AND ` + statusSQL("?2", "?3") + ` = 'queued' ORDER BY seq LIMIT ?4`},
		// A delivered request whose lease ran out, and which is still
		// delivered by the rule (not failed or expired), is handed out again.
		{&q.leaseExpired, w, `SELECT seq, rid, sim_req, from_peer, remote_addr, attempt, created_at, expires_at, token_hash FROM requests
			WHERE net = ?1 AND status = 'delivered' AND lease_expires_at <= ?2
			  AND ` + statusSQL("?2", "?3") + ` = 'delivered'
			ORDER BY seq LIMIT ?4`},
		{&q.storeLeased, w, `UPDATE requests SET status = 'delivered', attempt = ?, lease_expires_at = ? WHERE rid = ?`},
		{&q.markDelivered, w, `UPDATE requests SET status = 'delivered', attempt = attempt + 1, lease_expires_at = ? WHERE seq = ?`},
		{&q.answer, w, `UPDATE requests SET status = 'answered', sim_res = ?1, done_at = ?2, lease_expires_at = NULL
			WHERE rid = ?3 AND net = ?4 AND ` + statusSQL("?2", "?5") + ` IN ('queued', 'delivered')
			RETURNING seq, token_hash, attempt, from_peer, remote_addr`},
		{&q.extend, w, `UPDATE requests SET lease_expires_at = ?1
			WHERE rid = ?3 AND net = ?4 AND lease_expires_at > ?2 AND ` + statusSQL("?2", "?5") + ` = 'delivered'`},
		{&q.markPulled, w, `UPDATE requests SET pulled = 1 WHERE seq = ?`},
		{&q.markPulledRID, w, `UPDATE requests SET pulled = 1 WHERE rid = ? AND pulled = 0`},
		{&q.takeUnpulled, w, `UPDATE requests SET pulled = 1 WHERE seq = (
			SELECT seq FROM requests WHERE token_hash = ? AND status = 'answered' AND pulled = 0
			ORDER BY done_at, seq LIMIT 1) RETURNING rid, sim_res, stream IS NOT NULL`},
		{&q.requestForNet, w, `SELECT ` + requestStateColumns + `
			FROM requests WHERE rid = ? AND net = ?`},

		{&q.readyState, r, `SELECT
			EXISTS (SELECT 1 FROM requests WHERE net = ?1 AND status = 'queued' AND ` + statusSQL("?2", "?3") + ` = 'queued'),
			EXISTS (SELECT 1 FROM requests WHERE net = ?1 AND status = 'delivered' AND lease_expires_at <= ?2
			        AND ` + statusSQL("?2", "?3") + ` = 'delivered'),
			(SELECT min(lease_expires_at) FROM requests WHERE net = ?1 AND status = 'delivered' AND lease_expires_at > ?2)`},
		{&q.requestForOwner, r, `SELECT ` + requestStateColumns + `
			FROM requests WHERE rid = ? AND token_hash = ?`},
		{&q.hasUnpulled, r, `SELECT EXISTS (SELECT 1 FROM requests WHERE token_hash = ? AND status = 'answered' AND pulled = 0)`},
	}
}

// pushRequest queues a validated sim_req from t, sent from remoteAddr
// ("IP:port"), and returns its rid.
func (s *store) pushRequest(ctx context.Context, t token, simReq []byte, remoteAddr string) (string, error) {
	rid := newRID()
	now := s.nowMS()
	expiresAt := now + s.opts.ReqTTL.Milliseconds()
	// Known as fresh before it is committed: once it is, it may be leased
	// and answered at once, and the answer forgets it (answerIn).
	s.fresh.add(rid, t.Hash, expiresAt, now)
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		return s.insertQueued(ctx, tx, t.Net, rid, t.Hash, t.PeerID, remoteAddr, simReq, now, expiresAt)
	})
	if err != nil {
		s.fresh.drop(rid)
	}
	return rid, err
}

// freshRequests are the SimClients' requests pushed through this relay and
// not answered or cancelled yet, by rid: their owner and when they expire.
// An owner's pullsmart for one need not read the store to learn that it is
// its own and pending: it waits for the answer, which comes in memory, or a
// wake-up, and reads then. A request that ends otherwise (its TTL, its last
// lease, a purge) is read at the owner's next wake-up or its wait's end.
// At most maxFresh are kept; past that the store is read.
type freshRequests struct {
	off bool // remembers nothing: other nodes may answer (a PostgreSQL store)
	mu  sync.Mutex
	m   map[string]freshRequest
}

type freshRequest struct {
	owner     string
	expiresAt int64 // ms
}

const maxFresh = 100_000

func (f *freshRequests) add(rid string, owner []byte, expiresAt, now int64) {
	if f.off {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string]freshRequest{}
	}
	if len(f.m) >= maxFresh {
		for r, e := range f.m {
			if e.expiresAt <= now {
				delete(f.m, r)
			}
		}
		if len(f.m) >= maxFresh {
			return
		}
	}
	f.m[rid] = freshRequest{string(owner), expiresAt}
}

// drop forgets rid: it is answered or cancelled.
func (f *freshRequests) drop(rid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m, rid)
}

// pending reports whether rid is owner's and still unanswered, as far as
// this relay knows, and when it expires.
func (f *freshRequests) pending(rid string, owner []byte) (expiresAt int64, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	e, ok := f.m[rid]
	return e.expiresAt, ok && e.owner == string(owner)
}

// insertQueued stores a queued request in the writer's transaction, under
// its net's byte budget, the budgets of its sender (admitSender) and its
// queue's quota (queueOf). The quota refuses last, so that the write's
// savepoint undoes the insert.
func (s *store) insertQueued(ctx context.Context, tx *sql.Tx, net, rid string, owner []byte, from, remoteAddr string, simReq []byte, now, expiresAt int64) error {
	return s.insertRequest(ctx, tx, net, rid, owner, from, remoteAddr, simReq, now, expiresAt, true)
}

// insertRequest is insertQueued; without quota, the queue's quota does not
// refuse it (a request held in memory that had its place already).
func (s *store) insertRequest(ctx context.Context, tx *sql.Tx, net, rid string, owner []byte, from, remoteAddr string, simReq []byte, now, expiresAt int64, quota bool) error {
	if err := s.syncQuotas(ctx, tx, net); err != nil {
		return err
	}
	if err := s.admitBytes(ctx, tx, net, len(simReq)); err != nil {
		return err
	}
	r := requestRow{net: net, from: from, remote: remoteAddr, queued: true, bytes: int64(len(simReq))}
	if err := s.admitSender(r); err != nil {
		return err
	}
	if _, err := tx.StmtContext(ctx, s.q.insertRequest).ExecContext(ctx, rid, net, owner, from, remoteAddr, string(simReq), now, expiresAt); err != nil {
		return err
	}
	if !quota {
		return s.counts.admitRequest(r, 0, 0)
	}
	return s.counts.admitRequest(r, s.opts.MaxQueue, int(s.viaShare(int64(s.opts.MaxQueue))))
}

// pushDetached queues request rid of net that no login sent (the
// gateway's), from the sender named from at remoteAddr. It belongs to a fresh result
// token in no net: no peer call sees it, and it reads this one request
// only. The token is stored when keep is set, readable by its secret until
// the request's retention ends; otherwise nobody holds it and the secret
// is "". expiresAt is when the request expires unanswered.
func (s *store) pushDetached(ctx context.Context, net, rid, from, remoteAddr string, simReq []byte, keep bool) (owner token, secret string, expiresAt int64, err error) {
	secret = newToken()
	now := s.nowMS()
	expiresAt = now + s.opts.ReqTTL.Milliseconds()
	// A login's peer_id never holds a colon: this one cannot clash with one.
	owner = token{Hash: secretHash(secret), PeerID: from + ":" + rid, ExpiresAt: expiresAt + s.opts.ResTTL.Milliseconds()}
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if keep {
			if _, err := tx.StmtContext(ctx, s.q.insertToken).ExecContext(ctx, owner.Hash, owner.PeerID, "", now, owner.ExpiresAt); err != nil {
				return err
			}
		}
		// The token is counted only once the request is in.
		if err := s.insertQueued(ctx, tx, net, rid, owner.Hash, from, remoteAddr, simReq, now, expiresAt); err != nil {
			return err
		}
		if keep {
			return s.counts.admitToken("", 0)
		}
		return nil
	})
	if !keep {
		secret = ""
	}
	return owner, secret, expiresAt, err
}

// storeHeld stores h, a synchronous gateway request held in memory until
// now (held.go), as the store would have it had it been stored from the
// start: queued, or, once handed out, delivered with its attempts and its
// lease (run out, for one queued again after its lease). Its bytes are
// admitted as a new request's (a budget may refuse it); its queue's quota
// does not refuse it, for it had its place there.
func (s *store) storeHeld(ctx context.Context, h *heldRequest) error {
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := s.insertRequest(ctx, tx, h.net, h.rid, h.owner.Hash, detachedFrom, h.remote, h.simReq, h.created, h.expiresAt, false); err != nil {
			return err
		}
		if h.attempt == 0 {
			return nil
		}
		s.leases.leased(h.net, h.leaseUntil)
		if _, err := tx.StmtContext(ctx, s.q.storeLeased).ExecContext(ctx, h.attempt, h.leaseUntil, h.rid); err != nil {
			return err
		}
		r := h.row()
		s.counts.unqueued(r)
		s.counts.move(queueOf(h.net, detachedFrom), statusQueued, statusDelivered, 1)
		return nil
	})
}

// leasedRequest is one request handed to a SimServer.
type leasedRequest struct {
	RID            string          `json:"rid"`
	SimReq         json.RawMessage `json:"sim_req"`
	From           string          `json:"from"`
	RemoteAddr     string          `json:"remote_addr,omitempty"` // the sender's "IP:port"
	Attempt        int             `json:"attempt"`
	LeaseExpiresAt string          `json:"lease_expires_at"`
	seq            int64
	created        int64  // ms
	expiresAt      int64  // ms
	owner          []byte // the owner's token hash

	// lastLease: when this lease runs out unanswered, the request fails
	// (--max-attempts). Its owner's waits must then look again: the moment
	// their request changes by itself moved from its TTL to this lease's end.
	lastLease bool
}

// readyState tells, without writing, whether net has a request to hand out,
// and if not, when the next lease runs out (zero if none is out).
func (s *store) readyState(ctx context.Context, net string) (ready bool, nextLease time.Time, err error) {
	now := s.nowMS()
	gen := s.leases.generation(net)
	s.queueReads.Add(1)
	var queued, redeliver bool
	var next sql.NullInt64
	err = s.q.readyState.QueryRowContext(ctx, net, now, s.opts.MaxAttempts).Scan(&queued, &redeliver, &next)
	if err != nil {
		return false, nextLease, err
	}
	if next.Valid {
		nextLease = time.UnixMilli(next.Int64)
	}
	switch {
	case redeliver:
		s.leases.learn(net, gen, now)
	default:
		s.leases.learn(net, gen, next.Int64) // 0: none out
	}
	return queued || redeliver, nextLease, nil
}

// leaseTimes knows, per net, the earliest moment a lease the store holds
// may run out, so that a SimServer's poll on a net whose queue is empty
// (the counts say so) reads the store only once one may have: 0 when none
// is out; a net it has not learned yet (since the relay started) is read.
// Every lease the store writes lowers it; readyState sets it from what it
// read, unless a lease was written meanwhile (gen).
type leaseTimes struct {
	shared bool // other nodes write leases too (PostgreSQL): every poll reads
	mu     sync.Mutex
	at     map[string]int64 // net -> ms; absent: not known
	gen    map[string]int64 // net -> leases written since the relay started
}

func (l *leaseTimes) generation(net string) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.gen[net]
}

// learn records what readyState read, begun at generation gen: the
// earliest lease end (0: none out).
func (l *leaseTimes) learn(net string, gen, at int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gen[net] != gen {
		return // a lease written meanwhile: the next read learns
	}
	if l.at == nil {
		l.at = map[string]int64{}
	}
	l.at[net] = at
}

// leased records a lease of net written to the store, until until (ms).
func (l *leaseTimes) leased(net string, until int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gen == nil {
		l.gen = map[string]int64{}
	}
	l.gen[net]++
	if at, ok := l.at[net]; ok && (at == 0 || until < at) {
		l.at[net] = until
	}
}

// due tells whether net's store must be read for a lease that may have
// run out by now (ms), and if not, when one may (zero for none out).
func (l *leaseTimes) due(net string, now int64) (read bool, next time.Time) {
	if l.shared {
		return true, time.Time{}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	at, known := l.at[net]
	switch {
	case !known || (at != 0 && at <= now):
		return true, time.Time{}
	case at == 0:
		return false, time.Time{}
	}
	return false, time.UnixMilli(at)
}

// lease hands out up to max requests of net, oldest first: queued ones and
// ones whose lease ran out, at most maxPageBytes of sim_req but at least
// one. Each is delivered for lease.
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
			bytes := 0
			for rows.Next() {
				var l leasedRequest
				var simReq string
				if err := rows.Scan(&l.seq, &l.RID, &simReq, &l.From, &l.RemoteAddr, &l.Attempt, &l.created, &l.expiresAt, &l.owner); err != nil {
					return err
				}
				l.SimReq = json.RawMessage(simReq)
				out = append(out, l)
				if bytes += len(simReq); bytes > maxPageBytes {
					break // enough for one page; trimmed below
				}
			}
			return rows.Err()
		}
		if err := scan(tx.StmtContext(ctx, s.q.leaseQueued).QueryContext(ctx, net, now, s.opts.MaxAttempts, max)); err != nil {
			return err
		}
		// Leases that ran out, only when one may have (leaseTimes).
		if due, _ := s.leases.due(net, now); due {
			if err := scan(tx.StmtContext(ctx, s.q.leaseExpired).QueryContext(ctx, net, now, s.opts.MaxAttempts, max)); err != nil {
				return err
			}
		}
		sortBySeq(out)
		if len(out) > max {
			out = out[:max]
		}
		bytes := 0
		for i := range out {
			if bytes += len(out[i].SimReq); i > 0 && bytes > maxPageBytes {
				out = out[:i] // the rest stays queued for the next poll
				break
			}
		}
		until := now + lease.Milliseconds()
		if len(out) > 0 {
			s.leases.leased(net, until) // before the commit: a read meanwhile learns nothing
		}
		mark := tx.StmtContext(ctx, s.q.markDelivered)
		for i := range out {
			if _, err := mark.ExecContext(ctx, until, out[i].seq); err != nil {
				return err
			}
		}
		fromQueue := map[string]int{} // queue (queueOf) -> requests handed out of it
		for i := range out {
			if out[i].Attempt == 0 { // stored as queued: only leases ever deliver
				fromQueue[queueOf(net, out[i].From)]++
				s.counts.unqueued(requestRow{net: net, from: out[i].From, remote: out[i].RemoteAddr})
			}
			out[i].Attempt++
			out[i].LeaseExpiresAt = formatMS(until)
			atEnd, _ := statusAt(requestTimes{stored: statusDelivered, attempt: out[i].Attempt,
				expiresAt: out[i].expiresAt, leaseExp: until}, until, s.opts.MaxAttempts)
			out[i].lastLease = atEnd == statusFailed
		}
		for queue, n := range fromQueue {
			s.counts.move(queue, statusQueued, statusDelivered, n)
		}
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
	net       string
	status    string // by the status rule: expired and failed hold from the moment they are due
	changesAt int64  // ms: when status or stream changes by itself; 0 never (statusAt, streamAt)
	attempt   int
	simRes    []byte // a streamed answer's head only
	pulled    bool
	owner     []byte // the owner's token hash
	from      string // the sender's peer_id
	remote    string // the sender's remote_addr

	stream    string // "" for an answer posted whole, else by streamAt
	bodyBytes int64  // a streamed answer's body bytes committed
}

// requestStateColumns are the columns scanState reads, in its order.
const requestStateColumns = `seq, net, status, attempt, expires_at, lease_expires_at, sim_res, pulled,
	token_hash, from_peer, remote_addr, stream, body_bytes, cancelled_at IS NOT NULL`

// gone is the error of a request that will never be answered: errExpired,
// errFailed or errCancelled; nil while it may still be, or once it is.
func (st requestState) gone() error {
	switch st.status {
	case statusExpired:
		return errExpired
	case statusFailed:
		return errFailed
	case statusCancelled:
		return errCancelled
	}
	return nil
}

func (s *store) scanState(row *sql.Row) (requestState, error) {
	var st requestState
	var r requestTimes
	var lease sql.NullInt64
	var simRes, stream sql.NullString
	err := row.Scan(&st.seq, &st.net, &r.stored, &r.attempt, &r.expiresAt, &lease, &simRes, &st.pulled,
		&st.owner, &st.from, &st.remote, &stream, &st.bodyBytes, &r.cancelled)
	if errors.Is(err, sql.ErrNoRows) {
		return st, errNotFound
	}
	if err != nil {
		return st, err
	}
	r.leaseExp = lease.Int64
	st.attempt = r.attempt
	st.simRes = []byte(simRes.String)
	now := s.nowMS()
	st.status, st.changesAt = statusAt(r, now, s.opts.MaxAttempts)
	if st.status == statusAnswered {
		st.stream, st.changesAt = streamAt(stream.String, r.cancelled, r.leaseExp, now)
	}
	return st, nil
}

// next is when st changes by itself, as a time; zero if never.
func (st requestState) next() time.Time {
	if st.changesAt == 0 {
		return time.Time{}
	}
	return time.UnixMilli(st.changesAt)
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

// markPulledRID is markPulled for an answer that came in memory, whose
// row was not read: by its rid.
func (s *store) markPulledRID(rid string) {
	s.writeLater(func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.StmtContext(ctx, s.q.markPulledRID).ExecContext(ctx, rid)
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
// it pulled; ok is false if there is none. streamed: simRes is the head
// of a streamed answer, whose body is read apart.
func (s *store) takeUnpulled(ctx context.Context, t token) (rid string, simRes []byte, streamed, ok bool, err error) {
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var res string
		err := tx.StmtContext(ctx, s.q.takeUnpulled).QueryRowContext(ctx, t.Hash).Scan(&rid, &res, &streamed)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		ok, simRes = err == nil, []byte(res)
		return err
	})
	return rid, simRes, streamed, ok, err
}

// streamHead marks an answer as the head of a streamed answer (docs/API.md,
// "Streamed answers and cancellation"): body is its first bytes, stored
// as its first part, and lease how long the stream stays open without a
// part or an extend.
type streamHead struct {
	body  []byte
	lease time.Duration
}

// answer stores simRes for rid of k's net and returns the owner's token
// hash; with open, simRes is a streamed answer's head (its simBody null)
// and its stream opens. A request answered before, expired, failed or
// cancelled, or of another net, is refused.
func (s *store) answer(ctx context.Context, k serverKey, rid string, simRes []byte, open *streamHead) (owner []byte, err error) {
	var now int64
	err = s.write(ctx, s.answerIn(k, rid, simRes, open, &owner, &now))
	if h := s.hooks.Load(); h != nil && err == nil {
		h.answered(rid, now)
	}
	return owner, err
}

// simAnswer is one whole answer of a batch (pullreqsmart's answers).
type simAnswer struct {
	rid    string
	simRes []byte
}

// answerAll stores each of list's whole answers as answer does, each in a
// write of its own, all queued before the first is waited for, so that
// they share a group commit and one refused answer leaves the others be.
// owners[i] and errs[i] are answer's results for list[i].
func (s *store) answerAll(ctx context.Context, k serverKey, list []simAnswer) (owners [][]byte, errs []error) {
	owners, errs = make([][]byte, len(list)), make([]error, len(list))
	nows := make([]int64, len(list))
	waits := make([]<-chan error, len(list))
	for i, a := range list {
		waits[i] = s.writeAsync(ctx, s.answerIn(k, a.rid, a.simRes, nil, &owners[i], &nows[i]))
	}
	h := s.hooks.Load()
	for i, wait := range waits {
		if errs[i] = <-wait; errs[i] == nil && h != nil {
			h.answered(list[i].rid, nows[i])
		}
	}
	return owners, errs
}

// answerIn is answer's write: it sets *owner and *now when it applies.
func (s *store) answerIn(k serverKey, rid string, simRes []byte, open *streamHead, owner *[]byte, now *int64) func(ctx context.Context, tx *sql.Tx) error {
	net := k.net
	return func(ctx context.Context, tx *sql.Tx) error {
		if err := s.claimIn(ctx, tx, k); err != nil {
			return err
		}
		n := len(simRes)
		if open != nil {
			n += len(open.body)
		}
		// An answer drains its net's queue: the net's budget does not
		// refuse it (others' requests filling the net must not stop its
		// SimServer's answers), but it is stored for whoever asked, and
		// counts in their address's budget as their request does
		// (admitParts below), so a SimServer answering its own requests
		// cannot fill the store.
		if err := s.admitBytes(ctx, tx, "", n); err != nil {
			return err
		}
		*now = s.nowMS()
		var seq int64
		var attempt int
		r := requestRow{net: net}
		row := func() *sql.Row {
			if open == nil {
				return tx.StmtContext(ctx, s.q.answer).QueryRowContext(ctx, string(simRes), *now, rid, net, s.opts.MaxAttempts)
			}
			return tx.StmtContext(ctx, s.q.answerHead).QueryRowContext(ctx, string(simRes), *now, rid, net, s.opts.MaxAttempts,
				*now+open.lease.Milliseconds(), len(open.body))
		}()
		err := row.Scan(&seq, owner, &attempt, &r.from, &r.remote)
		s.fresh.drop(rid) // answered, or not pending: its owner's waits read the store
		if errors.Is(err, sql.ErrNoRows) {
			if err := s.refusal(ctx, tx, net, rid); err != nil {
				return err
			}
			return fmt.Errorf("request %s of net %s: answer refused in an unexpected state", rid, net)
		}
		if err != nil {
			return err
		}
		if open != nil && len(open.body) > 0 {
			if _, err := tx.StmtContext(ctx, s.q.insertPart).ExecContext(ctx, seq, 0, open.body); err != nil {
				return err
			}
		}
		if err := s.admitParts(requestRow{net: net, from: r.from, remote: r.remote, bytes: int64(n)}); err != nil {
			return err // the savepoint undoes the answer
		}
		s.counts.answered(r, attempt)
		return nil
	}
}

// extend renews the lease on rid of k's net to now+lease, if it is still
// held: a delivered request's, or an open stream's. For a stream it
// returns the owner's token hash, whose waits must look again: the moment
// the stream is aborted moved.
func (s *store) extend(ctx context.Context, k serverKey, rid string, lease time.Duration) (until int64, streamOwner []byte, err error) {
	net := k.net
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		if err := s.claimIn(ctx, tx, k); err != nil {
			return err
		}
		now := s.nowMS()
		until = now + lease.Milliseconds()
		res, err := tx.StmtContext(ctx, s.q.extend).ExecContext(ctx, until, now, rid, net, s.opts.MaxAttempts)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n > 0 {
			return nil
		}
		// An open stream holds a lease too.
		err = tx.StmtContext(ctx, s.q.extendStream).QueryRowContext(ctx, until, now, rid, net).Scan(&streamOwner)
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if err := s.refusal(ctx, tx, net, rid); err != nil {
			return err
		}
		return errLeaseLost
	})
	return until, streamOwner, err
}

// refusal explains why a SimServer's write to rid did not apply: not found
// (also for another net's rid), answered, expired, failed or cancelled, or
// its stream aborted; nil otherwise.
func (s *store) refusal(ctx context.Context, tx *sql.Tx, net, rid string) error {
	st, err := s.scanState(tx.StmtContext(ctx, s.q.requestForNet).QueryRowContext(ctx, rid, net))
	if err != nil {
		return err
	}
	switch {
	case st.stream == streamCancelled:
		return errCancelled
	case st.stream == streamAborted:
		return errAborted
	case st.status == statusAnswered:
		return errAnswered
	}
	return st.gone()
}
