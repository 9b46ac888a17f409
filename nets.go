// A net's claim over its life: `c2cvia net` lists, releases and re-keys
// claimed nets; a SimServer releases its own net (POST
// /api/v1/server/release); the janitor lets the claims of nets unused for
// --claim-ttl lapse.

package main

import (
	"bufio"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

// netClaim is one claimed net, for `c2cvia net list`.
type netClaim struct {
	Net        string `json:"net"`
	ClaimedAt  string `json:"claimed_at"`
	LastPollAt string `json:"last_poll_at,omitempty"` // empty: never polled
	Pending    int    `json:"pending"`                // requests queued or delivered
}

// listClaims reads every claimed net, by name.
func (s *store) listClaims(ctx context.Context) ([]netClaim, error) {
	var out []netClaim
	err := eachRow(ctx, s.r, `SELECT name, claimed_at, coalesce(last_poll_at, 0),
			(SELECT count(*) FROM requests WHERE requests.net = nets.name AND status IN ('queued', 'delivered'))
		FROM nets ORDER BY name`, nil, func(rows *sql.Rows) error {
		var c netClaim
		var claimed, polled int64
		if err := rows.Scan(&c.Net, &claimed, &polled, &c.Pending); err != nil {
			return err
		}
		c.ClaimedAt = formatMS(claimed)
		if polled > 0 {
			c.LastPollAt = formatMS(polled)
		}
		out = append(out, c)
		return nil
	})
	return out, err
}

// releaseNet drops net's claim: the next key used on it claims it. Its
// requests still queued or delivered expire now rather than reach the
// next claimant (their SimClients get 410 expired); the count is returned.
// A net nobody claimed is errNotClaimed.
func (s *store) releaseNet(ctx context.Context, net string) (expired int, err error) {
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM nets WHERE name = ?`, net)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errNotClaimed
		}
		res, err = tx.ExecContext(ctx, `UPDATE requests SET expires_at = min(expires_at, ?)
			WHERE net = ? AND status IN ('queued', 'delivered')`, s.nowMS(), net)
		if err != nil {
			return err
		}
		n, _ := res.RowsAffected()
		expired = int(n)
		return nil
	})
	if err == nil {
		s.forgetClaim(net)
	}
	return expired, err
}

// rekeyNet gives claimed net a new key (16+ characters); the old one is
// refused from then on. A net nobody claimed is errNotClaimed.
func (s *store) rekeyNet(ctx context.Context, net, key string) error {
	if len(key) < 16 {
		return errKeyTooShort
	}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE nets SET key_hash = ? WHERE name = ?`, secretHash(key), net)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errNotClaimed
		}
		return nil
	})
	if err == nil {
		s.forgetClaim(net)
	}
	return err
}

// lapseClaims, inside purge's transaction, drops the claims of nets whose
// SimServer has not polled (or, never polling, that were claimed) for
// ClaimTTL, and that have no request queued or delivered. 0: claims never
// lapse. It returns the nets released, for purge's report.
func (s *store) lapseClaims(ctx context.Context, tx *sql.Tx, now int64, netCond string, args []any) ([]string, error) {
	if s.opts.ClaimTTL <= 0 {
		return nil, nil
	}
	var nets []string
	err := eachRow(ctx, tx, `DELETE FROM nets WHERE coalesce(last_poll_at, claimed_at) <= ?
		AND NOT EXISTS (SELECT 1 FROM requests WHERE requests.net = nets.name AND status IN ('queued', 'delivered'))`+
		strings.ReplaceAll(netCond, "net =", "name =")+` RETURNING name`,
		append([]any{now - s.opts.ClaimTTL.Milliseconds()}, args...), func(rows *sql.Rows) error {
			var net string
			err := rows.Scan(&net)
			nets = append(nets, net)
			return err
		})
	return nets, err
}

// forgetClaim drops net's key from the cache. Another process (`c2cvia
// net`) changes claims too: the janitor drops the whole cache when it sees
// the file written by one (syncCounts).
func (s *store) forgetClaim(net string) {
	s.netKeys.Delete(net)
	s.lastPoll.Delete(net)
}

