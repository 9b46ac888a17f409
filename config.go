// One configuration for every command: the flags with their defaults, the
// C2CVIA_* variable each one reads, and the checks that stop a bad setting
// before anything is opened or written.

package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/crypto/acme/autocert"
)

// config is what `serve` runs with; purge and inspect use its store part.
type config struct {
	Addr string
	DB   string

	// Lifetimes (store).
	ReqTTL      time.Duration // an unanswered request: then expired
	ResTTL      time.Duration // an answered, expired or failed one stays readable this long
	TokenTTL    time.Duration // a login
	MsgTTL      time.Duration // a peer message
	MaxAttempts int           // deliveries before a request is failed
	ClaimTTL    time.Duration // a net unused this long loses its claim; 0: never
	Sync        string        // SQLite synchronous: normal or full

	// Calls.
	MaxWait         time.Duration
	DefaultLease    time.Duration
	MaxLease        time.Duration
	MaxBody         int64
	MaxInflight     int64 // bytes of request bodies calls in progress may hold, relay-wide; 0: no limit
	MaxMsg          int64
	MsgCache        int64 // bytes of recent peer messages in memory, all nets together
	CORSOrigin      string
	ViaTimeout      time.Duration
	ViaHost         string
	JanitorEvery    time.Duration
	LogFormat       string
	LogLevel        string
	AccessLog       bool         // a log line per call
	AccessLogErrors int          // lines a second per client address for calls answered with an error; 0: every one
	Listen          listenConfig // TLS, ACME and connection limits (tls.go)

	// Operations: metrics.go and limits.go.
	Metrics          bool
	RateIP           float64 // calls per second per client address; 0: no limit
	RateIPBurst      int
	RateToken        float64 // calls per second per token; 0: no limit
	RateTokenBurst   int
	RateServer       float64 // calls per second of a net's SimServer (its key); 0: no limit
	RateServerBurst  int
	RateVia          float64 // gateway requests per second to a served net; 0: no limit
	RateViaBurst     int
	MaxQueue         int   // queued requests per net; 0: no limit
	MaxPollsPerToken int   // 0: no limit
	MaxPeers         int   // logins per net; 0: no limit
	MaxSubs          int   // subscriptions per login; 0: no limit
	MaxStore         int64 // bytes the store may use; 0: no limit
	MaxNetStore      int64 // payload bytes per net; 0: no limit
	TrustProxy       []netip.Prefix

	// Budgets of who sends (budget.go): bytes of requests and peer
	// messages one client address may store (0: no limit), bytes of
	// requests a net nobody serves may store (0: no limit), and the part of
	// a net's gateway, and of its SimClients' queue, one address may take
	// (0 or 1: all of it).
	MaxAddrStore     int64
	MaxUnservedStore int64
	ViaAddrShare     float64
}

// listenConfig is how serve listens: TLS, ACME and the connection limits.
type listenConfig struct {
	TLSCert           string
	TLSKey            string
	ACMEDomains       []string
	ACMEEmail         string
	ACMECache         string // "": a folder "acme" beside the store
	ACMEHTTPAddr      string // "": no HTTP listener, tls-alpn-01 challenges only
	ACMEDirectory     string
	ReadHeaderTimeout time.Duration
	ReadBodyTimeout   time.Duration
	IdleTimeout       time.Duration
	WriteTimeout      time.Duration // each write of a reply
	MaxHeaderBytes    int64
	MaxConnsPerIP     int            // connections open per client address; 0: no cap
	MaxConnsPer48     int            // connections open per IPv6 /48; 0: no cap
	MaxConns          int            // connections open in all; 0: defaultMaxConns
	trusted           []netip.Prefix // --trust-proxy: their connections are not capped
}

// storeOptions are the lifetimes and limits the store enforces.
func (c config) storeOptions() storeOptions {
	return storeOptions{ReqTTL: c.ReqTTL, ResTTL: c.ResTTL, TokenTTL: c.TokenTTL, MsgTTL: c.MsgTTL,
		MaxAttempts: c.MaxAttempts, ClaimTTL: c.ClaimTTL, Sync: c.Sync, MaxQueue: c.MaxQueue, MaxPeers: c.MaxPeers, MaxSubs: c.MaxSubs,
		MaxStore: c.MaxStore, MaxNetStore: c.MaxNetStore, MsgCache: c.MsgCache,
		MaxAddrStore: c.MaxAddrStore, MaxUnservedStore: c.MaxUnservedStore, ServedWithin: servedWithin(c.MaxWait), ViaAddrShare: c.ViaAddrShare}
}

