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
reports what it would change.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			s := newSettingErrors(cmd)
			if db == "" {
				s.badFlag("db", "must name a file")
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
			rep, err := st.purge(cmd.Context(), o)
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
					db, lt.ResTTL, lt.MaxAttempts)
			}
			printPurge(stdout, rep, o.DryRun)
			return nil
		},
	})
	fs := cmd.Flags()
	fs.StringVar(&db, "db", "c2cvia.db", "SQLite file of the store (must exist: purge never makes one)")
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
}

// purgeReport counts what purge changed (or would change).
type purgeReport struct {
	Marked   map[string]map[string]int `json:"marked"`   // net -> expired or failed -> requests marked so
	Requests map[string]map[string]int `json:"requests"` // net -> status -> count removed
	Messages map[string]int            `json:"messages"` // net -> count; nil when none
	Tokens   int                       `json:"tokens"`   // expired logins
	Released []string                  `json:"released"` // nets whose claim lapsed (--claim-ttl)
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
// deletes what purgeOptions select, in one transaction. A dry run counts the
// same and rolls back.
func (s *store) purge(ctx context.Context, o purgeOptions) (purgeReport, error) {
	rep := purgeReport{Marked: map[string]map[string]int{}, Requests: map[string]map[string]int{}}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		rep = purgeReport{Marked: map[string]map[string]int{}, Requests: map[string]map[string]int{}}
		now := s.nowMS()
		netCond, args := "", []any{}
		if o.Net != "" {
			netCond, args = " AND net = ?", []any{o.Net}
		}
		with := func(a ...any) []any { return append(a, args...) }
		counts := newCountsDelta() // applied at the end, unless a dry run
		// The status rule decides; the conditions before it let SQLite
		// use the partial indexes on the stored status.
		err := eachRow(ctx, tx, `UPDATE requests SET status = 'failed', done_at = lease_expires_at, lease_expires_at = NULL
			WHERE status = 'delivered' AND lease_expires_at <= ?1 AND `+statusSQL("?1", "?2")+` = 'failed'`+netCond+`
			RETURNING net`, with(now, s.opts.MaxAttempts),
			func(rows *sql.Rows) error {
				var net string
				err := rows.Scan(&net)
				counts.move("", statusDelivered, statusFailed, 1)
				rep.mark(net, statusFailed, 1)
				return err
			})
		if err != nil {
			return err
		}
		err = eachRow(ctx, tx, `UPDATE requests SET status = 'expired', done_at = expires_at, lease_expires_at = NULL
			WHERE status IN ('queued', 'delivered') AND expires_at <= ?1 AND `+statusSQL("?1", "?2")+` = 'expired'`+netCond+`
			RETURNING net, attempt, from_peer`, with(now, s.opts.MaxAttempts),
			func(rows *sql.Rows) error {
				var net, from string
				var attempt int
				err := rows.Scan(&net, &attempt, &from)
				counts.move(queueOf(net, from), wasStatus(attempt), statusExpired, 1)
				rep.mark(net, statusExpired, 1)
				return err
			})
		if err != nil {
			return err
		}
		cond, condArgs := `status IN ('answered', 'expired', 'failed') AND done_at <= ?`+netCond, with(now-s.opts.ResTTL.Milliseconds())
		if o.All {
			cond, condArgs = `1`+netCond, args
		}
		rows, err := tx.QueryContext(ctx, `SELECT net, status, from_peer = 'via', count(*) FROM requests WHERE `+cond+` GROUP BY 1, 2, 3`, condArgs...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var net, status string
			var via bool
			var n int
			if err := rows.Scan(&net, &status, &via, &n); err != nil {
				return err
			}
			if rep.Requests[net] == nil {
				rep.Requests[net] = map[string]int{}
			}
			rep.Requests[net][status] += n
			from := ""
			if via {
				from = detachedFrom
			}
			counts.move(queueOf(net, from), status, "", n)
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
			for _, net := range rep.Released {
				log.Info("net released: unused for --claim-ttl", "net", net)
			}
			if _, err := st.shrink(ctx, shrinkPages); err != nil && ctx.Err() == nil {
				log.Error("janitor: give free pages back", "err", err)
			}
		}
	}
}