// handleRelease lets a SimServer give up its net: POST
// /api/v1/server/release with net and key answers {"released":true,
// "expired":N}, N being the requests still queued or delivered, which
// expire. 404 not_claimed for a net nobody claimed, 403 wrong_key.
func handleRelease(st *store) apiFunc {
	type response struct {
		Released bool `json:"released"`
		Expired  int  `json:"expired"`
	}
	return func(w http.ResponseWriter, r *http.Request, p *params) error {
		net, key, err := serverAuth(r, p)
		if err != nil {
			return err
		}
		k, err := checkServerKey(r, st, net, key)
		if err != nil {
			return err
		}
		if k.claim {
			return errNotClaimed
		}
		n, err := st.releaseNet(r.Context(), net)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, response{true, n})
		return nil
	}
}

// newNetCmd is `c2cvia net list|release|rekey`: what an operator does to
// claims, on the store (a file or a PostgreSQL database), also while relays
// serve it (a relay sees a release or a new key within --janitor-every).
func newNetCmd(stdin io.Reader, stdout io.Writer) *cobra.Command {
	var db string
	var asJSON bool
	open := func(cmd *cobra.Command) (*store, error) {
		if db == "" {
			return nil, errors.New(`--db "": must name a SQLite file or a postgres:// URL`)
		}
		opts := defaultConfig().storeOptions()
		opts.MustExist = true
		return openStore(cmd.Context(), db, opts)
	}
	netArg := func(_ *cobra.Command, args []string) error {
		if len(args) != 1 || !validName(args[0]) {
			return fmt.Errorf("want one NET, 1-64 characters of A-Z a-z 0-9 . _ -, not %q", args)
		}
		return nil
	}
	cmd := &cobra.Command{
		Use:   "net",
		Short: "List, release and re-key the claimed nets of a store",
	}
	cmd.PersistentFlags().StringVar(&db, "db", "c2cvia.db", dbFlagUsage+" (must exist)")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the claimed nets: when claimed, last SimServer poll, requests pending",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := openStoreReadOnly(cmd.Context(), db, defaultConfig().storeOptions())
			if err != nil {
				return err
			}
			defer st.Close()
			claims, err := st.listClaims(cmd.Context())
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(stdout, map[string]any{"nets": nonNil(claims)})
			}
			tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "NET\tCLAIMED\tLAST POLL\tPENDING")
			for _, c := range claims {
				polled := c.LastPollAt
				if polled == "" {
					polled = "never"
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%d\n", c.Net, c.ClaimedAt, polled, c.Pending)
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON for scripts")
	release := &cobra.Command{
		Use:   "release NET",
		Short: "Drop NET's claim: the next key used on it claims it; its pending requests expire",
		Args:  netArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := open(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			n, err := st.releaseNet(cmd.Context(), args[0])
			if errors.Is(err, errNotClaimed) {
				return fmt.Errorf("net %s is not claimed in %s", args[0], storeName(db))
			} else if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "released %s; %d pending requests expired\n", args[0], n)
			return nil
		},
	}
	rekey := &cobra.Command{
		Use:   "rekey NET",
		Short: "Give NET a new key, read from the first line of stdin (not an argument: it would show in ps and shell history)",
		Args:  netArg,
		RunE: func(cmd *cobra.Command, args []string) error {
			line, err := bufio.NewReader(stdin).ReadString('\n')
			if err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			key := strings.TrimRight(line, "\r\n")
			if len(key) < 16 {
				return errors.New("the new key, on the first line of stdin, must be at least 16 characters")
			}
			st, err := open(cmd)
			if err != nil {
				return err
			}
			defer st.Close()
			if err := st.rekeyNet(cmd.Context(), args[0], key); errors.Is(err, errNotClaimed) {
				return fmt.Errorf("net %s is not claimed in %s", args[0], storeName(db))
			} else if err != nil {
				return err
			}
			fmt.Fprintf(stdout, "new key for %s; a running relay takes it at its next janitor run (--janitor-every), and until then the old key still works\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(list, release, rekey)
	documentEnv(cmd.PersistentFlags())
	return cmd
}

// claimTTLDefault is --claim-ttl's default: 30 days without a SimServer
// poll, long past any holiday, short enough that a name lost with a
// browser's localStorage comes back.
const claimTTLDefault = 30 * 24 * time.Hour