// addStoreFlags are the flags serve and purge share: the file and lifetimes.
func addStoreFlags(fs *pflag.FlagSet, c *config) {
	fs.StringVar(&c.DB, "db", "c2cvia.db", dbFlagUsage)
	fs.DurationVar(&c.ReqTTL, "req-ttl", 5*time.Minute, "how long a request waits for an answer before it is expired")
	fs.DurationVar(&c.ResTTL, "res-ttl", 10*time.Minute, "how long an answered, expired or failed request stays readable")
	fs.IntVar(&c.MaxAttempts, "max-attempts", 5, "deliveries without an answer before a request is failed")
}

// addServeFlags are serve's flags. Their defaults are the relay's defaults:
// defaultConfig and the bench's relay read them from here.
func addServeFlags(fs *pflag.FlagSet, c *config) {
	fs.StringVar(&c.Addr, "addr", ":8080", "address to listen on")
	addListenFlags(fs, &c.Listen)
	addStoreFlags(fs, c)
	fs.DurationVar(&c.TokenTTL, "token-ttl", 24*time.Hour, "how long a login token stays valid")
	fs.DurationVar(&c.ClaimTTL, "claim-ttl", claimTTLDefault, "a net whose SimServer has not polled for this long, with no request pending, loses its claim (0: never)")
	fs.DurationVar(&c.MaxWait, "max-wait", 60*time.Second, "longest long poll; a larger wait is clamped to it")
	fs.DurationVar(&c.DefaultLease, "lease", 30*time.Second, "lease on a delivered request when pullreqsmart names none")
	fs.DurationVar(&c.MaxLease, "max-lease", 10*time.Minute, "longest lease a SimServer may ask for")
	fs.Var(newByteSize(&c.MaxBody, 1<<20), "max-body", "largest request body (bytes, or with KiB/MiB)")
	fs.Var(newByteLimit(&c.MaxInflight, 256<<20), "max-inflight-body", "bytes of request bodies the relay reads and holds at once, all calls together (one address: a sixteenth); a call that finds no room within 1s is 503 server_busy (bytes, or with KiB/MiB/GiB; 0: no limit)")
	fs.DurationVar(&c.MsgTTL, "msg-ttl", time.Hour, "how long a peer message is kept for its receivers")
	fs.Var(newByteSize(&c.MaxMsg, 64<<10), "max-msg", "largest peer message data, as JSON text (bytes, or with KiB/MiB)")
	fs.Var(newByteSize(&c.MsgCache, msgCacheTotal), "msg-cache", "bytes of recent peer messages kept in memory, all nets together; past it the nets used least recently are read from the store (bytes, or with KiB/MiB/GiB)")
	fs.StringVar(&c.CORSOrigin, "cors-origin", "*", "Access-Control-Allow-Origin: * or a comma-separated list of origins")
	fs.DurationVar(&c.ViaTimeout, "via-timeout", 30*time.Second, "how long a /via/ request waits for the SimServer before 504")
	fs.StringVar(&c.ViaHost, "via-host", "", "host suffix such as .via.example.com: NET.via.example.com serves net NET on its own origin")
	fs.StringVar(&c.Sync, "sync", "normal", "SQLite synchronous: normal (survives a killed relay) or full (also power loss; one fsync per commit)")
	fs.DurationVar(&c.JanitorEvery, "janitor-every", 15*time.Second, "how often expired entries are removed")
	fs.StringVar(&c.LogFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.BoolVar(&c.AccessLog, "access-log", true, "log each call at info: method, route, status, ms, bytes, net, client (never a token or key)")
	fs.IntVar(&c.AccessLogErrors, "access-log-errors", 10, "access log lines a second per client address for calls answered with an error (4xx, 5xx but 500), and 20 times that in all; the rest are counted and summarized once a minute (0: log every one)")
	addOpsFlags(fs, c)
}

func addListenFlags(fs *pflag.FlagSet, c *listenConfig) {
	fs.StringVar(&c.TLSCert, "tls-cert", "", "serve HTTPS with this certificate file (PEM, leaf first, then its chain); needs --tls-key")
	fs.StringVar(&c.TLSKey, "tls-key", "", "private key file (PEM) of --tls-cert")
	fs.StringSliceVar(&c.ACMEDomains, "acme-domain", nil, "serve HTTPS for this domain with a certificate from an ACME CA (Let's Encrypt); repeatable or comma-separated; --addr should then be :443")
	fs.StringVar(&c.ACMEEmail, "acme-email", "", "contact address for the ACME account (the CA's expiry and problem notices)")
	fs.StringVar(&c.ACMECache, "acme-cache", "", `folder for the ACME account key and certificates (default: "acme" beside --db)`)
	fs.StringVar(&c.ACMEHTTPAddr, "acme-http-addr", ":80", "address for ACME HTTP-01 challenges, redirecting every other request to HTTPS; empty: none (tls-alpn-01 only)")
	fs.StringVar(&c.ACMEDirectory, "acme-directory", autocert.DefaultACMEDirectory, "directory URL of the ACME CA")
	fs.DurationVar(&c.ReadHeaderTimeout, "read-header-timeout", 10*time.Second, "time a client has for the TLS handshake and its request headers")
	fs.DurationVar(&c.ReadBodyTimeout, "read-body-timeout", 30*time.Second, "time a client has to send a request body (not counting a long poll's wait)")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", 2*time.Minute, "how long an idle keep-alive connection stays open")
	fs.Var(newByteSize(&c.MaxHeaderBytes, 64<<10), "max-header-bytes", "largest request header (bytes, or with KiB); over it: 431")
	fs.DurationVar(&c.WriteTimeout, "write-timeout", 10*time.Second, "time each write of a reply (each event of a stream) has to reach a client; then its connection is closed")
	fs.IntVar(&c.MaxConnsPerIP, "max-conns-per-ip", 128, "connections one client address may have open; more are closed at once (0: no cap; trusted proxies are not capped)")
	fs.IntVar(&c.MaxConnsPer48, "max-conns-per-48", 1024, "connections the addresses of one IPv6 /48 may have open together; more are closed at once (0: no cap; trusted proxies are not capped)")
	fs.IntVar(&c.MaxConns, "max-conns", 0, "connections the relay holds open in all; more are closed at once, but 127.0.0.1 and ::1 may open 16 more (0: the open-file limit less a tenth, at least 128)")
}

// addOpsFlags are serve's flags for the metrics and the limits.
func addOpsFlags(fs *pflag.FlagSet, c *config) {
	fs.BoolVar(&c.Metrics, "metrics", true, "serve Prometheus metrics at GET /metrics")
	fs.Float64Var(&c.RateIP, "rate-ip", 100, "calls per second per client address that no token or key pays for: logins, new nets, gateway requests to a net nobody serves, refused credentials (0: no limit)")
	fs.IntVar(&c.RateIPBurst, "rate-ip-burst", 200, "calls a client address may make at once above --rate-ip")
	fs.Float64Var(&c.RateToken, "rate-token", 2000, "calls per second per token (0: no limit)")
	fs.IntVar(&c.RateTokenBurst, "rate-token-burst", 4000, "calls a token may make at once above --rate-token")
	fs.Float64Var(&c.RateServer, "rate-server", 5000, "calls per second of a net's SimServer, authenticated by its key, whatever its address (0: no limit)")
	fs.IntVar(&c.RateServerBurst, "rate-server-burst", 10000, "calls a net's SimServer may make at once above --rate-server")
	fs.Float64Var(&c.RateVia, "rate-via", 50000, "gateway (/via/) requests per second to a net whose SimServer is polling, whatever their address (0: no limit)")
	fs.IntVar(&c.RateViaBurst, "rate-via-burst", 100000, "gateway requests a served net may get at once above --rate-via")
	fs.IntVar(&c.MaxQueue, "max-queue", 10_000, "queued requests per net; a pushreq over it is 429 queue_full (0: no limit)")
	fs.IntVar(&c.MaxPollsPerToken, "max-polls-per-token", 8, "long polls a token may have open at once (0: no limit)")
	fs.IntVar(&c.MaxPeers, "max-peers", 10_000, "logins per net; a login over it takes the slot of a login idle for 5 minutes, else it is 429 net_full (0: no limit)")
	fs.IntVar(&c.MaxSubs, "max-subs", 1000, "topic subscriptions per login (a closed one counts until its messages expire); one more is 429 too_many_subscriptions (0: no limit)")
	fs.Var(newByteLimit(&c.MaxStore, 2<<30), "max-store", "bytes the store's file may use; a write past it is 507 store_full (bytes, or with KiB/MiB/GiB; 0: no limit)")
	fs.Var(newByteLimit(&c.MaxNetStore, 256<<20), "max-net-store", "bytes of requests, answers and messages one net may store; a write past it is 507 net_store_full (bytes, or with KiB/MiB/GiB; 0: no limit)")
	fs.Var(newByteLimit(&c.MaxAddrStore, 128<<20), "max-addr-store", "bytes of requests and peer messages one client address (an IPv6 address by its /64) may have stored, all nets together; a request or message past it is 507 addr_store_full (bytes, or with KiB/MiB/GiB; 0: no limit)")
	fs.Var(newByteLimit(&c.MaxUnservedStore, 16<<20), "max-unserved-store", "bytes of requests a net may store while no SimServer polls it (none within twice --max-wait); a request past it is 507 unserved_store_full (bytes, or with KiB/MiB/GiB; 0: no limit)")
	fs.Float64Var(&c.ViaAddrShare, "via-addr-share", 0.25, "the part of a net one client address may take: of its SimClients' queue and of its gateway's (--max-queue each), of its gateway's bytes (half the net's budget) and of its --rate-via (0 or 1: all of it)")
	fs.Var(prefixList{&c.TrustProxy}, "trust-proxy", "addresses or CIDR blocks of reverse proxies whose X-Forwarded-For gives the client address, or none")
}

// defaultConfig is the config of `serve` given no flags.
func defaultConfig() config {
	cfg, err := parseServeConfig(nil)
	if err != nil {
		panic(err) // the defaults are constants: they parse and pass
	}
	return cfg
}

// parseServeConfig is the config serve runs with for args (serve's flags,
// no variables), checked. The bench's in-process relay is built from it.
func parseServeConfig(args []string) (config, error) {
	var cfg config
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	addServeFlags(fs, &cfg)
	deferErrors(fs)
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	if fs.NArg() > 0 {
		return config{}, fmt.Errorf("serve takes no arguments, not %q", fs.Args())
	}
	return cfg, cfg.check(fs)
}

// Environment variables: every flag reads one, --req-ttl C2CVIA_REQ_TTL,
// except those marked noEnv.

// envName is the environment variable a flag reads: --req-ttl is C2CVIA_REQ_TTL.
func envName(flag string) string {
	return "C2CVIA_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// Flag annotations: noEnv marks a flag that never reads the environment (a
// destructive one: a variable left in a shell or a unit file must not wipe
// a store); fromEnv marks a flag that took its value from its variable, so
// that an error about it names the variable.
const (
	noEnv   = "c2cvia_no_env"
	fromEnv = "c2cvia_from_env"
)

// neverFromEnv marks flags as read from the command line only.
func neverFromEnv(fs *pflag.FlagSet, names ...string) {
	for _, name := range names {
		if err := fs.SetAnnotation(name, noEnv, []string{"true"}); err != nil {
			panic(err) // a flag of our own: it exists
		}
	}
}

// flagsFromEnv sets every flag not given on the command line from its
// environment variable, if that is set, and returns one line for each
// variable whose value the flag does not take.
func flagsFromEnv(fs *pflag.FlagSet, getenv func(string) string) []string {
	var problems []string
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Changed || f.Name == "help" || f.Annotations[noEnv] != nil {
			return
		}
		v := getenv(envName(f.Name))
		if v == "" {
			return
		}
		_ = fs.SetAnnotation(f.Name, fromEnv, []string{"true"})
		if err := fs.Set(f.Name, v); err != nil {
			problems = append(problems, fmt.Sprintf("--%s %q (from %s): %s", f.Name, v, envName(f.Name), accepts(f, err)))
		}
	})
	return problems
}

