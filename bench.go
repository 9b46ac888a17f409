// `c2cvia bench`: the relay measures itself. Each scenario runs its load
// against the relay and, in the same run and process, the same load against
// a plain net/http handler that answers the relay's own reply bytes
// (direct); the ratio between the two is the headline, since absolute
// numbers on a shared machine drift. Scenarios are in bench_scenarios.go.

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
)

// benchOptions are the flags of `c2cvia bench`.
type benchOptions struct {
	URL       string
	Scenarios []string
	Clients   []int
	Duration  time.Duration
	JSON      bool
	Progress  string
	Workers   int
	Max       int
	Backlog   int
	Polls     int
	Key       string
	Net       string
	Sync      string
	TmpDir    string
	Kills     int
	KillEvery time.Duration
	CPUProf   string
	MutexProf string
	Stream    bool
}

func newBenchCmd(stdout, stderr io.Writer) *cobra.Command {
	var o benchOptions
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the relay under load against a plain HTTP handler",
		Long: `Runs each scenario against the relay, then the same load against a plain
net/http handler in this process that answers the relay's own reply bytes
(direct), and prints throughput, latency percentiles and the ratio to direct.
Without --url the relay runs in-process on a fresh store in a temp folder,
removed afterwards.

Scenarios:
` + benchScenarioHelp(),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBench(cmd.Context(), o, stdout, stderr)
		},
	}
	cmd.AddCommand(newBenchHoldCmd(stdout))
	fs := cmd.Flags()
	fs.StringVar(&o.URL, "url", "", "base URL of a running relay to load (default: an in-process relay)")
	fs.StringSliceVar(&o.Scenarios, "scenario", benchScenarioNames(), "scenarios to run, comma-separated")
	fs.IntSliceVar(&o.Clients, "clients", []int{1, 64}, "concurrent clients; each value is one row per scenario")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "how long each measurement runs, after a warm-up of a tenth of it (at most 1s)")
	fs.BoolVar(&o.JSON, "json", false, "print one JSON object per line per scenario instead of the table")
	fs.StringVar(&o.Progress, "progress", "auto", "progress bar on stderr: auto (when stderr is a terminal), always or never")
	fs.IntVar(&o.Workers, "workers", 0, "exchange: SimServer workers (0: one per 4 clients)")
	fs.IntVar(&o.Max, "max", 16, "exchange: requests a SimServer worker leases per pullreqsmart (1-100)")
	fs.IntVar(&o.Backlog, "backlog", 1_000_000, "backlog: requests queued in the store before the load")
	fs.BoolVar(&o.Stream, "stream", false, "broadcast: peers read the event stream (GET /api/v1/peer/stream) instead of long-polling pullsmart")
	fs.IntVar(&o.Polls, "polls", 10_000, "idle: long polls held open")
	fs.StringVar(&o.Key, "key", "", "SimServer key for the bench's nets (default: a random key, which claims fresh nets)")
	fs.StringVar(&o.Net, "net", "", "net to run in; the bench's SimServers answer whatever is queued there (default: a fresh random net per scenario and client count)")
	fs.StringVar(&o.Sync, "sync", "normal", "in-process relay: SQLite synchronous, normal or full (as serve --sync)")
	fs.StringVar(&o.CPUProf, "cpuprofile", "", "write a pprof CPU profile of the whole run (relay and load generator) to this file")
	fs.StringVar(&o.MutexProf, "mutexprofile", "", "write a pprof mutex contention profile of the whole run to this file")
	fs.IntVar(&o.Kills, "kills", 20, "crash: SIGKILLs of the relay before the final check")
	fs.DurationVar(&o.KillEvery, "kill-every", 2*time.Second, "crash: mean time between kills (each is random, 0.5 to 1.5 times it)")
	fs.StringVar(&o.TmpDir, "tmp-dir", "", "in-process relay: folder for its temporary store (default: the system's temp folder)")
	documentEnv(fs)
	return cmd
}

// bench is one run of `c2cvia bench`.
type bench struct {
	opts     benchOptions
	stderr   io.Writer
	progress bool
	log      *slog.Logger
	where    string      // what is measured: "in-process" or the relay's URL
	relay    *benchRelay // the in-process relay; nil with --url
	base     string      // the relay's base URL
	tmp      string      // the in-process relay's temp folder
	key      string
	state    map[string]any // what a scenario keeps across its rows (the backlog's file)
	cleanup  []func()       // run at the end, last first
}

