// `c2cvia inspect`: the nets, queues and requests of a store, read-only,
// also while `serve` runs on it; and the store's reads behind it.

package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
)

func newInspectCmd(stdout io.Writer) *cobra.Command {
	var (
		db     string
		rid    string
		asJSON bool
		limit  int
	)
	cmd := checkSettings(&cobra.Command{
		Use:   "inspect [NET]",
		Short: "Show the nets and queues in a store",
		Long: `Without NET: one line per net with its requests by status, the age of the
oldest queued request, when a SimServer last polled, its valid logins and
its peer messages kept. With NET: its newest
requests. With --rid: one request with its stored sim_req and sim_res.

--db is a SQLite file or a postgres:// URL. On PostgreSQL inspect reads in
read-only transactions, and never creates or upgrades the schema: a role
with SELECT on its tables is enough.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			s := newSettingErrors(cmd)
			if db == "" {
				s.badFlag("db", "must name a SQLite file or a postgres:// URL")
			}
			s.atLeast("limit", limit, 1, "requests")
			if len(args) == 1 && !validName(args[0]) {
				s.bad("NET %q: must be a net name, 1-64 characters of A-Z a-z 0-9 . _ -", args[0])
			}
			if err := s.err(); err != nil {
				return err
			}
			// A request handed out too often shows as failed before the
			// janitor marks it: by the serving relay's --max-attempts, as
			// it recorded it (serve's default for a store it has not).
			st, err := openStoreReadOnly(cmd.Context(), db, defaultConfig().storeOptions())
			if err != nil {
				return err
			}
			defer st.Close()
			ctx := cmd.Context()
			switch {
			case rid != "":
				ri, err := st.requestDetail(ctx, rid)
				if err == errNotFound && st.pg {
					return fmt.Errorf("no request %s in %s: it never was, or it is gone (a request is kept for the res-ttl after it ends)", rid, storeName(db))
				} else if err == errNotFound {
					return fmt.Errorf("no request %s in %s: it never was, or it is gone (a request is kept for the res-ttl after it ends; a synchronous /via/ request is held in the relay's memory while its caller waits, and stored only if the caller got 504, the relay shut down meanwhile, or its SimServer began a streamed answer)", rid, storeName(db))
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
	})
	fs := cmd.Flags()
	fs.StringVar(&db, "db", "c2cvia.db", dbFlagUsage)
	fs.StringVar(&rid, "rid", "", "show this request with its sim_req and sim_res")
	fs.BoolVar(&asJSON, "json", false, "print JSON for scripts")
	fs.IntVar(&limit, "limit", 50, "requests to list for NET, newest first")
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
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", printable(r.RID), r.Status, r.Attempt, printable(r.From),
			printable(r.Method), printable(r.Endpoint), r.CreatedAt)
	}
	tw.Flush()
}

func printRequestDetail(w io.Writer, r requestInfo) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, kv := range [][2]string{
		{"rid", r.RID}, {"net", r.Net}, {"status", r.Status}, {"attempt", fmt.Sprint(r.Attempt)},
		{"from", r.From}, {"created", r.CreatedAt}, {"lease until", r.LeaseExpiresAt}, {"done", r.DoneAt},
		{"stream", streamLine(r)},
	} {
		if kv[1] != "" {
			fmt.Fprintf(tw, "%s:\t%s\n", kv[0], printable(kv[1]))
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

// streamLine describes a streamed answer for inspect --rid: its state and
// the body bytes committed (the sim_res printed is its head only).
func streamLine(r requestInfo) string {
	if r.Stream == "" {
		return ""
	}
	return fmt.Sprintf("%s, %d body bytes in parts (the sim_res below is the head)", r.Stream, r.BodyBytes)
}

func indentJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if err := json.Indent(&b, raw, "  ", "  "); err != nil {
		return "  " + printableLines(string(raw))
	}
	return "  " + printableLines(b.String())
}

// printableLines is printable for each line of s: its newlines stay.
func printableLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = printable(l)
	}
	return strings.Join(lines, "\n")
}

// printable escapes what a terminal would act on rather than show: C0 and
// C1 control characters and DEL become \xNN (newlines and tabs too, which
// would break the table), and so do bytes that are not UTF-8. A
// sender's text cannot then retitle or clear the operator's terminal, or
// fake a row of the table. Stored JSON holds such characters escaped
// already; this is for what is printed outside JSON and for stores written
// before input was checked.
func printable(s string) string {
	clean := func(r rune) bool { return r >= 0x20 && (r < 0x7f || r >= 0xa0) && r != utf8.RuneError }
	if !strings.ContainsFunc(s, func(r rune) bool { return !clean(r) }) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, "\\x%02x", s[i])
		case !clean(r) && r != utf8.RuneError:
			fmt.Fprintf(&b, "\\x%02x", r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

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
	err := eachRow(ctx, s.r, `SELECT net, `+statusSQL("?2", "?1")+` AS st, count(*), min(created_at)
		FROM `+s.requestsTable()+` GROUP BY net, st`, []any{s.opts.MaxAttempts, now}, func(rows *sql.Rows) error {
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
	err = eachRow(ctx, s.r, `SELECT net, count(*) FROM tokens WHERE expires_at > ? AND net <> '' GROUP BY net`, []any{now}, func(rows *sql.Rows) error {
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
	Stream         string          `json:"stream,omitempty"`     // a streamed answer's state
	BodyBytes      int64           `json:"body_bytes,omitempty"` // its body bytes committed, in answer_parts
	SimReq         json.RawMessage `json:"sim_req,omitempty"`    // --rid only
	SimRes         json.RawMessage `json:"sim_res,omitempty"`
	simReqText     string
	simResText     string
}

// requestInfoSQL reads requests as inspect shows them, from s.requestsTable.
func (s *store) requestInfoSQL() string {
	return `SELECT rid, net, ` + statusSQL("?2", "?1") + `, attempt, from_peer,
	coalesce(json_extract(sim_req, '$.simMethod'), ''), coalesce(json_extract(sim_req, '$.simEndpoint'), ''),
	created_at, lease_expires_at, done_at, sim_req, coalesce(sim_res, ''),
	coalesce(stream, ''), body_bytes, cancelled_at IS NOT NULL FROM ` + s.requestsTable()
}

// requestsTable is the requests table as inspect reads it. inspect reads
// older stores as they are; before schema step 6 they have no streams
// and no cancelled_at, which the status rule reads.
func (s *store) requestsTable() string {
	if s.version < 6 {
		return `(SELECT *, NULL AS stream, 0 AS body_bytes, NULL AS cancelled_at FROM requests)`
	}
	return `requests`
}

func (s *store) scanRequestInfo(rows *sql.Rows) (requestInfo, error) {
	var ri requestInfo
	var created int64
	var lease, done sql.NullInt64
	var stream string
	var cancelled bool
	err := rows.Scan(&ri.RID, &ri.Net, &ri.Status, &ri.Attempt, &ri.From, &ri.Method, &ri.Endpoint,
		&created, &lease, &done, &ri.simReqText, &ri.simResText, &stream, &ri.BodyBytes, &cancelled)
	if ri.Status == statusAnswered {
		ri.Stream, _ = streamAt(stream, cancelled, lease.Int64, s.nowMS())
	}
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
	err := eachRow(ctx, s.r, s.requestInfoSQL()+` WHERE net = ?3 ORDER BY seq DESC LIMIT ?4`,
		[]any{s.opts.MaxAttempts, s.nowMS(), net, limit}, func(rows *sql.Rows) error {
			ri, err := s.scanRequestInfo(rows)
			out = append(out, ri)
			return err
		})
	return out, err
}

// requestDetail returns one request with its stored sim_req and sim_res.
func (s *store) requestDetail(ctx context.Context, rid string) (requestInfo, error) {
	var ri requestInfo
	found := false
	err := eachRow(ctx, s.r, s.requestInfoSQL()+` WHERE rid = ?3`, []any{s.opts.MaxAttempts, s.nowMS(), rid},
		func(rows *sql.Rows) error {
			var err error
			ri, err = s.scanRequestInfo(rows)
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