// deferredValue wraps a flag's value so that a value the flag cannot read
// is kept as a problem for the command's check, with the others, instead
// of stopping the parse at the first one. The flag keeps its previous value.
type deferredValue struct {
	pflag.Value
	raw string // as given, on the command line or in the variable
	err error  // what the flag's own Set said of raw; nil: it took it
}

func (d *deferredValue) Set(v string) error {
	prev := d.Value.String()
	d.raw = v
	if d.err = d.Value.Set(v); d.err != nil {
		_ = d.Value.Set(prev) // a failed Set may have left anything behind
	}
	return nil
}

// deferErrors makes every flag of fs (but help) a deferredValue.
func deferErrors(fs *pflag.FlagSet) {
	fs.VisitAll(func(f *pflag.Flag) {
		if _, done := f.Value.(*deferredValue); !done && f.Name != "help" {
			f.Value = &deferredValue{Value: f.Value}
		}
	})
}

// accepts says what a flag takes, for an error about a value it refused.
func accepts(f *pflag.Flag, err error) string {
	switch f.Value.Type() {
	case "duration":
		return "want a duration such as 30s, 5m or 24h"
	case "int":
		return "want a whole number"
	case "float64":
		return "want a number"
	case "bool":
		return "want true or false"
	}
	var bad *pflag.InvalidValueError
	if errors.As(err, &bad) {
		return errors.Unwrap(err).Error() // the flag's own type says what it wants
	}
	return err.Error()
}

