// `c2cvia inspect` and `c2cvia purge`: look at and clean a store, also while
// `serve` runs on it.

package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
)

func newInspectCmd(stdout io.Writer) *cobra.Command {
	var (
		db          string
		rid         string
		asJSON      bool
		limit       int
		maxAttempts int
	)
	cmd := &cobra.Command{
		Use:   "inspect [NET]",
		Short: "Show the nets and queues in a store",
		Long: `Without NET: one line per net with its requests by status, the age of the
oldest queued request, when a SimServer last polled, its valid logins and
its peer messages kept. With NET: its newest
requests. With --rid: one request with its stored sim_req and sim_res.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			st, err := openStoreReadOnly(cmd.Context(), db, storeOptions{MaxAttempts: maxAttempts})
			if err != nil {
				return err
			}
			defer st.Close()
			ctx := cmd.Context()
			switch {
			case rid != "":
				ri, err := st.requestDetail(ctx, rid)
				if err == errNotFound {
					return fmt.Errorf("no request %s in %s", rid, db)
				} else if err != nil {
					return err
				}
				if asJSON {
					return printJSON(stdout, ri)
				}
				printRequestDetail(stdout, ri)
			case len(args) == 1:
				list, err := st.listRequests(ctx, args[0], limit)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(stdout, map[string]any{"net": args[0], "requests": nonNil(list)})
				}
				printRequestList(stdout, args[0], list)
			default:
				nets, err := st.summary(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					return printJSON(stdout, map[string]any{"nets": nonNil(nets)})
				}
				printSummary(stdout, nets, st.now())
			}
			return nil
		},
	}
	fs := cmd.Flags()
	fs.StringVar(&db, "db", "c2cvia.db", "SQLite file of the store")
	fs.StringVar(&rid, "rid", "", "show this request with its sim_req and sim_res")
	fs.BoolVar(&asJSON, "json", false, "print JSON for scripts")
	fs.IntVar(&limit, "limit", 50, "requests to list for NET, newest first")
	fs.IntVar(&maxAttempts, "max-attempts", 5, "the relay's --max-attempts, to tell failed requests before the janitor marks them")
	documentEnv(fs)
	return cmd
}

func nonNil[T any](l []T) []T {
	if l == nil {
		return []T{}
	}
	return l
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// ago renders the time since ms, or "-" for none.
func ago(now time.Time, ms int64) string {
	if ms == 0 {
		return "-"
	}
	return now.Sub(time.UnixMilli(ms)).Round(time.Second).String() + " ago"
}

var statusOrder = []string{statusQueued, statusDelivered, statusAnswered, statusExpired, statusFailed}

func printSummary(w io.Writer, nets []*netSummary, now time.Time) {
	if len(nets) == 0 {
		fmt.Fprintln(w, "no nets yet")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NET\tQUEUED\tDELIVERED\tANSWERED\tEXPIRED\tFAILED\tOLDEST QUEUED\tSERVER LAST POLLED\tTOKENS\tMESSAGES")
	for _, n := range nets {
		fmt.Fprintf(tw, "%s\t", n.Net)
		for _, s := range statusOrder {
			fmt.Fprintf(tw, "%d\t", n.Requests[s])
		}
		lastPoll := ago(now, n.LastPollMS)
		if !n.Claimed {
			lastPoll = "never (unclaimed)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\n", ago(now, n.OldestQueuedMS), lastPoll, n.Tokens, n.Messages)
	}
	tw.Flush()
}

func printRequestList(w io.Writer, net string, list []requestInfo) {
	if len(list) == 0 {
		fmt.Fprintf(w, "no requests in net %s\n", net)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "RID\tSTATUS\tATTEMPT\tFROM\tMETHOD\tENDPOINT\tCREATED")
	for _, r := range list {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", r.RID, r.Status, r.Attempt, r.From, r.Method, r.Endpoint, r.CreatedAt)
	}
	tw.Flush()
}

func printRequestDetail(w io.Writer, r requestInfo) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, kv := range [][2]string{
		{"rid", r.RID}, {"net", r.Net}, {"status", r.Status}, {"attempt", fmt.Sprint(r.Attempt)},
		{"from", r.From}, {"created", r.CreatedAt}, {"lease until", r.LeaseExpiresAt}, {"done", r.DoneAt},
	} {
		if kv[1] != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", kv[0], kv[1])
		}
	}
	tw.Flush()
	fmt.Fprintf(w, "sim_req:\n%s\n", indentJSON(r.SimReq))
	if r.SimRes != nil {
		fmt.Fprintf(w, "sim_res:\n%s\n", indentJSON(r.SimRes))
	} else {
		fmt.Fprintln(w, "sim_res: none yet")
	}
}

func indentJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "  ", "  "); err != nil {
		return "  " + string(raw)
	}
	return "  " + b.String()
}

func newPurgeCmd(stdout io.Writer) *cobra.Command {
	var (
		cfg    config
		o      purgeOptions
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "purge",
		Short: "Remove expired requests, messages and tokens from a store now",
		Long: `Removes what the relay's janitor removes: answered, expired and failed
requests past --res-ttl, peer messages past their retention, and expired login
tokens with their subscriptions. --all removes every request and message (queued
ones too), --net limits it to one net, --dry-run only counts.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.Net != "" && !validName(o.Net) {
				return errInvalidNet
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
	}
	fs := cmd.Flags()
	addStoreFlags(fs, &cfg)
	fs.StringVar(&o.Net, "net", "", "only this net")
	fs.BoolVar(&o.All, "all", false, "remove every request, not only expired ones")
	fs.BoolVar(&o.DryRun, "dry-run", false, "count what would be removed; remove nothing")
	fs.BoolVar(&asJSON, "json", false, "print JSON for scripts")
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
