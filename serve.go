// The one start-up path. startRelay opens the store, builds the handler,
// listens and starts the janitor; serve runs it until its context ends, and
// the bench's in-process relay and the tests start theirs the same way.

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// relay is a relay running in this process.
type relay struct {
	cfg    config
	log    *slog.Logger
	store  *store
	srv    *server
	front  *frontend
	failed <-chan error // a listener that stopped serving

	unlock      func() error // releases the store's lock, after the store is closed
	bus         *pgBus       // the other nodes' wake-ups, on a PostgreSQL store; nil on SQLite
	stopJanitor context.CancelFunc
	janitor     sync.WaitGroup
	once        sync.Once
	stopErr     error
}

// startRelay starts a relay on cfg, which config.check has passed, reading
// every time from clk (the real clock, but in tests). It prints the
// listening line to stdout ("c2cvia listening on URL (store FILE)"; the
// tests and the crash soak read the URL from it) and logs to stderr. A bad
// certificate or a busy port fails here, before the store is opened or
// made, and nothing is served until the store is open.
func startRelay(ctx context.Context, cfg config, clk clockwork.Clock, stdout, stderr io.Writer) (*relay, error) {
	front, log, err := bindFront(cfg, stderr)
	if err != nil {
		return nil, err
	}
	unlock, err := lockStore(cfg.DB)
	if err != nil {
		front.close()
		return nil, err
	}
	opts := cfg.storeOptions()
	opts.Clock, opts.Owner = clk, true
	st, err := openStore(ctx, cfg.DB, opts)
	if err != nil {
		unlock()
		front.close()
		return nil, err
	}
	if mode, open := openToOthers(cfg.DB); open && !st.pg {
		log.Warn("the store can be read by other users, and it holds forwarded Authorization and Cookie headers: chmod 600 it",
			"db", cfg.DB, "mode", fmt.Sprintf("%04o", mode))
	}
	srv := newServer(log, st, cfg)
	var bus *pgBus
	if st.pg {
		if bus, err = startPGBus(ctx, log, cfg.DB, srv.poller.hub); err != nil {
			st.Close()
			unlock()
			front.close()
			return nil, fmt.Errorf("listen for the other nodes' wake-ups on %s: %w", redactURL(cfg.DB), err)
		}
	}
	if front.challenge != nil {
		fmt.Fprintf(stdout, "c2cvia answering ACME challenges and redirecting to HTTPS on http://%s\n", front.challengeLn.Addr())
	}
	where := ""
	if front.everyInterface() {
		where = "every interface; "
	}
	fmt.Fprintf(stdout, "c2cvia listening on %s (%sstore %s)\n", front.url(), where, redactURL(cfg.DB))
	log.Info("listening", "addr", front.mainLn.Addr().String(), "mode", front.mode(), "db", redactURL(cfg.DB), "max_conns", front.conns.total)

	r := &relay{cfg: cfg, log: log, store: st, srv: srv, front: front, unlock: unlock, bus: bus}
	jctx, stopJanitor := context.WithCancel(context.Background())
	r.stopJanitor = stopJanitor
	sweep := func() {
		srv.sweep()
		front.conns.report(log, time.Now())
	}
	r.janitor.Go(func() { runJanitor(jctx, log, st, cfg.JanitorEvery, sweep) })
	r.failed = front.serve(srv)
	return r, nil
}

// bindFront is the first step of every start-up: the logger on stderr, the
// certificates loaded or prepared, and the listeners bound.
func bindFront(cfg config, stderr io.Writer) (*frontend, *slog.Logger, error) {
	log := newLogger(stderr, cfg.LogFormat, cfg.LogLevel)
	lc := cfg.Listen
	lc.trusted = cfg.TrustProxy
	front, err := newFrontend(log, lc, cfg.DB)
	if err != nil {
		return nil, nil, err
	}
	if err := front.listen(cfg.Addr); err != nil {
		return nil, nil, err
	}
	return front, log, nil
}

// url is the relay's base URL: http://HOST:PORT or https://HOST:PORT.
func (r *relay) url() string { return r.front.url() }

// stop shuts the relay down as SIGTERM does: it answers the open long polls
// at once, stops accepting, lets the calls in flight finish (for up to
// 10 s), stops the janitor and closes the store, which checkpoints and
// removes its WAL. Later calls return the first one's result.
func (r *relay) stop() error {
	r.once.Do(func() {
		r.log.Info("shutting down")
		r.srv.shutdown()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := r.front.shutdown(ctx); err != nil {
			r.log.Warn("shutdown", "err", err)
		}
		r.stopJanitor()
		r.janitor.Wait()
		if r.bus != nil {
			r.bus.close()
		}
		err := r.store.Close()
		if err != nil {
			r.stopErr = fmt.Errorf("close store: %w", err)
		}
		// Only now: another relay may open the store once it is closed.
		r.stopErr = errors.Join(r.stopErr, r.unlock())
		if r.stopErr != nil {
			return
		}
		r.log.Info("stopped")
	})
	return r.stopErr
}

// serve runs the relay until ctx ends (SIGTERM, SIGINT), then stops it.
func serve(ctx context.Context, cfg config, stdout, stderr io.Writer) error {
	r, err := startRelay(ctx, cfg, clockwork.NewRealClock(), stdout, stderr)
	if err != nil {
		return err
	}
	select {
	case err := <-r.failed:
		return errors.Join(err, r.stop())
	case <-ctx.Done():
	}
	return r.stop()
}