// flagError rewrites a value the command line gave that a flag does not
// take in the shape of the other setting errors: `--token-ttl "5": want a
// duration such as 30s, 5m or 24h`. Other parse errors pass unchanged.
func flagError(_ *cobra.Command, err error) error {
	var bad *pflag.InvalidValueError
	if errors.As(err, &bad) {
		return fmt.Errorf("--%s %q: %s", bad.GetFlag().Name, bad.GetValue(), accepts(bad.GetFlag(), err))
	}
	return err
}

// checksSettings marks a command whose RunE checks its settings (serve,
// purge, inspect): run makes its flags deferredValues, so that a value a
// flag cannot read, given on the command line or in its variable, is
// reported by that check with every other problem.
const checksSettings = "c2cvia_checks_settings"

// applyEnv is the root command's PersistentPreRunE: every flag not given
// on the command line reads its C2CVIA_* variable. A variable its flag
// cannot read stops a command that does not check its own settings.
func applyEnv(getenv func(string) string) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, _ []string) error {
		return (&settingErrors{errs: flagsFromEnv(cmd.Flags(), getenv)}).err()
	}
}

// checkSettings marks cmd as one that checks its settings in its RunE,
// starting from newSettingErrors.
func checkSettings(cmd *cobra.Command) *cobra.Command {
	cmd.Annotations = map[string]string{checksSettings: "true"}
	return cmd
}

