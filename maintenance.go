// Maintenance: the janitor's purge (also `c2cvia purge`) and the reads
// behind `c2cvia inspect`.

package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"log/slog"
	"sort"
	"time"
)

// purgeOptions choose what purge removes: by default what has outlived its
// retention; All: every request, whatever its state. Net limits it to one net.
type purgeOptions struct {
	Net    string
	All    bool
	DryRun bool
}

// purgeReport counts what purge removed (or would remove).
type purgeReport struct {
	Requests map[string]map[string]int `json:"requests"` // net -> status -> count
	Messages map[string]int            `json:"messages"` // net -> count; nil when none
	Tokens   int                       `json:"tokens"`   // expired logins
}

func (r purgeReport) requests() int {
	n := 0
	for _, byStatus := range r.Requests {
		for _, c := range byStatus {
			n += c
		}
	}
	return n
}

func (r purgeReport) messages() int {
	n := 0
	for _, c := range r.Messages {
		n += c
	}
	return n
}

func (r purgeReport) total() int { return r.requests() + r.messages() + r.Tokens }

var errDryRun = errors.New("dry run")

// purge writes down the expired and failed statuses that are due, then
// deletes what purgeOptions select, in one transaction. A dry run counts the
// same and rolls back.
func (s *store) purge(ctx context.Context, o purgeOptions) (purgeReport, error) {
	rep := purgeReport{Requests: map[string]map[string]int{}}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		rep = purgeReport{Requests: map[string]map[string]int{}}
		now := s.nowMS()
		netCond, args := "", []any{}
		if o.Net != "" {
			netCond, args = " AND net = ?", []any{o.Net}
		}
		with := func(a ...any) []any { return append(a, args...) }
		counts := newCountsDelta() // applied at the end, unless a dry run
		res, err := tx.ExecContext(ctx, `UPDATE requests SET status = 'failed', done_at = lease_expires_at, lease_expires_at = NULL
			WHERE status = 'delivered' AND attempt >= ? AND lease_expires_at <= ? AND lease_expires_at < expires_at`+netCond,
			with(s.opts.MaxAttempts, now)...)
		if err != nil {
			return err
		}
		failed, _ := res.RowsAffected()
		counts.move("", statusDelivered, statusFailed, int(failed))
		err = eachRow(ctx, tx, `UPDATE requests SET status = 'expired', done_at = expires_at, lease_expires_at = NULL
			WHERE status IN ('queued', 'delivered') AND expires_at <= ?`+netCond+` RETURNING net, attempt`, with(now),
			func(rows *sql.Rows) error {
				var net string
				var attempt int
				err := rows.Scan(&net, &attempt)
				counts.move(net, wasStatus(attempt), statusExpired, 1)
				return err
			})
		if err != nil {
			return err
		}
		cond, condArgs := `status IN ('answered', 'expired', 'failed') AND done_at <= ?`+netCond, with(now-s.opts.ResTTL.Milliseconds())
		if o.All {
			cond, condArgs = `1`+netCond, args
		}
		rows, err := tx.QueryContext(ctx, `SELECT net, status, count(*) FROM requests WHERE `+cond+` GROUP BY net, status`, condArgs...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var net, status string
			var n int
			if err := rows.Scan(&net, &status, &n); err != nil {
				return err
			}
			if rep.Requests[net] == nil {
				rep.Requests[net] = map[string]int{}
			}
			rep.Requests[net][status] = n
			counts.move(net, status, "", n)
		}
		if err := rows.Err(); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM requests WHERE `+cond, condArgs...); err != nil {
			return err
		}
		if err := s.purgeMessages(ctx, tx, o, now, &rep); err != nil {
			return err
		}
		err = eachRow(ctx, tx, `DELETE FROM tokens WHERE expires_at <= ?`+netCond+` RETURNING net`, with(now),
			func(rows *sql.Rows) error {
				var net string
				err := rows.Scan(&net)
				counts.tokens[net]--
				rep.Tokens++
				return err
			})
		if err != nil {
			return err
		}
		if o.DryRun {
			return errDryRun // roll back: nothing of the above stays
		}
		s.counts.apply(counts)
		return nil
	})
	if errors.Is(err, errDryRun) {
		err = nil
	}
	if err == nil && !o.DryRun {
		s.forgetExpiredTokens()
		if s.msgs != nil {
			s.msgs.dropExpired(s.nowMS())
		}
	}
	return rep, err
}

// purgeMessages deletes, inside purge's transaction, the peer messages past
// their retention (with All: every message of the scope), the subscriptions
// of the logins that purge deletes, and subscription intervals that no kept
// message falls in. It runs before the tokens are deleted.
func (s *store) purgeMessages(ctx context.Context, tx *sql.Tx, o purgeOptions, now int64, rep *purgeReport) error {
	netCond, args := "", []any{}
	if o.Net != "" {
		netCond, args = " AND net = ?", []any{o.Net}
	}
	cond, condArgs := `expires_at <= ?`+netCond, append([]any{now}, args...)
	if o.All {
		cond, condArgs = `1`+netCond, args
	}
	rows, err := tx.QueryContext(ctx, `SELECT net, count(*) FROM messages WHERE `+cond+` GROUP BY net`, condArgs...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		var net string
		var n int
		if err := rows.Scan(&net, &n); err != nil {
			return err
		}
		if rep.Messages == nil {
			rep.Messages = map[string]int{}
		}
		rep.Messages[net] = n
	}
	if err := rows.Err(); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM messages WHERE `+cond, condArgs...); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM subscriptions WHERE peer_id IN (
		SELECT peer_id FROM tokens WHERE expires_at <= ?`+netCond+`)`, append([]any{now}, args...)...); err != nil {
		return err
	}
	// An interval (from_id, until_id] below the oldest kept message holds
	// none, and no new message falls in it.
	_, err = tx.ExecContext(ctx, `DELETE FROM subscriptions WHERE until_id IS NOT NULL
		AND until_id < coalesce((SELECT min(id) FROM messages), 9223372036854775807)`+netCond, args...)
	return err
}

// forgetExpiredTokens drops expired tokens from the in-memory caches.
func (s *store) forgetExpiredTokens() {
	now := s.nowMS()
	s.tokens.Range(func(k, v any) bool {
		if v.(token).ExpiresAt <= now {
			if _, loaded := s.tokens.LoadAndDelete(k); loaded {
				s.nTokens.Add(-1)
			}
		}
		return true
	})
	s.seen.Range(func(k, v any) bool {
		if v.(*lastSeen).expiresAt <= now {
			if _, loaded := s.seen.LoadAndDelete(k); loaded {
				s.nSeen.Add(-1)
			}
		}
		return true
	})
}

// runJanitor purges every interval until ctx ends.
func runJanitor(ctx context.Context, log *slog.Logger, st *store, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := st.syncCounts(ctx); err != nil && ctx.Err() == nil {
				log.Error("janitor: count the store", "err", err)
			}
			rep, err := st.purge(ctx, purgeOptions{})
			if err != nil {
				if ctx.Err() == nil {
					log.Error("janitor", "err", err)
				}
				continue
			}
			if n := rep.total(); n > 0 {
				log.Info("janitor removed expired entries", "removed", n, "tokens", rep.Tokens)
			}
		}
	}
}

// effectiveStatusSQL is effectiveStatus (queue.go) in SQL, for inspect.
const effectiveStatusSQL = `CASE
	WHEN status = 'delivered' AND attempt >= ?1 AND lease_expires_at <= ?2 AND lease_expires_at < expires_at THEN 'failed'
	WHEN status IN ('queued', 'delivered') AND expires_at <= ?2 THEN 'expired'
	ELSE status END`

// netSummary is one net in `inspect`.
type netSummary struct {
	Net            string         `json:"net"`
	Requests       map[string]int `json:"requests"` // by status
	OldestQueued   string         `json:"oldest_queued_at,omitempty"`
	OldestQueuedMS int64          `json:"-"`
	Claimed        bool           `json:"claimed"`
	LastPoll       string         `json:"last_poll_at,omitempty"`
	LastPollMS     int64          `json:"-"`
	Tokens         int            `json:"tokens"`   // valid logins
	Messages       int            `json:"messages"` // peer messages kept (not expired)
}

// summary lists every net the store knows, by name.
func (s *store) summary(ctx context.Context) ([]*netSummary, error) {
	now := s.nowMS()
	nets := map[string]*netSummary{}
	get := func(name string) *netSummary {
		if nets[name] == nil {
			nets[name] = &netSummary{Net: name, Requests: map[string]int{}}
		}
		return nets[name]
	}
	err := eachRow(ctx, s.r, `SELECT net, `+effectiveStatusSQL+` AS st, count(*), min(created_at)
		FROM requests GROUP BY net, st`, []any{s.opts.MaxAttempts, now}, func(rows *sql.Rows) error {
		var net, status string
		var n int
		var oldest int64
		if err := rows.Scan(&net, &status, &n, &oldest); err != nil {
			return err
		}
		ns := get(net)
		ns.Requests[status] = n
		if status == statusQueued {
			ns.OldestQueuedMS, ns.OldestQueued = oldest, formatMS(oldest)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = eachRow(ctx, s.r, `SELECT name, last_poll_at FROM nets`, nil, func(rows *sql.Rows) error {
		var name string
		var last sql.NullInt64
		if err := rows.Scan(&name, &last); err != nil {
			return err
		}
		ns := get(name)
		ns.Claimed = true
		if last.Valid {
			ns.LastPollMS, ns.LastPoll = last.Int64, formatMS(last.Int64)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = eachRow(ctx, s.r, `SELECT net, count(*) FROM tokens WHERE expires_at > ? GROUP BY net`, []any{now}, func(rows *sql.Rows) error {
		var name string
		var n int
		if err := rows.Scan(&name, &n); err != nil {
			return err
		}
		get(name).Tokens = n
		return nil
	})
	if err != nil {
		return nil, err
	}
	if s.version < 2 {
		return sortedNets(nets), nil // no peer messages before schema step 2
	}
	err = eachRow(ctx, s.r, `SELECT net, count(*) FROM messages WHERE expires_at > ? GROUP BY net`, []any{now}, func(rows *sql.Rows) error {
		var name string
		var n int
		if err := rows.Scan(&name, &n); err != nil {
			return err
		}
		get(name).Messages = n
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sortedNets(nets), nil
}

func sortedNets(nets map[string]*netSummary) []*netSummary {
	out := make([]*netSummary, 0, len(nets))
	for _, ns := range nets {
		out = append(out, ns)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Net < out[j].Net })
	return out
}

// requestInfo is one request in `inspect NET` and `inspect --rid`.
type requestInfo struct {
	RID            string          `json:"rid"`
	Net            string          `json:"net"`
	Status         string          `json:"status"`
	Attempt        int             `json:"attempt"`
	From           string          `json:"from"`
	Method         string          `json:"method"`
	Endpoint       string          `json:"endpoint"`
	CreatedAt      string          `json:"created_at"`
	LeaseExpiresAt string          `json:"lease_expires_at,omitempty"`
	DoneAt         string          `json:"done_at,omitempty"`
	SimReq         json.RawMessage `json:"sim_req,omitempty"` // --rid only
	SimRes         json.RawMessage `json:"sim_res,omitempty"`
	simReqText     string
	simResText     string
}

const requestInfoSQL = `SELECT rid, net, ` + effectiveStatusSQL + `, attempt, from_peer,
	coalesce(json_extract(sim_req, '$.simMethod'), ''), coalesce(json_extract(sim_req, '$.simEndpoint'), ''),
	created_at, lease_expires_at, done_at, sim_req, coalesce(sim_res, '') FROM requests`

func scanRequestInfo(rows *sql.Rows) (requestInfo, error) {
	var ri requestInfo
	var created int64
	var lease, done sql.NullInt64
	err := rows.Scan(&ri.RID, &ri.Net, &ri.Status, &ri.Attempt, &ri.From, &ri.Method, &ri.Endpoint,
		&created, &lease, &done, &ri.simReqText, &ri.simResText)
	ri.CreatedAt = formatMS(created)
	if lease.Valid && ri.Status == statusDelivered {
		ri.LeaseExpiresAt = formatMS(lease.Int64)
	}
	if done.Valid {
		ri.DoneAt = formatMS(done.Int64)
	}
	return ri, err
}

// listRequests returns the newest limit requests of net, newest first.
func (s *store) listRequests(ctx context.Context, net string, limit int) ([]requestInfo, error) {
	var out []requestInfo
	err := eachRow(ctx, s.r, requestInfoSQL+` WHERE net = ?3 ORDER BY seq DESC LIMIT ?4`,
		[]any{s.opts.MaxAttempts, s.nowMS(), net, limit}, func(rows *sql.Rows) error {
			ri, err := scanRequestInfo(rows)
			out = append(out, ri)
			return err
		})
	return out, err
}

// requestDetail returns one request with its stored sim_req and sim_res.
func (s *store) requestDetail(ctx context.Context, rid string) (requestInfo, error) {
	var ri requestInfo
	found := false
	err := eachRow(ctx, s.r, requestInfoSQL+` WHERE rid = ?3`, []any{s.opts.MaxAttempts, s.nowMS(), rid},
		func(rows *sql.Rows) error {
			var err error
			ri, err = scanRequestInfo(rows)
			found = true
			ri.SimReq = json.RawMessage(ri.simReqText)
			if ri.simResText != "" {
				ri.SimRes = json.RawMessage(ri.simResText)
			}
			return err
		})
	if err == nil && !found {
		err = errNotFound
	}
	return ri, err
}

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
