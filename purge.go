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
		cfg    = defaultConfig() // the relay's lifetimes that purge has no flag for
		o      purgeOptions
		asJSON bool
	)
	cmd := checkSettings(&cobra.Command{
		Use:   "purge",
		Short: "Remove expired requests, messages and tokens from a store now",
		Long: `Removes what the relay's janitor removes: answered, expired and failed
requests past --res-ttl, peer messages past their retention, and expired login
tokens with their subscriptions. --all removes every request and message (queued
ones too), --net limits it to one net, --dry-run only counts.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s := newSettingErrors(cmd)
			cfg.checkStore(s)
			if o.Net != "" && !validName(o.Net) {
				s.badFlag("net", "must be a net name: 1-64 characters of A-Z a-z 0-9 . _ -")
			}
			if err := s.err(); err != nil {
				return err
			}
			opts := cfg.storeOptions()
			opts.MustExist = true // never make a store out of a wrong path
			st, err := openStore(cmd.Context(), cfg.DB, opts)
			if err != nil {
				return err
			}
			defer st.Close()
			rep, err := st.purge(cmd.Context(), o)
			if err != nil {
				return err
			}
			if asJSON {
				messages := rep.Messages
				if messages == nil {
					messages = map[string]int{}
				}
				return printJSON(stdout, map[string]any{"dry_run": o.DryRun, "requests": rep.Requests,
					"messages": messages, "tokens": rep.Tokens})
			}
			printPurge(stdout, rep, o.DryRun)
			return nil
		},
	})
	fs := cmd.Flags()
	addStoreFlags(fs, &cfg)
	fs.Lookup("db").Usage += " (must exist: purge never makes one)"
	fs.StringVar(&o.Net, "net", "", "only this net")
	fs.BoolVar(&o.All, "all", false, "remove every request, not only expired ones")
	fs.BoolVar(&o.DryRun, "dry-run", false, "count what would be removed; remove nothing")
	fs.BoolVar(&asJSON, "json", false, "print JSON for scripts")
	neverFromEnv(fs, "all")
	documentEnv(fs)
	return cmd
}

func printPurge(w io.Writer, rep purgeReport, dryRun bool) {
	verb := "removed"
	if dryRun {
		verb = "would remove"
	}
	fmt.Fprintf(w, "%s %d requests and %d expired tokens\n", verb, rep.requests(), rep.Tokens)
	nets := make([]string, 0, len(rep.Requests))
	for n := range rep.Requests {
		nets = append(nets, n)
	}
	sort.Strings(nets)
	for _, n := range nets {
		var parts []string
		for _, s := range statusOrder {
			if c := rep.Requests[n][s]; c > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", c, s))
			}
		}
		fmt.Fprintf(w, "  %s: %s\n", n, strings.Join(parts, ", "))
	}
	if len(rep.Messages) == 0 {
		return
	}
	fmt.Fprintf(w, "%s %d peer messages\n", verb, rep.messages())
	nets = nets[:0]
	for n := range rep.Messages {
		nets = append(nets, n)
	}
	sort.Strings(nets)
	for _, n := range nets {
		fmt.Fprintf(w, "  %s: %d\n", n, rep.Messages[n])
	}
}

// purgeOptions choose what purge removes: by default what has outlived its
// retention; All: every request, whatever its state. Net limits it to one net.
type purgeOptions struct {
	Net    string
	All    bool
	DryRun bool
	Batch  int // rows one statement of the purge may touch; 0: all
}

// purgeReport counts what purge removed (or would remove).
type purgeReport struct {
	Requests map[string]map[string]int `json:"requests"` // net -> status -> count
	Messages map[string]int            `json:"messages"` // net -> count; nil when none
	Tokens   int                       `json:"tokens"`   // expired logins

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
	r.Tokens += o.Tokens
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
// deletes what purgeOptions select, in one write. A dry run counts the
// same and rolls back. With Batch, each statement touches at most Batch
// rows (the oldest due first) and rep.more says whether one reached it.
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
		limit := -1 // SQLite: no limit
		if o.Batch > 0 {
			limit = o.Batch
		}
		lim := strconv.Itoa(limit)
		full := func(n int) {
			if n == limit {
				rep.more = true
			}
		}
		counts := newCountsDelta() // applied at the end, unless a dry run
		// The status rule decides; the conditions before it let SQLite
		// use the partial indexes on the stored status.
		res, err := tx.ExecContext(ctx, `UPDATE requests SET status = 'failed', done_at = lease_expires_at, lease_expires_at = NULL
			WHERE seq IN (SELECT seq FROM requests
				WHERE status = 'delivered' AND lease_expires_at <= ?1 AND `+statusSQL("?1", "?2")+` = 'failed'`+netCond+`
				LIMIT `+lim+`)`,
			with(now, s.opts.MaxAttempts)...)
		if err != nil {
			return err
		}
		failed, _ := res.RowsAffected()
		full(int(failed))
		counts.move("", statusDelivered, statusFailed, int(failed))
		expired := 0
		err = eachRow(ctx, tx, `UPDATE requests SET status = 'expired', done_at = expires_at, lease_expires_at = NULL
			WHERE seq IN (SELECT seq FROM requests
				WHERE status IN ('queued', 'delivered') AND expires_at <= ?1 AND `+statusSQL("?1", "?2")+` = 'expired'`+netCond+`
				ORDER BY expires_at LIMIT `+lim+`)
			RETURNING net, attempt, from_peer`, with(now, s.opts.MaxAttempts),
			func(rows *sql.Rows) error {
				expired++
				var net, from string
				var attempt int
				err := rows.Scan(&net, &attempt, &from)
				counts.move(queueOf(net, from), wasStatus(attempt), statusExpired, 1)
				return err
			})
		if err != nil {
			return err
		}
		full(expired)
		cond, condArgs := `status IN ('answered', 'expired', 'failed') AND done_at <= ?`+netCond, with(now-s.opts.ResTTL.Milliseconds())
		if o.All {
			cond, condArgs = `1`+netCond, args
		}
		deleted := 0
		err = eachRow(ctx, tx, `DELETE FROM requests WHERE seq IN (SELECT seq FROM requests WHERE `+cond+` LIMIT `+lim+`)
			RETURNING net, status, from_peer = 'via'`, condArgs, func(rows *sql.Rows) error {
			var net, status string
			var via bool
			if err := rows.Scan(&net, &status, &via); err != nil {
				return err
			}
			deleted++
			if rep.Requests[net] == nil {
				rep.Requests[net] = map[string]int{}
			}
			rep.Requests[net][status]++
			from := ""
			if via {
				from = detachedFrom
			}
			counts.move(queueOf(net, from), status, "", 1)
			return nil
		})
		if err != nil {
			return err
		}
		full(deleted)
		if err := s.purgeMessages(ctx, tx, o, now, limit, &rep, counts); err != nil {
			return err
		}
		// The logins purgeMessages took the subscriptions of: the same
		// subquery, in the same transaction.
		tokens := 0
		err = eachRow(ctx, tx, `DELETE FROM tokens WHERE token_hash IN (`+expiredTokensSQL(netCond, lim)+`) RETURNING net`,
			with(now), func(rows *sql.Rows) error {
				var net string
				err := rows.Scan(&net)
				counts.tokens[net]--
				tokens++
				return err
			})
		if err != nil {
			return err
		}
		rep.Tokens = tokens
		full(tokens)
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
// message falls in, each at most limit rows (-1: all). It runs before the
// tokens are deleted.
func (s *store) purgeMessages(ctx context.Context, tx *sql.Tx, o purgeOptions, now int64, limit int, rep *purgeReport, counts countsDelta) error {
	netCond, args := "", []any{}
	if o.Net != "" {
		netCond, args = " AND net = ?", []any{o.Net}
	}
	lim := strconv.Itoa(limit)
	cond, condArgs := `expires_at <= ?`+netCond, append([]any{now}, args...)
	if o.All {
		cond, condArgs = `1`+netCond, args
	}
	deleted := 0
	err := eachRow(ctx, tx, `DELETE FROM messages WHERE id IN (SELECT id FROM messages WHERE `+cond+` ORDER BY id LIMIT `+lim+`)
		RETURNING net`, condArgs, func(rows *sql.Rows) error {
		var net string
		if err := rows.Scan(&net); err != nil {
			return err
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
	err = eachRow(ctx, tx, `DELETE FROM subscriptions WHERE peer_id IN (
		SELECT peer_id FROM tokens WHERE token_hash IN (`+expiredTokensSQL(netCond, lim)+`))
		RETURNING net, topic, until_id IS NULL`, append([]any{now}, args...), func(rows *sql.Rows) error {
		var net, topic string
		var open bool
		err := rows.Scan(&net, &topic, &open)
		if open {
			counts.topics[topicKey(net, topic)]--
		}
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
	if limit > 0 && (deleted == limit || int(closed) == limit) {
		rep.more = true
	}
	return nil
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
func (s *store) purgeBatches(ctx context.Context, batch int, after func(purgeReport)) (purgeReport, error) {
	total := purgeReport{Requests: map[string]map[string]int{}}
	for {
		rep, err := s.purge(ctx, purgeOptions{Batch: batch})
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
		}
	}
}