// newSettingErrors starts the check of cmd's settings with the values its
// flags could not read, given on the command line or in their variables.
func newSettingErrors(cmd *cobra.Command) *settingErrors { return settingsOf(cmd.Flags()) }

// settingsOf starts the check of fs with the values its deferred flags
// could not read.
func settingsOf(fs *pflag.FlagSet) *settingErrors {
	s := &settingErrors{fs: fs}
	if fs == nil {
		return s
	}
	fs.VisitAll(func(f *pflag.Flag) {
		if d, ok := f.Value.(*deferredValue); ok && d.err != nil {
			s.badFlag(f.Name, accepts(f, d.err))
		}
	})
	return s
}

// documentEnv adds each flag's variable to its help text.
func documentEnv(fs *pflag.FlagSet) {
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Annotations[noEnv] != nil {
			f.Usage += " (command line only: never read from the environment)"
			return
		}
		f.Usage += " ($" + envName(f.Name) + ")"
	})
}

// settingErrors gathers what is wrong with the flags of one command, each
// problem naming its flag (and variable, when the value came from it) and
// what it accepts.
type settingErrors struct {
	fs   *pflag.FlagSet
	errs []string
}

// bad records a problem with the flags named; the first one's value is
// quoted.
func (s *settingErrors) bad(format string, args ...any) {
	s.errs = append(s.errs, fmt.Sprintf(format, args...))
}

// badFlag records that --name's value is wrong and what it accepts.
func (s *settingErrors) badFlag(name, accepts string) {
	s.bad("%s: %s", s.describe(name), accepts)
}

// describe names a flag with its value: `--token-ttl 0s`, or
// `--token-ttl 0s (from C2CVIA_TOKEN_TTL)`.
func (s *settingErrors) describe(name string) string {
	out := "--" + name
	if f := s.lookup(name); f != nil {
		value := f.Value.String()
		if d, ok := f.Value.(*deferredValue); ok && f.Changed {
			value = d.raw // as typed: 500us, not 500µs
		}
		out += " " + strconv.Quote(value)
		if f.Annotations[fromEnv] != nil {
			out += " (from " + envName(name) + ")"
		}
	}
	return out
}

