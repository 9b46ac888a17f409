// The relays the bench loads in-process, and the front of its direct
// baselines: package main starts both with serve's own code (Relays), on
// serve's flags, so that what is measured is what serve runs.

package bench

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"
)

// Relays is what the bench takes from the program it is part of, which it
// cannot import. Package main fills it in with serve's own functions
// (harness.go), so that the relay the bench loads is the one serve runs.
type Relays struct {
	// Start starts a relay in this process as `c2cvia serve ARGS` would:
	// args are serve's flags and no C2CVIA_* variable is read, so every
	// setting args do not name is serve's default. The relay logs to
	// stderr and serves when Start returns. A bad flag, a busy port or a
	// store that cannot be opened is an error.
	Start func(ctx context.Context, args []string, stderr io.Writer) (Server, error)

	// Front serves h as serve serves the relay's handler for args: the
	// listener on --addr, the http.Server with serve's header and idle
	// timeouts and header limit, the body deadline; it logs to stderr.
	// The direct baselines run on it, so that the ratio is what the relay
	// costs on top of the same HTTP front.
	Front func(args []string, h http.Handler, stderr io.Writer) (Server, error)

	// Backlog makes a store at path, as `serve --db path --sync sync` opens
	// it, with n requests queued in net (from one login, expiring in an
	// hour), and closes it; progress is told how many are queued so far.
	// It is the one thing the bench does not do over HTTP: the backlog
	// scenario needs 1,000,000 queued requests, minutes of pushreq calls,
	// where one bulk insert per 100,000 rows takes seconds.
	Backlog func(ctx context.Context, path, sync, net string, n int, progress func(queued int)) error
}

// Server is a relay, or a direct baseline's front, serving in this
// process.
type Server interface {
	// URL is its base URL, such as http://127.0.0.1:43127.
	URL() string
	// Stop shuts it down as serve does on SIGTERM: open long polls are
	// answered, calls in flight get up to 10 s, a relay's store is closed.
	Stop() error
}

// relayArgs are serve's flags for an in-process relay on db: what the
// bench changes, and nothing else, so every other setting is serve's
// default.
func (b *bench) relayArgs(db string) []string {
	return []string{"--addr", "127.0.0.1:0", "--db", db, "--sync", b.opts.Sync,
		// Every bench client calls from 127.0.0.1: per-address and
		// per-token rate limits would measure the limiter, not the relay.
		// The idle scenario logs 10,000+ peers into one net, past
		// --max-peers, and holds their polls open from one address, past
		// --max-conns-per-ip.
		"--rate-ip", "0", "--rate-token", "0", "--rate-server", "0", "--rate-via", "0", "--max-peers", "0", "--max-conns-per-ip", "0",
		// Warnings and errors only: the relay's info lines would
		// interleave with the progress bar.
		"--log-level", "warn"}
}

// directArgs are serve's flags for a direct baseline's front.
var directArgs = []string{"--addr", "127.0.0.1:0", "--log-level", "warn", "--max-conns-per-ip", "0"}

// waitReady starts a relay on db and times how long it takes to answer
// /healthz with 200 from nothing: open the store, listen, serve. It gives
// up after a minute.
func (b *bench) waitReady(ctx context.Context, db string) (Server, time.Duration, error) {
	start := time.Now()
	r, err := b.relays.Start(ctx, b.relayArgs(db), b.stderr)
	if err != nil {
		return nil, 0, err
	}
	t := &target{name: "relay", base: r.URL(), hc: &http.Client{Transport: &http.Transport{Proxy: nil}}}
	defer t.close()
	for {
		_, err := t.call(ctx, http.MethodGet, "/healthz", "", nil, http.StatusOK)
		if err == nil {
			return r, time.Since(start), nil
		}
		if ctx.Err() != nil || time.Since(start) > time.Minute {
			return nil, 0, errors.Join(err, r.Stop())
		}
	}
}
