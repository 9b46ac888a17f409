// c2cvia is a relay that lets plain HTTP clients talk to each other: in a
// named net, one participant plays the HTTP server (the SimServer), the
// others (SimClients) send it requests, and every request and response is
// committed to SQLite before it is acknowledged.
//
// main.go holds the command line: serve, inspect and purge.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "c2cvia:", err)
		os.Exit(1)
	}
}

// run is the whole program; tests call it in-process.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	root := &cobra.Command{
		Use:           "c2cvia",
		Short:         "A durable relay that lets HTTP clients serve each other",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			return flagsFromEnv(cmd.Flags(), getenv)
		},
	}
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.AddCommand(newServeCmd(stdout, stderr), newInspectCmd(stdout), newPurgeCmd(stdout), newBenchCmd(stdout, stderr))
	return root.ExecuteContext(ctx)
}

// envName is the environment variable a flag reads: --req-ttl is C2CVIA_REQ_TTL.
func envName(flag string) string {
	return "C2CVIA_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// flagsFromEnv sets every flag not given on the command line from its
// environment variable, if that is set.
func flagsFromEnv(fs *pflag.FlagSet, getenv func(string) string) error {
	var err error
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || err != nil || f.Name == "help" {
			return
		}
		if v := getenv(envName(f.Name)); v != "" {
			if e := fs.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", envName(f.Name), v, e)
			}
		}
	})
	return err
}

// documentEnv adds each flag's variable to its help text.
func documentEnv(fs *pflag.FlagSet) {
	fs.VisitAll(func(f *pflag.Flag) { f.Usage += " ($" + envName(f.Name) + ")" })
}

// config is what `serve` runs with.
type config struct {
	Addr         string
	DB           string
	ReqTTL       time.Duration
	ResTTL       time.Duration
	TokenTTL     time.Duration
	MaxWait      time.Duration
	MaxAttempts  int
	DefaultLease time.Duration
	MaxLease     time.Duration
	MaxBody      int64
	MsgTTL       time.Duration
	MaxMsg       int64
	CORSOrigin   string
	Sync         string
	JanitorEvery time.Duration
	LogFormat    string
	LogLevel     string
	ViaTimeout   time.Duration
	ViaHost      string
	Listen       listenConfig // TLS, ACME and connection limits (tls.go)

	// StreamKeepAlive is how often an idle event stream sends a comment
	// line; 0 is defaultKeepAlive (15 s). Not a flag: tests shorten it.
	StreamKeepAlive time.Duration

	// Operations: metrics.go and limits.go.
	Metrics          bool
	RateIP           float64 // calls per second per client address; 0: no limit
	RateIPBurst      int
	RateToken        float64 // calls per second per token; 0: no limit
	RateTokenBurst   int
	MaxQueue         int // queued requests per net; 0: no limit
	MaxPollsPerToken int // 0: no limit
	MaxPeers         int // logins per net; 0: no limit
	TrustProxy       []netip.Prefix
}

func (c config) storeOptions() storeOptions {
	return storeOptions{ReqTTL: c.ReqTTL, ResTTL: c.ResTTL, TokenTTL: c.TokenTTL, MsgTTL: c.MsgTTL,
		MaxAttempts: c.MaxAttempts, Sync: c.Sync, MaxQueue: c.MaxQueue, MaxPeers: c.MaxPeers}
}

// addStoreFlags are the flags serve and purge share: the file and lifetimes.
func addStoreFlags(fs *pflag.FlagSet, c *config) {
	fs.StringVar(&c.DB, "db", "c2cvia.db", "SQLite file of the store (created if missing)")
	fs.DurationVar(&c.ReqTTL, "req-ttl", 5*time.Minute, "how long a request waits for an answer before it is expired")
	fs.DurationVar(&c.ResTTL, "res-ttl", 10*time.Minute, "how long an answered, expired or failed request stays readable")
	fs.IntVar(&c.MaxAttempts, "max-attempts", 5, "deliveries without an answer before a request is failed")
}

func newServeCmd(stdout, stderr io.Writer) *cobra.Command {
	var cfg config
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the relay",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serve(cmd.Context(), cfg, stdout, stderr)
		},
	}
	fs := cmd.Flags()
	addServeFlags(fs, &cfg)
	documentEnv(fs)
	return cmd
}