func (s *settingErrors) lookup(name string) *pflag.Flag {
	if s.fs == nil {
		return nil // a config built in code (tests): no flags to quote
	}
	return s.fs.Lookup(name)
}

// positive checks a duration that must be at least min: the store counts
// time in whole milliseconds, so nothing shorter than 1 ms means anything.
func (s *settingErrors) positive(name string, d time.Duration) {
	s.atLeastDuration(name, d, time.Millisecond)
}

func (s *settingErrors) atLeastDuration(name string, d, min time.Duration) {
	switch {
	case d <= 0:
		s.badFlag(name, "must be more than 0, a duration such as 30s, 5m or 24h")
	case d < min:
		s.badFlag(name, "must be at least "+min.String()+", a duration such as 30s, 5m or 24h")
	}
}

func (s *settingErrors) atLeast(name string, n, lo int, unit string) {
	if n < lo {
		s.badFlag(name, fmt.Sprintf("must be a whole number of %s, %d or more", unit, lo))
	}
}

// limit checks a per-net or per-token limit, where 0 means none.
func (s *settingErrors) limit(name string, n int, unit string) {
	if n < 0 {
		s.badFlag(name, "must be a whole number of "+unit+", or 0 for no limit")
	}
}

func (s *settingErrors) oneOf(name, v string, valid ...string) {
	if !slices.Contains(valid, v) {
		s.badFlag(name, "must be one of "+strings.Join(valid, ", "))
	}
}

func (s *settingErrors) err() error {
	if len(s.errs) == 0 {
		return nil
	}
	if len(s.errs) == 1 {
		return errors.New(s.errs[0])
	}
	return errors.New("bad settings:\n  " + strings.Join(s.errs, "\n  "))
}

// checkStore checks the flags of the store's file and lifetimes.
func (c config) checkStore(s *settingErrors) {
	if c.DB == "" {
		s.badFlag("db", "must name a SQLite file or a postgres:// URL")
	}
	if err := checkDB(c.DB); err != nil {
		from := "" // never the value: it may hold a password
		if f := s.lookup("db"); f != nil && f.Annotations[fromEnv] != nil {
			from = " (from " + envName("db") + ")"
		}
		s.bad("%v%s", err, from)
	}
	if isPostgresURL(c.DB) && len(c.Listen.ACMEDomains) > 0 && c.Listen.ACMECache == "" {
		s.bad("--acme-domain on a PostgreSQL store needs --acme-cache: its default folder is beside a SQLite --db")
	}
	s.positive("req-ttl", c.ReqTTL)
	s.positive("res-ttl", c.ResTTL)
	s.atLeast("max-attempts", c.MaxAttempts, 1, "deliveries")
}

// check refuses every setting serve cannot run with. fs is the flag set the
// config was parsed from, to name the flags and their variables; nil for a
// config built in code.
func (c config) check(fs *pflag.FlagSet) error { return c.checkWith(settingsOf(fs)) }

