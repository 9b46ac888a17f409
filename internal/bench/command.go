// The `c2cvia bench` command: its flags and their checks, and the crash
// soak's entry.

package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// options are the flags of `c2cvia bench`.
type options struct {
	URL       string
	Scenarios []string
	Clients   []int
	Duration  time.Duration
	JSON      bool
	Progress  string
	Workers   int
	Max       int
	Answers   string
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
	Postgres  string
}

// NewCommand is `c2cvia bench` and its hidden child `bench hold-polls`.
// The in-process relays come from relays; the table or the JSON lines go
// to stdout, the progress bar and the relay's warnings to stderr. The
// command's RunE fails on a bad flag before anything is started, and when
// a scenario fails (the others still run and print) or the crash soak
// lost anything. The flags read no environment here: the caller adds
// that (documentEnv and the root command's PersistentPreRunE in main).
func NewCommand(relays Relays, stdout, stderr io.Writer) *cobra.Command {
	var o options
	cmd := &cobra.Command{
		Use:   "bench",
		Short: "Measure the relay under load against a plain HTTP handler",
		Long: `Runs each scenario against the relay, then the same load against a plain
net/http handler in this process that answers the relay's own reply bytes
(direct), and prints throughput, latency percentiles and the ratio to direct.
Without --url the relay runs in-process on a fresh store in a temp folder,
removed afterwards.

Scenarios:
` + scenarioHelp(),
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runBench(cmd.Context(), relays, o, stdout, stderr)
		},
	}
	cmd.AddCommand(newHoldCommand(stdout))
	fs := cmd.Flags()
	fs.StringVar(&o.URL, "url", "", "base URL of a running relay to load (default: an in-process relay)")
	fs.StringSliceVar(&o.Scenarios, "scenario", scenarioNames(), "scenarios to run, comma-separated")
	fs.IntSliceVar(&o.Clients, "clients", []int{1, 64}, "concurrent clients; each value is one row per scenario")
	fs.DurationVar(&o.Duration, "duration", 10*time.Second, "how long each measurement runs, after a warm-up of a tenth of it (at most 1s)")
	fs.BoolVar(&o.JSON, "json", false, "print one JSON object per line per scenario instead of the table")
	fs.StringVar(&o.Progress, "progress", "auto", "progress bar on stderr: auto (when stderr is a terminal), always or never")
	fs.IntVar(&o.Workers, "workers", 0, "exchange: SimServer workers (0: one per 4 clients)")
	fs.IntVar(&o.Max, "max", 16, "exchange: requests a SimServer worker leases per pullreqsmart (1-100)")
	fs.StringVar(&o.Answers, "answers", "poll", "exchange, via: how SimServer workers answer: poll (with their next pullreqsmart) or pushres (one call each)")
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
	fs.StringVar(&o.Postgres, "postgres", "", "also run each scenario on PostgreSQL at this postgres:// URL, with one relay node and with two, each row on a fresh schema; crash: two nodes on it, one killed")
	fs.StringVar(&o.TmpDir, "tmp-dir", "", "in-process relay: folder for its temporary store (default: the system's temp folder)")
	return cmd
}

func (o options) validate() error {
	for _, name := range o.Scenarios {
		if _, ok := lookupScenario(name); !ok && name != "crash" {
			return fmt.Errorf("--scenario: no scenario %q; there are %s and crash", name, strings.Join(scenarioNames(), ", "))
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
	case o.Answers != "poll" && o.Answers != "pushres":
		return fmt.Errorf("--answers must be poll or pushres, not %q", o.Answers)
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
	case o.Net != "" && !validNet(o.Net):
		return errors.New("--net must be 1-64 characters of A-Z a-z 0-9 . _ -, as the relay requires")
	}
	if o.Postgres != "" {
		if o.URL != "" {
			return errors.New("--postgres starts relays of its own: --url cannot be used")
		}
		if err := validPostgresURL(o.Postgres); err != nil {
			return err
		}
	}
	if o.Sync != "normal" && o.Sync != "full" {
		return fmt.Errorf("--sync must be normal or full, not %q", o.Sync)
	}
	return nil
}

// validNet is the relay's rule for a net's name (the API's documented
// "1-64 characters of A-Z a-z 0-9 . _ -"), checked here so that a bad
// --net fails before a relay is started.
func validNet(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range []byte(s) {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
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

// runCrash runs the crash soak (soak.go) with this binary as the relay,
// prints its report (the last line is "lost: N") and fails when it lost
// anything acknowledged.
func runCrash(ctx context.Context, o options, stdout, stderr io.Writer) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	soak := SoakOptions{Exe: exe, Kills: o.Kills, Every: o.KillEvery, Clients: slices.Max(o.Clients), Log: stderr, Postgres: o.Postgres}
	if o.TmpDir != "" && o.Postgres == "" {
		dir, err := os.MkdirTemp(o.TmpDir, "c2cvia-soak-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		soak.DB = dir + string(os.PathSeparator) + "soak.db"
	}
	rep, err := RunCrashSoak(ctx, soak)
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
		PrintSoak(stdout, rep)
	}
	if len(rep.Lost) > 0 {
		return fmt.Errorf("crash soak: %d acknowledged requests or messages were lost", len(rep.Lost))
	}
	return rep.SurvivorErr()
}
