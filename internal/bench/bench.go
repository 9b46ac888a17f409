// One run of `c2cvia bench`: the relay measures itself. Each scenario runs
// its load against the relay and, in the same run and process, the same
// load against a plain net/http handler that answers the relay's own reply
// bytes (direct); the ratio between the two is the headline, since absolute
// numbers on a shared machine drift. This file holds the run, its rows and
// the table; the scenarios are in scenarios.go.

package bench

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"
)

// bench is one run of `c2cvia bench`.
type bench struct {
	opts     options
	relays   Relays
	stderr   io.Writer
	progress bool
	where    string // what is measured: "in-process" or the relay's URL
	rowNodes        // the relay or relays the current row loads
	tmp      string // the in-process relay's temp folder
	key      string
	state    map[string]any // what a scenario keeps across its rows (the backlog's file)
	cleanup  []func()       // run at the end, last first

	mu   sync.Mutex
	nets []string // the nets the bench named itself, released at the end (--url)
}

// rowNodes are the relays a row loads: the one of the run (in-process on
// SQLite, or at --url), or a PostgreSQL row's nodes (postgres.go).
type rowNodes struct {
	relay   Server   // the in-process relay the callers use; nil with --url
	base    string   // its base URL: SimClients, callers, senders
	servers string   // the base URL of SimServer workers and waiting peers: base, or another node
	nodes   []Server // every in-process relay of the row (several on PostgreSQL)
}

// serverBase is where a row's SimServers and waiting peers call.
func (r rowNodes) serverBase() string {
	if r.servers == "" {
		return r.base
	}
	return r.servers
}

// result is one row: a scenario at one client count.
type result struct {
	Scenario        string   `json:"scenario"`
	Clients         int      `json:"clients"`
	Relay           string   `json:"relay"`
	Store           string   `json:"store,omitempty"` // with --postgres: sqlite, postgres 1 node or postgres 2 nodes
	Ops             int      `json:"ops"`
	OpsPerSec       float64  `json:"ops_per_sec"`
	P50             float64  `json:"p50_ms"`
	P90             float64  `json:"p90_ms"`
	P99             float64  `json:"p99_ms"`
	DirectOps       int      `json:"direct_ops"`
	DirectOpsPerSec float64  `json:"direct_ops_per_sec"`
	DirectP50       float64  `json:"direct_p50_ms"`
	DirectP90       float64  `json:"direct_p90_ms"`
	DirectP99       float64  `json:"direct_p99_ms"`
	Ratio           float64  `json:"ratio"`
	DurationS       float64  `json:"duration_s"`
	Skipped         string   `json:"skipped,omitempty"`
	Notes           []string `json:"notes,omitempty"`

	extra []field // scenario figures, written after the fields above
}

type field struct {
	name  string
	value any
}

// set adds a scenario figure to the JSON line, such as bytes_per_poll.
func (r *result) set(name string, value any) { r.extra = append(r.extra, field{name, value}) }

func (r *result) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