// checkWith adds what is wrong with c to s, and returns them all.
func (c config) checkWith(s *settingErrors) error {
	if !validAddr(c.Addr) {
		s.badFlag("addr", "must be host:port or :port, such as :8080 or 127.0.0.1:8080")
	}
	c.checkStore(s)
	s.positive("token-ttl", c.TokenTTL)
	if c.ClaimTTL < 0 || c.ClaimTTL > 0 && c.ClaimTTL < time.Second {
		s.badFlag("claim-ttl", "must be 0 (claims never lapse) or at least 1s, a duration such as 720h")
	}
	s.positive("msg-ttl", c.MsgTTL)
	s.positive("max-wait", c.MaxWait)
	s.positive("lease", c.DefaultLease)
	s.positive("max-lease", c.MaxLease)
	s.positive("via-timeout", c.ViaTimeout)
	s.atLeastDuration("janitor-every", c.JanitorEvery, time.Second) // a purge is a write: not back to back
	if c.DefaultLease > 0 && c.MaxLease > 0 && c.MaxLease < c.DefaultLease {
		s.bad("%s and %s: --max-lease must be at least --lease", s.describe("lease"), s.describe("max-lease"))
	}
	s.oneOf("sync", c.Sync, "normal", "full")
	s.oneOf("log-format", c.LogFormat, "text", "json")
	s.oneOf("log-level", strings.ToLower(c.LogLevel), "debug", "info", "warn", "error")
	if err := checkOrigins(c.CORSOrigin); err != nil {
		s.badFlag("cors-origin", err.Error())
	}
	if c.ViaHost != "" && (!strings.HasPrefix(c.ViaHost, ".") || len(c.ViaHost) < 2 || strings.Contains(c.ViaHost, "..") ||
		strings.ContainsAny(c.ViaHost, ":/ *@") || strings.HasSuffix(c.ViaHost, ".")) {
		s.badFlag("via-host", "must be a host suffix with a leading dot, such as .via.example.com or .localhost")
	}
	for _, r := range []struct {
		name string
		v    float64
	}{{"rate-ip", c.RateIP}, {"rate-token", c.RateToken}, {"rate-server", c.RateServer}, {"rate-via", c.RateVia}} {
		if r.v < 0 || r.v != r.v {
			s.badFlag(r.name, "must be calls per second, or 0 for no limit")
		}
	}
	if c.RateIP > 0 {
		s.atLeast("rate-ip-burst", c.RateIPBurst, 1, "calls")
	}
	if c.RateToken > 0 {
		s.atLeast("rate-token-burst", c.RateTokenBurst, 1, "calls")
	}
	if c.RateServer > 0 {
		s.atLeast("rate-server-burst", c.RateServerBurst, 1, "calls")
	}
	if c.RateVia > 0 {
		s.atLeast("rate-via-burst", c.RateViaBurst, 1, "calls")
	}
	if c.MaxInflight > 0 && c.MaxInflight < simEnvelope(c.MaxBody) {
		s.bad("%s: must hold at least the largest body, %d bytes (--max-body after base64, plus 64 KiB), or be 0 for no limit",
			s.describe("max-inflight-body"), simEnvelope(c.MaxBody))
	}
	s.limit("access-log-errors", c.AccessLogErrors, "lines a second")
	if c.ViaAddrShare < 0 || c.ViaAddrShare > 1 || c.ViaAddrShare != c.ViaAddrShare {
		s.badFlag("via-addr-share", "must be a part from 0 to 1, such as 0.25 (0 or 1: no share)")
	}
	s.limit("max-queue", c.MaxQueue, "requests")
	s.limit("max-polls-per-token", c.MaxPollsPerToken, "long polls")
	s.limit("max-peers", c.MaxPeers, "logins")
	s.limit("max-subs", c.MaxSubs, "subscriptions")
	c.Listen.check(s)
	return s.err()
}

// check refuses listen settings that cannot work: timeouts, and TLS or ACME
// flags that do not go together. Files are read later, by newFrontend.
func (c listenConfig) check(s *settingErrors) {
	s.positive("read-header-timeout", c.ReadHeaderTimeout)
	s.positive("read-body-timeout", c.ReadBodyTimeout)
	s.positive("idle-timeout", c.IdleTimeout)
	s.positive("write-timeout", c.WriteTimeout)
	s.limit("max-conns-per-ip", c.MaxConnsPerIP, "connections")
	s.limit("max-conns-per-48", c.MaxConnsPer48, "connections")
	if c.MaxConns < 0 {
		s.badFlag("max-conns", "must be a whole number of connections, or 0 for a cap under the open-file limit")
	}
	if c.MaxConnsPer48 > 0 && c.MaxConnsPerIP > c.MaxConnsPer48 {
		s.bad("%s and %s: a /48 holds many addresses, so --max-conns-per-48 must be at least --max-conns-per-ip (or 0)",
			s.describe("max-conns-per-ip"), s.describe("max-conns-per-48"))
	}
	switch {
	case len(c.ACMEDomains) > 0 && (c.TLSCert != "" || c.TLSKey != ""):
		s.bad("--acme-domain gets its certificates from the CA: give it or --tls-cert/--tls-key, not both")
	case len(c.ACMEDomains) == 0 && (c.ACMEEmail != "" || c.ACMECache != ""):
		s.bad("--acme-email and --acme-cache need --acme-domain")
	case (c.TLSCert == "") != (c.TLSKey == ""):
		s.bad("--tls-cert and --tls-key go together")
	case len(c.ACMEDomains) > 0:
		if _, err := acmeDomains(c.ACMEDomains); err != nil {
			s.bad("%v", err)
		}
		if u, err := url.Parse(c.ACMEDirectory); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			s.badFlag("acme-directory", "must be the http(s) URL of an ACME directory")
		}
		if c.ACMEHTTPAddr != "" {
			if !validAddr(c.ACMEHTTPAddr) {
				s.badFlag("acme-http-addr", "must be host:port or :port, such as :80, or empty for none")
			}
		}
	}
}