// addServeFlags are serve's flags. Their defaults are the relay's defaults
// (defaultConfig reads them from here too).
func addServeFlags(fs *pflag.FlagSet, cfg *config) {
	fs.StringVar(&cfg.Addr, "addr", ":8080", "address to listen on")
	addListenFlags(fs, &cfg.Listen)
	addStoreFlags(fs, cfg)
	fs.DurationVar(&cfg.TokenTTL, "token-ttl", 24*time.Hour, "how long a login token stays valid")
	fs.DurationVar(&cfg.MaxWait, "max-wait", 60*time.Second, "longest long poll; a larger wait is clamped to it")
	fs.DurationVar(&cfg.DefaultLease, "lease", 30*time.Second, "lease on a delivered request when pullreqsmart names none")
	fs.DurationVar(&cfg.MaxLease, "max-lease", 10*time.Minute, "longest lease a SimServer may ask for")
	fs.Var(newByteSize(&cfg.MaxBody, 1<<20), "max-body", "largest request body (bytes, or with KiB/MiB)")
	fs.DurationVar(&cfg.MsgTTL, "msg-ttl", time.Hour, "how long a peer message is kept for its receivers")
	fs.Var(newByteSize(&cfg.MaxMsg, defaultMaxMsg), "max-msg", "largest peer message data, as JSON text (bytes, or with KiB/MiB)")
	fs.StringVar(&cfg.CORSOrigin, "cors-origin", "*", "Access-Control-Allow-Origin: * or a comma-separated list of origins")
	fs.DurationVar(&cfg.ViaTimeout, "via-timeout", 30*time.Second, "how long a /via/ request waits for the SimServer before 504")
	fs.StringVar(&cfg.ViaHost, "via-host", "", "host suffix such as .via.example.com: NET.via.example.com serves net NET on its own origin")
	fs.StringVar(&cfg.Sync, "sync", "normal", "SQLite synchronous: normal (survives a killed relay) or full (also power loss; one fsync per commit)")
	fs.DurationVar(&cfg.JanitorEvery, "janitor-every", 15*time.Second, "how often expired entries are removed")
	fs.StringVar(&cfg.LogFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&cfg.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	addOpsFlags(fs, cfg)
}

// defaultConfig is the config of `serve` given no flags.
func defaultConfig() config {
	var cfg config
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	addServeFlags(fs, &cfg)
	if err := fs.Parse(nil); err != nil {
		panic(err) // the defaults are constants: they parse
	}
	return cfg
}

// serve runs the relay until ctx ends, then answers the open long polls,
// finishes the requests in flight and closes the store.
func serve(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	log, err := newLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	if err != nil {
		return err
	}
	if cfg.MaxWait <= 0 || cfg.DefaultLease <= 0 || cfg.MaxLease < cfg.DefaultLease || cfg.JanitorEvery <= 0 || cfg.MaxBody <= 0 ||
		cfg.MsgTTL <= 0 || cfg.MaxMsg <= 0 || cfg.ViaTimeout <= 0 {
		return errors.New("--max-wait, --lease, --janitor-every, --max-body, --msg-ttl, --max-msg and --via-timeout must be positive, and --max-lease at least --lease")
	}
	if cfg.ViaHost != "" && (!strings.HasPrefix(cfg.ViaHost, ".") || strings.Count(cfg.ViaHost, ".") < 2) {
		return fmt.Errorf("--via-host %q: give a host suffix with a leading dot, such as .via.example.com", cfg.ViaHost)
	}
	front, err := newFrontend(log, cfg.Listen, cfg.DB)
	if err != nil {
		return err
	}
	if err := cfg.checkOps(); err != nil {
		return err
	}
	st, err := openStore(ctx, cfg.DB, cfg.storeOptions())
	if err != nil {
		return err
	}
	defer st.Close()
	srv := newServer(log, st, cfg)
	if err := front.listen(cfg.Addr, srv); err != nil {
		return err
	}
	defer front.close()
	if front.challenge != nil {
		fmt.Fprintf(stdout, "c2cvia answering ACME challenges and redirecting to HTTPS on http://%s\n", front.challengeLn.Addr())
	}
	fmt.Fprintf(stdout, "c2cvia listening on %s (store %s)\n", front.url(), cfg.DB)
	log.Info("listening", "addr", front.mainLn.Addr().String(), "mode", front.mode(), "db", cfg.DB)

	jctx, stopJanitor := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { runJanitor(jctx, log, st, cfg.JanitorEvery) })
	defer func() { stopJanitor(); wg.Wait() }()

	errc := front.serve()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down")
	srv.shutdown()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := front.shutdown(sctx); err != nil {
		log.Warn("shutdown", "err", err)
	}
	stopJanitor()
	wg.Wait()
	if err := st.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	log.Info("stopped")
	return nil
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format must be text or json, not %q", format)
}

// byteSize is a flag of bytes: 1048576, 1024KiB or 1MiB.
type byteSize struct{ p *int64 }

func newByteSize(p *int64, def int64) *byteSize { *p = def; return &byteSize{p} }

func (b *byteSize) Type() string   { return "bytes" }
func (b *byteSize) String() string { return strconv.FormatInt(*b.p, 10) }
func (b *byteSize) Set(s string) error {
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1000}, {"MB", 1000 * 1000}, {"B", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSpace(strings.TrimSuffix(s, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 {
		return fmt.Errorf("want a positive size such as 1048576 or 1MiB")
	}
	*b.p = n * mult
	return nil
}