func (r *result) MarshalJSON() ([]byte, error) {
	type plain result
	b, err := json.Marshal((*plain)(r))
	if err != nil {
		return nil, err
	}
	buf := bytes.NewBuffer(b[:len(b)-1])
	for _, f := range r.extra {
		v, err := json.Marshal(f.value)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(buf, ",%q:%s", f.name, v)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// newResult fills a row from the relay's and direct's measurements.
func newResult(scenario string, clients int, relay, direct loadStats) *result {
	r := &result{
		Scenario: scenario, Clients: clients,
		Ops: len(relay.lat), OpsPerSec: relay.perSec(),
		P50: relay.pct(50), P90: relay.pct(90), P99: relay.pct(99),
		DirectOps: len(direct.lat), DirectOpsPerSec: direct.perSec(),
		DirectP50: direct.pct(50), DirectP90: direct.pct(90), DirectP99: direct.pct(99),
		DurationS: relay.window.Seconds(),
	}
	if r.DirectOpsPerSec > 0 {
		r.Ratio = r.OpsPerSec / r.DirectOpsPerSec
	}
	return r
}

func runBench(ctx context.Context, relays Relays, o options, stdout, stderr io.Writer) error {
	if err := o.validate(); err != nil {
		return err
	}
	if slices.Contains(o.Scenarios, "crash") {
		return runCrash(ctx, o, stdout, stderr)
	}
	stopProfiles, err := startProfiles(o.CPUProf, o.MutexProf)
	if err != nil {
		return err
	}
	defer stopProfiles()
	b := &bench{opts: o, relays: relays, stderr: &lockedWriter{w: stderr}, key: o.Key, state: map[string]any{}}
	b.progress = o.Progress == "always" || o.Progress == "auto" && isTerminal(stderr)
	if b.key == "" {
		b.key = "bench-" + randomName(18)
	}
	defer b.close()
	if err := b.start(ctx); err != nil {
		return err
	}
	var results []*result
	var failed []error
	for _, name := range o.Scenarios {
		sc, _ := lookupScenario(name)
		for _, clients := range o.Clients {
			for _, store := range o.rowStores() {
				res, err := b.runRow(ctx, sc, clients, store)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				what := fmt.Sprintf("%s with %d clients", name, clients)
				if store != "" {
					what += " on " + store
				}
				if err != nil {
					failed = append(failed, fmt.Errorf("%s: %w", what, err))
					fmt.Fprintf(b.stderr, "c2cvia bench: %s failed: %v\n", what, err)
					continue
				}
				res.Scenario, res.Clients, res.Relay, res.Store = name, clients, b.where, store
				results = append(results, res)
				if o.JSON {
					line, err := json.Marshal(res)
					if err != nil {
						return err
					}
					fmt.Fprintf(stdout, "%s\n", line)
				}
			}
		}
	}
	if !o.JSON {
		printTable(stdout, b, results)
	}
	return errors.Join(failed...)
}

// runRow runs one row of sc on store (rowStores): on the run's relay, or
// on PostgreSQL nodes of its own.
func (b *bench) runRow(ctx context.Context, sc scenario, clients int, store string) (*result, error) {
	nodes := 0
	switch store {
	case storePG1:
		nodes = 1
	case storePG2:
		nodes = 2
	default:
		return sc.run(ctx, b, clients)
	}
	switch {
	case sc.name == "backlog":
		return &result{Skipped: "SQLite only: the backlog is bulk-loaded into SQLite's file"}, nil
	case sc.name == "idle" && nodes > 1:
		return &result{Skipped: "one node's memory: see the 1-node row"}, nil
	}
	return b.onPostgres(ctx, nodes, func() (*result, error) { return sc.run(ctx, b, clients) })
}

// start makes the relay to load ready: the one at --url, after a /healthz
// check, or an in-process one on a fresh store in a temp folder.
func (b *bench) start(ctx context.Context) error {
	if b.opts.URL != "" {
		u, err := url.Parse(b.opts.URL)
		if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
			return fmt.Errorf("--url must be an http or https URL such as http://localhost:8080, not %q", b.opts.URL)
		}
		b.base, b.where = strings.TrimRight(b.opts.URL, "/"), strings.TrimRight(b.opts.URL, "/")
		t := newTarget("relay", b.base, 1)
		defer t.close()
		if _, err := t.call(ctx, http.MethodGet, "/healthz", "", nil, http.StatusOK); err != nil {
			return fmt.Errorf("--url: the relay does not answer: %w", err)
		}
		return nil
	}
	tmp, err := os.MkdirTemp(b.opts.TmpDir, "c2cvia-bench-")
	if err != nil {
		return err
	}
	b.tmp = tmp
	b.relay, err = b.relays.Start(ctx, b.relayArgs(tmp+string(os.PathSeparator)+"relay.db"), b.stderr)
	if err != nil {
		return err
	}
	b.base, b.where = b.relay.URL(), "in-process"
	b.nodes = []Server{b.relay}
	return nil
}

// close stops the in-process relay and removes its temp folder.
func (b *bench) close() {
	for _, fn := range slices.Backward(b.cleanup) {
		fn()
	}
	b.releaseNets()
	if b.relay != nil {
		if err := b.relay.Stop(); err != nil {
			fmt.Fprintf(b.stderr, "c2cvia bench: stop the in-process relay: %v\n", err)
		}
	}
	if b.tmp != "" {
		if err := os.RemoveAll(b.tmp); err != nil {
			fmt.Fprintf(b.stderr, "c2cvia bench: remove %s: %v\n", b.tmp, err)
		}
	}
}

// net is the net a scenario runs in: --net, or a fresh one per row so that
// nothing left over from the previous row is in its queue.
func (b *bench) net() string {
	if b.opts.Net != "" {
		return b.opts.Net
	}
	return b.ownNet()
}

// ownNet is a fresh net of the bench's own, released at the end.
func (b *bench) ownNet() string {
	net := "bench-" + randomName(6)
	b.mu.Lock()
	b.nets = append(b.nets, net)
	b.mu.Unlock()
	return net
}

// releaseNets gives up the claims of the nets the bench named itself on a
// relay at --url, so that no bench-* claim stays behind (an in-process
// relay's store is removed whole). A net no SimServer of the bench
// claimed answers 404, which is fine.
func (b *bench) releaseNets() {
	if b.opts.URL == "" || len(b.nets) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	t := newTarget("relay", b.base, 1)
	defer t.close()
	released := 0
	for _, net := range b.nets {
		body, _ := json.Marshal(map[string]string{"net": net, "key": b.key})
		if _, err := t.call(ctx, http.MethodPost, "/api/v1/server/release", "", body, http.StatusOK); err == nil {
			released++
		}
	}
	if released < len(b.nets) && ctx.Err() != nil {
		fmt.Fprintf(b.stderr, "c2cvia bench: released %d of the bench's nets on %s before the time ran out\n", released, b.base)
	}
}

// randomName is n random bytes as unpadded base64url (4/3 n characters,
// each one a relay accepts in a net's name or a key).
func randomName(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// printTable prints the results as a table, with what was measured.
func printTable(w io.Writer, b *bench, results []*result) {
	fmt.Fprintf(w, "c2cvia bench: relay %s, sync %s; direct: plain net/http in this process; %d CPUs, %s %s/%s; %s per measurement\n\n",
		b.where, b.syncLabel(), runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH, b.opts.Duration)
	if b.opts.Postgres != "" {
		fmt.Fprintf(w, "postgres rows: in-process relays on a fresh schema of %s each, one node, or two (callers on one, SimServers and waiting peers on the other)\n\n", redactedURL(b.opts.Postgres))
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	// With --postgres a STORE column says where each row ran.
	withStore := b.opts.Postgres != ""
	store := func(r *result) string {
		if withStore {
			return "\t" + r.Store
		}
		return ""
	}
	if withStore {
		fmt.Fprintln(tw, "SCENARIO\tCLIENTS\tSTORE\tOPS/S\tP50\tP90\tP99\tDIRECT OPS/S\tRATIO\tNOTES")
	} else {
		fmt.Fprintln(tw, "SCENARIO\tCLIENTS\tOPS/S\tP50\tP90\tP99\tDIRECT OPS/S\tRATIO\tNOTES")
	}
	for _, r := range results {
		if r.Skipped != "" {
			fmt.Fprintf(tw, "%s\t%d%s\t-\t-\t-\t-\t-\t-\tskipped: %s\n", r.Scenario, r.Clients, store(r), r.Skipped)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d%s\t%.0f\t%s\t%s\t%s\t%.0f\t%.2fx\t%s\n", r.Scenario, r.Clients, store(r), r.OpsPerSec,
			fmtMS(r.P50), fmtMS(r.P90), fmtMS(r.P99), r.DirectOpsPerSec, r.Ratio, strings.Join(r.Notes, "; "))
	}
	tw.Flush()
}

func (b *bench) syncLabel() string {
	if b.relay == nil {
		return "as the relay runs"
	}
	return b.opts.Sync
}

// fmtMS writes milliseconds with about three significant digits.
func fmtMS(ms float64) string {
	switch {
	case ms < 10:
		return strconv.FormatFloat(ms, 'f', 2, 64) + "ms"
	case ms < 100:
		return strconv.FormatFloat(ms, 'f', 1, 64) + "ms"
	}
	return strconv.FormatFloat(ms, 'f', 0, 64) + "ms"
}

// fmtBytes writes a size in KiB or MiB.
func fmtBytes(n int64) string {
	if math.Abs(float64(n)) >= 1<<20 {
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	}
	return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
}

func round2(f float64) float64 { return float64(int64(f*100+0.5)) / 100 }

// isTerminal reports whether w is a terminal (a character device), for the
// progress bar.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// lockedWriter serialises writes: the progress bar and the in-process
// relay's log share stderr.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