// validAddr reports whether addr is host:port with a port net.Listen takes:
// 0-65535, or a service name such as http.
func validAddr(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	_, err = net.LookupPort("tcp", port)
	return err == nil
}

// acmeDomains checks and normalises --acme-domain: DNS names with a dot,
// which is what autocert answers for.
func acmeDomains(list []string) ([]string, error) {
	var out []string
	for _, d := range list {
		d = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
		if d == "" {
			continue
		}
		if !strings.Contains(d, ".") || strings.ContainsAny(d, ":/*@ ") || net.ParseIP(d) != nil {
			return nil, fmt.Errorf("--acme-domain %q: want a DNS name such as relay.example.com (no scheme, port, wildcard or IP)", d)
		}
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("--acme-domain names no domain")
	}
	return out, nil
}

// checkOrigins checks --cors-origin: "*", or origins as browsers send them
// in Origin (RFC 6454): scheme://host[:port], no path, query or fragment.
func checkOrigins(list string) error {
	if strings.TrimSpace(list) == "*" {
		return nil
	}
	n := 0
	for _, o := range strings.Split(list, ",") {
		if o = strings.TrimSpace(o); o == "" {
			continue
		}
		n++
		u, err := url.Parse(o)
		if o == "*" || err != nil || u.Scheme == "" || u.Host == "" || u.Path != "" || u.RawQuery != "" ||
			u.Fragment != "" || u.User != nil || strings.HasSuffix(o, "/") {
			return fmt.Errorf("%q is not an origin: want * or origins such as https://app.example.com,http://localhost:3000 (scheme and host, no path)", o)
		}
	}
	if n == 0 {
		return errors.New("names no origin: want * or origins such as https://app.example.com")
	}
	return nil
}

// newLogger is the relay's logger on w, from --log-format and --log-level
// (checked already).
func newLogger(w interface{ Write([]byte) (int, error) }, format, level string) *slog.Logger {
	var lv slog.Level
	_ = lv.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: lv}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// byteSize is a flag of bytes: 1048576, 1024KiB or 1MiB; with zero, 0 too
// (no limit).
type byteSize struct {
	p    *int64
	zero bool
}

func newByteSize(p *int64, def int64) *byteSize { *p = def; return &byteSize{p: p} }

// newByteLimit is a byteSize where 0 means no limit.
func newByteLimit(p *int64, def int64) *byteSize { *p = def; return &byteSize{p: p, zero: true} }

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
	if b.zero && err == nil && n == 0 {
		*b.p = 0
		return nil
	}
	if err != nil || n <= 0 || n > (1<<62)/mult {
		if b.zero {
			return fmt.Errorf("want a size such as 1048576 or 1GiB, or 0 for no limit")
		}
		return fmt.Errorf("want a positive size such as 1048576 or 1MiB")
	}
	*b.p = n * mult
	return nil
}

// prefixList is the --trust-proxy flag: comma-separated addresses and
// CIDR blocks, or "none".
type prefixList struct{ p *[]netip.Prefix }

func (l prefixList) Type() string { return "cidrs" }

func (l prefixList) String() string {
	if l.p == nil || len(*l.p) == 0 {
		return "none"
	}
	var out []string
	for _, p := range *l.p {
		out = append(out, p.String())
	}
	return strings.Join(out, ",")
}

func (l prefixList) Set(s string) error {
	var out []netip.Prefix
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" || item == "none" {
			continue
		}
		if p, err := netip.ParsePrefix(item); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(item)
		if err != nil {
			return fmt.Errorf("want addresses or CIDR blocks such as 127.0.0.1,10.0.0.0/8, or none; not %q", item)
		}
		a = a.Unmap()
		out = append(out, netip.PrefixFrom(a, a.BitLen()))
	}
	*l.p = out
	return nil
}
