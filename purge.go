// Purge: what has outlived its retention leaves the store, written down
// by the janitor every --janitor-every and by `c2cvia purge` on demand.

package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newPurgeCmd(stdout io.Writer) *cobra.Command {
	var (
		db     string
		o      purgeOptions
		asJSON bool
	)
	cmd := checkSettings(&cobra.Command{
		Use:   "purge",
		Short: "Remove expired requests, messages and tokens from a store now",
		Long: `Does what the relay's janitor does, with the lifetimes the relay serving the
store recorded in it (--res-ttl, --max-attempts; serve's defaults for a store
no relay of this version has served): marks requests past their TTL expired
and those handed out too often failed, then removes answered, expired and
failed requests past --res-ttl, peer messages past their retention, and
expired login tokens with their subscriptions. --all removes every request
and message (queued ones too), --net limits it to one net, --dry-run only
reports what it would change.

On a PostgreSQL store (--db postgres://…) it runs beside the relays serving
it, with the lifetimes they recorded, in writes of 1,000 rows a statement as
their janitors do (a dry run and --all are one write each), one purge at a
time (an advisory lock). It runs no VACUUM: PostgreSQL's autovacuum reuses
the space of the rows removed.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s := newSettingErrors(cmd)
			if db == "" {
				s.badFlag("db", "must name a SQLite file or a postgres:// URL")
			}
			if o.Net != "" && !validName(o.Net) {
				s.badFlag("net", "must be a net name: 1-64 characters of A-Z a-z 0-9 . _ -")
			}
			if err := s.err(); err != nil {
				return err
			}
			opts := defaultConfig().storeOptions() // until the store says otherwise
			opts.MustExist = true                  // never make a store out of a wrong path
			st, err := openStore(cmd.Context(), db, opts)
			if err != nil {
				return err
			}
			defer st.Close()
			var rep purgeReport
			if st.pg && !o.DryRun && !o.All {
				// Relays serve the database meanwhile, each with one
				// connection that writes: writes of a janitor's batch
				// hold their row locks for milliseconds, not the
				// whole purge. A dry run (rolled back) and --all (one
				// moment's requests, also on SQLite) are one write.
				o.Batch = janitorBatch
				rep, err = st.purgeInBatches(cmd.Context(), o, nil)
			} else {
				rep, err = st.purge(cmd.Context(), o)
			}
			if err != nil {
				return err
			}
			lt := st.lifetimes()
			if asJSON {
				messages := rep.Messages
				if messages == nil {
					messages = map[string]int{}
				}
				return printJSON(stdout, map[string]any{"dry_run": o.DryRun, "marked": rep.Marked, "requests": rep.Requests,
					"messages": messages, "tokens": rep.Tokens, "released": nonNil(rep.Released), "lifetimes": lt})
			}
			if lt.From == lifetimesDefaults {
				fmt.Fprintf(stdout, "no relay of this version has recorded its lifetimes in %s: using serve's defaults (res-ttl %s, max-attempts %d)\n",
					storeName(db), lt.ResTTL, lt.MaxAttempts)
			}
			printPurge(stdout, rep, o.DryRun)
			return nil
		},
	})
	fs := cmd.Flags()
	fs.StringVar(&db, "db", "c2cvia.db", dbFlagUsage+" (must exist: purge never makes one)")
	fs.StringVar(&o.Net, "net", "", "only this net")
	fs.BoolVar(&o.All, "all", false, "remove every request, not only expired ones")
	fs.BoolVar(&o.DryRun, "dry-run", false, "report what would be marked and removed; change nothing")
	fs.BoolVar(&asJSON, "json", false, "print JSON for scripts")
	neverFromEnv(fs, "all")
	documentEnv(fs)
	return cmd
}

// storeLifetimes are the lifetimes a store applies, for purge and inspect
// to show: From is lifetimesRecorded or lifetimesDefaults.
type storeLifetimes struct {
	ReqTTL      string `json:"req_ttl"`
	ResTTL      string `json:"res_ttl"`
	TokenTTL    string `json:"token_ttl"`
	MsgTTL      string `json:"msg_ttl"`
	MaxAttempts int    `json:"max_attempts"`
	ClaimTTL    string `json:"claim_ttl"` // 0s: claims never lapse
	From        string `json:"from"`
}

func (s *store) lifetimes() storeLifetimes {
	o := s.opts
	return storeLifetimes{ReqTTL: o.ReqTTL.String(), ResTTL: o.ResTTL.String(), TokenTTL: o.TokenTTL.String(),
		MsgTTL: o.MsgTTL.String(), MaxAttempts: o.MaxAttempts, ClaimTTL: o.ClaimTTL.String(), From: o.LifetimesFrom}
}

func printPurge(w io.Writer, rep purgeReport, dryRun bool) {
	verb, markVerb := "removed", "marked"
	if dryRun {
		verb, markVerb = "would remove", "would mark"
	}
	if n := rep.marked(); n > 0 {
		fmt.Fprintf(w, "%s %d requests expired or failed\n", markVerb, n)
		printByNet(w, rep.Marked)
	}
	fmt.Fprintf(w, "%s %d requests and %d expired tokens\n", verb, rep.requests(), rep.Tokens)
	printByNet(w, rep.Requests)
	if len(rep.Released) > 0 {
		release := "released"
		if dryRun {
			release = "would release"
		}
		fmt.Fprintf(w, "%s %d unused nets: %s\n", release, len(rep.Released), strings.Join(rep.Released, ", "))
	}
	if len(rep.Messages) == 0 {
		return
	}
	fmt.Fprintf(w, "%s %d peer messages\n", verb, rep.messages())
	nets := make([]string, 0, len(rep.Messages))
	for n := range rep.Messages {
		nets = append(nets, n)
	}
	sort.Strings(nets)
	for _, n := range nets {
		fmt.Fprintf(w, "  %s: %d\n", n, rep.Messages[n])
	}
}

// printByNet prints counts by net and status, one line per net.
func printByNet(w io.Writer, byNet map[string]map[string]int) {
	nets := make([]string, 0, len(byNet))
	for n := range byNet {
		nets = append(nets, n)
	}
	sort.Strings(nets)
	for _, n := range nets {
		var parts []string
		for _, s := range statusOrder {
			if c := byNet[n][s]; c > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", c, s))
			}
		}
		fmt.Fprintf(w, "  %s: %s\n", n, strings.Join(parts, ", "))
	}
}

// purgeOptions choose what purge removes: by default what has outlived its
// retention; All: every request, whatever its state. Net limits it to one net.
type purgeOptions struct {
	Net    string
	All    bool
	DryRun bool
	Batch  int // rows one statement of the purge may touch; 0: all

	// skipBusy: on PostgreSQL, purge nothing when another purge of the
	// store is under way (the janitors of several nodes) rather than wait.
	skipBusy bool
}

// purgeLockKey is the first key of the advisory lock that one purge of a
// PostgreSQL store at a time holds (the second is its schema's hash):
// the janitors of the nodes serving it and `c2cvia purge` take turns
// rather than lock the same rows in different orders.
const purgeLockKey = 0x63327075 // "c2pu"

// purgeLock takes the purge lock of a PostgreSQL store for tx: it waits for
// it, or with skipBusy returns false at once when another holds it.
func (s *store) purgeLock(ctx context.Context, tx *sql.Tx, skipBusy bool) (bool, error) {
	const key = `?, hashtext(coalesce(current_schema(), ''))`
	ok := true
	var err error
	if skipBusy {
		err = tx.QueryRowContext(ctx, `SELECT pg_try_advisory_xact_lock(`+key+`)`, purgeLockKey).Scan(&ok)
	} else {
		_, err = tx.ExecContext(ctx, `SELECT pg_advisory_xact_lock(`+key+`)`, purgeLockKey)
	}
	if err != nil {
		return false, fmt.Errorf("purge: take the purge lock: %w", err)
	}
	return ok, nil
}

// purgeReport counts what purge changed (or would change).
type purgeReport struct {
	Marked   map[string]map[string]int `json:"marked"`   // net -> expired or failed -> requests marked so
	Requests map[string]map[string]int `json:"requests"` // net -> status -> count removed
	Messages map[string]int            `json:"messages"` // net -> count; nil when none
	Tokens   int                       `json:"tokens"`   // expired logins
	Released []string                  `json:"released"` // nets whose claim lapsed (--claim-ttl)

	more bool // with Batch: a statement touched Batch rows, so more may be due
}

// add counts o's removals in r too.
func (r *purgeReport) add(o purgeReport) {
	for net, byStatus := range o.Requests {
		if r.Requests[net] == nil {
			r.Requests[net] = map[string]int{}
		}
		for status, n := range byStatus {
			r.Requests[net][status] += n
		}
	}
	for net, n := range o.Messages {
		if r.Messages == nil {
			r.Messages = map[string]int{}
		}
		r.Messages[net] += n
	}
	for net, byStatus := range o.Marked {
		for status, n := range byStatus {
			r.mark(net, status, n)
		}
	}
	r.Tokens += o.Tokens
	r.Released = append(r.Released, o.Released...)
}

func (r purgeReport) requests() int { return sum(r.Requests) }

func (r purgeReport) marked() int { return sum(r.Marked) }

func sum(byNet map[string]map[string]int) int {
	n := 0
	for _, byStatus := range byNet {
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

func (r purgeReport) total() int { return r.requests() + r.messages() + r.Tokens + len(r.Released) }

// mark counts n requests of net marked status.
func (r *purgeReport) mark(net, status string, n int) {
	if n == 0 {
		return
	}
	if r.Marked[net] == nil {
		r.Marked[net] = map[string]int{}
	}
	r.Marked[net][status] += n
}

var errDryRun = errors.New("dry run")

// purge writes down the expired and failed statuses that are due, then
// deletes what purgeOptions select, in one write. A dry run counts the
// same and rolls back. With Batch, each statement touches at most Batch
// rows (the oldest due first) and rep.more says whether one reached it.
func (s *store) purge(ctx context.Context, o purgeOptions) (purgeReport, error) {
	rep := purgeReport{Marked: map[string]map[string]int{}, Requests: map[string]map[string]int{}}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		rep = purgeReport{Marked: map[string]map[string]int{}, Requests: map[string]map[string]int{}}
		if s.pg {
			if ok, err := s.purgeLock(ctx, tx, o.skipBusy); err != nil || !ok {
				return err // !ok: another node is purging now
			}
		}
		now := s.nowMS()
		netCond, args := "", []any{}
		if o.Net != "" {
			netCond, args = " AND net = ?", []any{o.Net}
		}
		with := func(a ...any) []any { return append(a, args...) }
		limit := -1 // SQLite: no limit
		if o.Batch > 0 {
			limit = o.Batch
		}
		lim := sqlLimit(limit)
		full := func(n int) {
			if n == limit {
				rep.more = true
			}
		}
		counts := newCountsDelta() // applied at the end, unless a dry run
		// The status rule decides; the conditions before it let SQLite
		// use the partial indexes on the stored status.
		// Each statement repeats its condition outside the subquery: on
		// PostgreSQL, a row another node changed meanwhile (answered,
		// handed out again) is checked again as it is now, and left alone.
		failed := 0
		dueFailed := `status = 'delivered' AND lease_expires_at <= ?1 AND ` + statusSQL("?1", "?2") + ` = 'failed'`
		err := eachRow(ctx, tx, `UPDATE requests SET status = 'failed', done_at = lease_expires_at, lease_expires_at = NULL
			WHERE seq IN (SELECT seq FROM requests WHERE `+dueFailed+netCond+` LIMIT `+lim+`) AND `+dueFailed+`
			RETURNING net`, with(now, s.opts.MaxAttempts),
			func(rows *sql.Rows) error {
				var net string
				err := rows.Scan(&net)
				failed++
				counts.move("", statusDelivered, statusFailed, 1)
				rep.mark(net, statusFailed, 1)
				return err
			})
		if err != nil {
			return err
		}
		full(failed)
		expired := 0
		dueExpired := `status IN ('queued', 'delivered') AND expires_at <= ?1 AND ` + statusSQL("?1", "?2") + ` = 'expired'`
		err = eachRow(ctx, tx, `UPDATE requests SET status = 'expired', done_at = expires_at, lease_expires_at = NULL
			WHERE seq IN (SELECT seq FROM requests WHERE `+dueExpired+netCond+` ORDER BY expires_at LIMIT `+lim+`)
				AND `+dueExpired+`
			RETURNING net, attempt, from_peer, remote_addr`, with(now, s.opts.MaxAttempts),
			func(rows *sql.Rows) error {
				expired++
				var r requestRow
				var attempt int
				err := rows.Scan(&r.net, &attempt, &r.from, &r.remote)
				counts.move(queueOf(r.net, r.from), wasStatus(attempt), statusExpired, 1)
				if attempt == 0 {
					counts.usage.unqueue(r)
				}
				rep.mark(r.net, statusExpired, 1)
				return err
			})
		if err != nil {
			return err
		}
		full(expired)
		cond, condArgs := `status IN ('answered', 'expired', 'failed') AND done_at <= ?`+netCond, with(now-s.opts.ResTTL.Milliseconds())
		if o.All {
			cond, condArgs = `1 = 1`+netCond, args
		}
		deleted := 0
		err = eachRow(ctx, tx, `DELETE FROM requests WHERE seq IN (SELECT seq FROM requests WHERE `+cond+` LIMIT `+lim+`) AND `+cond+`
			RETURNING net, status, from_peer, remote_addr, octet_length(sim_req) + coalesce(octet_length(sim_res), 0) + body_bytes - kept_from`,
			append(condArgs, condArgs...), func(rows *sql.Rows) error {
				var r requestRow
				var status string
				if err := rows.Scan(&r.net, &status, &r.from, &r.remote, &r.bytes); err != nil {
					return err
				}
				deleted++
				if rep.Requests[r.net] == nil {
					rep.Requests[r.net] = map[string]int{}
				}
				rep.Requests[r.net][status]++
				counts.move(queueOf(r.net, r.from), status, "", 1)
				r.queued = status == statusQueued
				counts.usage.add(r, -1)
				return nil
			})
		if err != nil {
			return err
		}
		full(deleted)
		if err := s.purgeMessages(ctx, tx, o, now, limit, &rep, counts); err != nil {
			return err
		}
		// The logins purgeMessages took the subscriptions of (the same
		// subquery, in the same transaction) that have none left: a login
		// with more than a batch of them goes over several writes.
		tokens := 0
		err = eachRow(ctx, tx, `DELETE FROM tokens WHERE token_hash IN (`+expiredTokensSQL(netCond, lim)+`)
			AND NOT EXISTS (SELECT 1 FROM subscriptions s WHERE s.peer_id = tokens.peer_id) AND expires_at <= ? RETURNING net`,
			append(with(now), now), func(rows *sql.Rows) error {
				var net string
				err := rows.Scan(&net)
				counts.tokens[net]--
				s.busiest.Delete(net) // its logins changed
				tokens++
				return err
			})
		if err != nil {
			return err
		}
		rep.Tokens = tokens
		full(tokens)
		if rep.Released, err = s.lapseClaims(ctx, tx, now, netCond, args); err != nil {
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
		for _, net := range rep.Released {
			s.forgetClaim(net)
		}
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
// message falls in, each at most limit rows (-1: all). It runs before the
// tokens are deleted, and purge deletes only those with no subscription
// left.
func (s *store) purgeMessages(ctx context.Context, tx *sql.Tx, o purgeOptions, now int64, limit int, rep *purgeReport, counts countsDelta) error {
	netCond, args := "", []any{}
	if o.Net != "" {
		netCond, args = " AND net = ?", []any{o.Net}
	}
	lim := sqlLimit(limit)
	cond, condArgs := `expires_at <= ?`+netCond, append([]any{now}, args...)
	if o.All {
		cond, condArgs = `1 = 1`+netCond, args
	}
	deleted := 0
	err := eachRow(ctx, tx, `DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE `+cond+` ORDER BY id LIMIT `+lim+`)
		RETURNING net, addr, octet_length(data)`, condArgs, func(rows *sql.Rows) error {
		var net, addr string
		var bytes int64
		if err := rows.Scan(&net, &addr, &bytes); err != nil {
			return err
		}
		if addr != "" {
			counts.msgAddr[addr] -= bytes // the address's budget (msgbudget.go)
		}
		if rep.Messages == nil {
			rep.Messages = map[string]int{}
		}
		rep.Messages[net]++
		deleted++
		return nil
	})
	if err != nil {
		return err
	}
	// The subscriptions of the logins purge deletes, at most limit of
	// them: a login may hold --max-subs, and a batch of logins many times
	// a batch of rows.
	dropped := 0
	err = eachRow(ctx, tx, `DELETE FROM subscriptions WHERE (net, topic, peer_id, from_id) IN (
		SELECT net, topic, peer_id, from_id FROM subscriptions WHERE peer_id IN (
			SELECT peer_id FROM tokens WHERE token_hash IN (`+expiredTokensSQL(netCond, lim)+`)) LIMIT `+lim+`)
		RETURNING net, topic, until_id IS NULL`, append([]any{now}, args...), func(rows *sql.Rows) error {
		var net, topic string
		var open bool
		err := rows.Scan(&net, &topic, &open)
		if open {
			counts.topics[topicKey(net, topic)]--
		}
		dropped++
		return err
	})
	if err != nil {
		return err
	}
	// An interval (from_id, until_id] below the oldest kept message holds
	// none, and no new message falls in it.
	res2, err := tx.ExecContext(ctx, `DELETE FROM subscriptions WHERE (net, topic, peer_id, from_id) IN (
		SELECT net, topic, peer_id, from_id FROM subscriptions WHERE until_id IS NOT NULL
		AND until_id < coalesce((SELECT min(id) FROM messages), 9223372036854775807)`+netCond+` LIMIT `+lim+`)`, args...)
	if err != nil {
		return err
	}
	closed, _ := res2.RowsAffected()
	if limit > 0 && (deleted == limit || dropped == limit || int(closed) == limit) {
		rep.more = true
	}
	return nil
}

// sqlLimit is a LIMIT clause's count: n, or with n < 0 none. SQLite's -1
// (which PostgreSQL refuses) is rewritten as NULL there (pgFragments).
func sqlLimit(n int) string {
	return strconv.Itoa(max(n, -1))
}

// expiredTokensSQL selects the token_hash of up to lim expired logins
// (those of the net in netCond), the earliest expired first: the logins one
// purge write deletes with their subscriptions. Its argument is now (and
// the net).
func expiredTokensSQL(netCond, lim string) string {
	return `SELECT token_hash FROM tokens WHERE expires_at <= ?` + netCond + ` ORDER BY expires_at, token_hash LIMIT ` + lim
}

// janitorBatch bounds what one write of the janitor touches: 1,000 rows a
// statement, about 10 to 20 ms of the writer's time here, so the writes
// queued behind it wait that long rather than for a whole expiry (45,000
// requests held the writer 420 ms in one write; BenchmarkJanitorExpire).
const janitorBatch = 1000

// purgeBatches purges what is due as a series of writes of at most batch
// rows a statement each, until one finds less than batch to do. Each is a
// write of its own: the writes queued meanwhile commit between two. after,
// if set, runs after each write with what it removed. It returns the sum.
// On PostgreSQL it purges nothing while another purge of the store runs
// (another node's janitor): that one does it.
func (s *store) purgeBatches(ctx context.Context, batch int, after func(purgeReport)) (purgeReport, error) {
	return s.purgeInBatches(ctx, purgeOptions{Batch: batch, skipBusy: true}, after)
}

// purgeInBatches is purge as a series of writes of at most o.Batch rows a
// statement, until one finds less to do.
func (s *store) purgeInBatches(ctx context.Context, o purgeOptions, after func(purgeReport)) (purgeReport, error) {
	total := purgeReport{Marked: map[string]map[string]int{}, Requests: map[string]map[string]int{}}
	for {
		rep, err := s.purge(ctx, o)
		if err != nil {
			return total, err
		}
		total.add(rep)
		if after != nil {
			after(rep)
		}
		if !rep.more {
			return total, nil
		}
	}
}

// shrinkPages bounds one janitor run's incremental vacuum: 4096 pages,
// 16 MiB of 4 KiB pages, moved in one write of a few tens of ms, so a store
// that lost 200 MB is back to size within a few minutes at the default
// --janitor-every of 15 s without holding up other writes for long.
const shrinkPages = 4096

// shrink gives up to max free pages back to the file system (PRAGMA
// incremental_vacuum: the store is made with auto_vacuum INCREMENTAL, and
// serve converts an older one at start). The file gets shorter at the next
// checkpoint. It returns the pages freed.
func (s *store) shrink(ctx context.Context, max int) (int, error) {
	var free int
	if err := s.r.QueryRowContext(ctx, `PRAGMA freelist_count`).Scan(&free); err != nil || free == 0 {
		return 0, err
	}
	n := min(free, max)
	return n, s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA incremental_vacuum(%d)`, n))
		return err
	})
}

// runJanitor purges every interval, gives free pages back and runs sweep,
// until ctx ends.
func runJanitor(ctx context.Context, log *slog.Logger, st *store, every time.Duration, sweep func()) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			sweep() // SimServers gone (oplog.go)
			if err := st.syncCounts(ctx); err != nil && ctx.Err() == nil {
				log.Error("janitor: count the store", "err", err)
			}
			if !st.janitorTurn(ctx) {
				continue // another node of the database purges
			}
			rep, err := st.purgeBatches(ctx, janitorBatch, nil)
			if err != nil {
				if ctx.Err() == nil {
					log.Error("janitor", "err", err)
				}
				continue
			}
			if n := rep.total(); n > 0 {
				log.Info("janitor removed expired entries", "removed", n, "tokens", rep.Tokens)
			}
			for _, net := range rep.Released {
				log.Info("net released: unused for --claim-ttl", "net", net)
			}
			if _, err := st.shrink(ctx, shrinkPages); err != nil && ctx.Err() == nil {
				log.Error("janitor: give free pages back", "err", err)
			}
		}
	}
}