// benchResult is one row: a scenario at one client count.
type benchResult struct {
	Scenario        string   `json:"scenario"`
	Clients         int      `json:"clients"`
	Relay           string   `json:"relay"`
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

	extra []benchField // scenario figures, written after the fields above
}

type benchField struct {
	name  string
	value any
}

// set adds a scenario figure to the JSON line, such as bytes_per_poll.
func (r *benchResult) set(name string, value any) { r.extra = append(r.extra, benchField{name, value}) }

func (r *benchResult) note(format string, args ...any) {
	r.Notes = append(r.Notes, fmt.Sprintf(format, args...))
}

func (r *benchResult) MarshalJSON() ([]byte, error) {
	type plain benchResult
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

// newBenchResult fills a row from the relay's and direct's measurements.
func newBenchResult(scenario string, clients int, relay, direct loadStats) *benchResult {
	r := &benchResult{
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

func runBench(ctx context.Context, o benchOptions, stdout, stderr io.Writer) error {
	if err := o.validate(); err != nil {
		return err
	}
	if slices.Contains(o.Scenarios, "crash") {
		return runCrashBench(ctx, o, stdout, stderr)
	}
	stopProfiles, err := startProfiles(o.CPUProf, o.MutexProf)
	if err != nil {
		return err
	}
	defer stopProfiles()
	b := &bench{opts: o, stderr: &lockedWriter{w: stderr}, key: o.Key, state: map[string]any{}}
	b.progress = o.Progress == "always" || o.Progress == "auto" && isTerminal(stderr)
	b.log = slog.New(slog.NewTextHandler(b.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	if b.key == "" {
		b.key = "bench-" + randomID(18)
	}
	defer b.close()
	if err := b.start(ctx); err != nil {
		return err
	}
	var results []*benchResult
	var failed []error
	for _, name := range o.Scenarios {
		sc, _ := lookupBenchScenario(name)
		for _, clients := range o.Clients {
			res, err := sc.run(ctx, b, clients)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err != nil {
				failed = append(failed, fmt.Errorf("%s with %d clients: %w", name, clients, err))
				fmt.Fprintf(b.stderr, "c2cvia bench: %s with %d clients failed: %v\n", name, clients, err)
				continue
			}
			res.Scenario, res.Clients, res.Relay = name, clients, b.where
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
	if !o.JSON {
		printBenchTable(stdout, b, results)
	}
	return errors.Join(failed...)
}

func (o benchOptions) validate() error {
	for _, name := range o.Scenarios {
		if _, ok := lookupBenchScenario(name); !ok && name != "crash" {
			return fmt.Errorf("--scenario: no scenario %q; there are %s and crash", name, strings.Join(benchScenarioNames(), ", "))
		}
	}
	if slices.Contains(o.Scenarios, "crash") {
		switch {
		case len(o.Scenarios) > 1:
			return errors.New("--scenario crash runs alone: it checks for loss, it does not measure speed")
		case o.URL != "":
			return errors.New("--scenario crash runs and kills a relay of its own: --url cannot be used")
		case o.Kills < 1 || o.KillEvery <= 0:
			return errors.New("--kills must be 1 or more and --kill-every positive")
		}
	}
	switch {
	case len(o.Scenarios) == 0:
		return errors.New("--scenario: name at least one scenario")
	case len(o.Clients) == 0 || slices.Min(o.Clients) < 1:
		return errors.New("--clients must be 1 or more")
	case o.Duration <= 0:
		return errors.New("--duration must be positive")
	case o.Workers < 0:
		return errors.New("--workers must be 0 (automatic) or more")
	case o.Max < 1 || o.Max > 100:
		return errors.New("--max must be from 1 to 100, as pullreqsmart takes it")
	case o.Backlog < 1 || o.Polls < 1:
		return errors.New("--backlog and --polls must be 1 or more")
	case o.Progress != "auto" && o.Progress != "always" && o.Progress != "never":
		return fmt.Errorf("--progress must be auto, always or never, not %q", o.Progress)
	case o.Key != "" && len(o.Key) < 16:
		return errors.New("--key must be at least 16 characters, as the relay requires")
	case o.Net != "" && !validName(o.Net):
		return errInvalidNet
	}
	if o.Sync != "normal" && o.Sync != "full" {
		return fmt.Errorf("--sync must be normal or full, not %q", o.Sync)
	}
	return nil
}

// startProfiles starts the CPU and mutex profiles asked for; stop writes
// them out.
func startProfiles(cpu, mutex string) (stop func(), err error) {
	var steps []func()
	stop = func() {
		for _, fn := range slices.Backward(steps) {
			fn()
		}
	}
	if cpu != "" {
		f, err := os.Create(cpu)
		if err != nil {
			return stop, err
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return stop, err
		}
		steps = append(steps, func() { pprof.StopCPUProfile(); f.Close() })
	}
	if mutex != "" {
		f, err := os.Create(mutex)
		if err != nil {
			stop()
			return func() {}, err
		}
		prev := runtime.SetMutexProfileFraction(5)
		steps = append(steps, func() {
			_ = pprof.Lookup("mutex").WriteTo(f, 0)
			f.Close()
			runtime.SetMutexProfileFraction(prev)
		})
	}
	return stop, nil
}

// runCrashBench runs the crash soak (soak.go) with this binary as the
// relay, prints its report (the last line is "lost: N") and fails when
// anything acknowledged was lost.
func runCrashBench(ctx context.Context, o benchOptions, stdout, stderr io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	soak := soakOptions{Exe: exe, Kills: o.Kills, Every: o.KillEvery, Clients: slices.Max(o.Clients), Log: stderr}
	if o.TmpDir != "" {
		dir, err := os.MkdirTemp(o.TmpDir, "c2cvia-soak-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		soak.DB = dir + string(os.PathSeparator) + "soak.db"
	}
	rep, err := runCrashSoak(ctx, soak)
	if err != nil {
		return err
	}
	if o.JSON {
		line, err := json.Marshal(rep)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s\n", line)
	} else {
		printSoak(stdout, rep)
	}
	if len(rep.Lost) > 0 {
		return fmt.Errorf("crash soak: %d acknowledged requests or messages were lost", len(rep.Lost))
	}
	return nil
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
		t := b.target("relay", b.base, 1)
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
	b.relay, err = startBenchRelay(ctx, b.log, benchRelayConfig(tmp+string(os.PathSeparator)+"relay.db", b.opts.Sync))
	if err != nil {
		return err
	}
	b.base, b.where = b.relay.url, "in-process"
	return nil
}

// close stops the in-process relay and removes its temp folder.
func (b *bench) close() {
	for _, fn := range slices.Backward(b.cleanup) {
		fn()
	}
	if b.relay != nil {
		if err := b.relay.stop(); err != nil {
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
	return "bench-" + randomID(6)
}

// opFunc is one operation of one client: an exchange, a poll, ...
type opFunc func(ctx context.Context) error

// errDrained ends a client that has nothing left to do (an empty backlog).
var errDrained = errors.New("nothing left to do")

// loadStats is what one measurement gave: the latencies of the operations
// that ended inside the window, sorted, and the window.
type loadStats struct {
	lat    []time.Duration
	window time.Duration
}

func (s loadStats) perSec() float64 {
	if s.window <= 0 {
		return 0
	}
	return float64(len(s.lat)) / s.window.Seconds()
}

// pct is the p-th percentile in milliseconds (nearest rank).
func (s loadStats) pct(p float64) float64 {
	if len(s.lat) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(s.lat)))) - 1
	return float64(s.lat[max(i, 0)]) / float64(time.Millisecond)
}

// measure runs clients goroutines, each calling its op in a loop, for a
// warm-up (a tenth of --duration, at most 1 s) and then --duration; only
// operations that end after the warm-up count. An op error other than the
// end of the time stops the measurement and is returned; so is ctx's
// cause when ctx ends first (a SimServer worker that failed, say).
func (b *bench) measure(ctx context.Context, label string, clients int, newOp func(i int) opFunc) (loadStats, error) {
	warmup := min(b.opts.Duration/10, time.Second)
	total := warmup + b.opts.Duration
	runtime.GC() // not the previous phase's garbage
	failCtx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	runCtx, stop := context.WithTimeout(failCtx, total)
	defer stop()
	start := time.Now()
	from, until := start.Add(warmup), start.Add(total)

	type sample struct {
		end time.Time
		lat time.Duration
	}
	samples := make([][]sample, clients)
	drained := make([]time.Time, clients)
	var wg sync.WaitGroup
	for i := range clients {
		op := newOp(i)
		wg.Go(func() {
			for runCtx.Err() == nil {
				t0 := time.Now()
				err := op(runCtx)
				end := time.Now()
				switch {
				case runCtx.Err() != nil:
					return // the time is up, or another client failed
				case errors.Is(err, errDrained):
					drained[i] = end
					return
				case err != nil:
					fail(err)
					return
				}
				samples[i] = append(samples[i], sample{end, end.Sub(t0)})
			}
		})
	}
	b.showTime(label, total, &wg)
	if err := context.Cause(failCtx); err != nil {
		return loadStats{}, err
	}
	// If every client ran dry before the time was up, the window ends with
	// the last of them; if that was inside the warm-up, everything counts.
	if last := slices.MaxFunc(drained, time.Time.Compare); !slices.ContainsFunc(drained, time.Time.IsZero) && last.Before(until) {
		until = last
		if !until.After(from) {
			from = start
		}
	}
	var st loadStats
	for _, list := range samples {
		for _, s := range list {
			if !s.end.Before(from) && !s.end.After(until) {
				st.lat = append(st.lat, s.lat)
			}
		}
	}
	slices.Sort(st.lat)
	st.window = until.Sub(from)
	if len(st.lat) == 0 {
		return st, fmt.Errorf("%s: no operation finished within %s", label, total)
	}
	return st, nil
}

// showTime shows a bar of elapsed time until wg is done.
func (b *bench) showTime(label string, total time.Duration, wg *sync.WaitGroup) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	bar := b.bar(label, total.Milliseconds())
	start := time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			_ = bar.Finish()
			return
		case <-tick.C:
			_ = bar.Set64(min(time.Since(start), total).Milliseconds())
		}
	}
}

// bar is a progress bar on stderr, invisible unless progress is on.
func (b *bench) bar(label string, total int64) *progressbar.ProgressBar {
	return progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(b.stderr),
		progressbar.OptionSetVisibility(b.progress),
		progressbar.OptionSetDescription(fmt.Sprintf("%-28s", label)),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionClearOnFinish(),
	)
}

// parallel runs fn(i) for i in [0, n) on up to conc goroutines, with a
// progress bar; the first error stops it.
func (b *bench) parallel(ctx context.Context, label string, n, conc int, fn func(ctx context.Context, i int) error) error {
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	bar := b.bar(label, int64(n))
	defer bar.Finish()
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(conc, n) {
		wg.Go(func() {
			for i := range next {
				if err := fn(ctx, i); err != nil {
					fail(err)
				}
				_ = bar.Add(1)
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx)
}

// memSample is the process's memory after a full collection: resident set
// (VmRSS of /proc/self/status, 0 where there is none) and the Go heap and
// stacks in use.
type memSample struct {
	rss  int64
	heap int64
}

func readMem() memSample {
	debug.FreeOSMemory() // a full collection, and free pages go back to the OS
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := memSample{heap: int64(ms.HeapInuse + ms.StackInuse)}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return m
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			m.rss = kb << 10
		}
	}
	return m
}

// printBenchTable prints the results as a table, with what was measured.
func printBenchTable(w io.Writer, b *bench, results []*benchResult) {
	fmt.Fprintf(w, "c2cvia bench: relay %s, sync %s; direct: plain net/http in this process; %d CPUs, %s %s/%s; %s per measurement\n\n",
		b.where, b.syncLabel(), runtime.NumCPU(), runtime.Version(), runtime.GOOS, runtime.GOARCH, b.opts.Duration)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tCLIENTS\tOPS/S\tP50\tP90\tP99\tDIRECT OPS/S\tRATIO\tNOTES")
	for _, r := range results {
		if r.Skipped != "" {
			fmt.Fprintf(tw, "%s\t%d\t-\t-\t-\t-\t-\t-\tskipped: %s\n", r.Scenario, r.Clients, r.Skipped)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%s\t%s\t%s\t%.0f\t%.2fx\t%s\n", r.Scenario, r.Clients, r.OpsPerSec,
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
