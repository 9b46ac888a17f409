// What `c2cvia bench` (internal/bench, which cannot import this package)
// takes from the relay: serve's own start-up path for its in-process
// relays, serve's front for its direct baselines, and the one store write
// it needs, a backlog queued in bulk.

package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/c2cvia/c2cvia/internal/bench"
	"github.com/jonboulle/clockwork"
)

// benchRelays starts the bench's relays as serve starts its own: the same
// flags (parseServeConfig), the same start-up (startRelay).
func benchRelays() bench.Relays {
	return bench.Relays{Start: benchStart, Front: benchServeFront, Backlog: queueBacklog}
}

// benchStart is `c2cvia serve args...` in this process, without the
// environment; its listening line is not printed.
func benchStart(ctx context.Context, args []string, stderr io.Writer) (bench.Server, error) {
	cfg, err := parseServeConfig(args)
	if err != nil {
		return nil, err
	}
	r, err := startRelay(ctx, cfg, clockwork.NewRealClock(), io.Discard, stderr)
	if err != nil {
		return nil, err
	}
	return relayServer{r}, nil
}

// relayServer is a relay as the bench sees it.
type relayServer struct{ *relay }

func (r relayServer) URL() string { return r.url() }
func (r relayServer) Stop() error { return r.stop() }

// benchServeFront serves h behind serve's front for args (frontend: the
// listener, the http.Server's limits, the body deadline), with no store.
func benchServeFront(args []string, h http.Handler, stderr io.Writer) (bench.Server, error) {
	cfg, err := parseServeConfig(args)
	if err != nil {
		return nil, err
	}
	front, _, err := bindFront(cfg, stderr)
	if err != nil {
		return nil, err
	}
	return &frontServer{front: front, failed: front.serve(h)}, nil
}

// frontServer is a handler behind serve's front, as the bench sees it.
type frontServer struct {
	front  *frontend
	failed <-chan error
}

func (f *frontServer) URL() string { return f.front.url() }

// Stop shuts the front down as relay.stop does (10 s for the calls in
// flight) and waits for its listener to stop serving.
func (f *frontServer) Stop() error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := f.front.shutdown(ctx)
	if served := <-f.failed; !errors.Is(served, http.ErrServerClosed) {
		err = errors.Join(err, served)
	}
	return err
}

// queueBacklog makes the store at path with n requests queued in net, from
// one login, for the bench's backlog scenario. This is the one thing the
// bench does not do over HTTP: 1,000,000 pushreq calls would take minutes
// before the measurement starts, where one bulk INSERT per 100,000 rows, in
// the store's own schema and writer, takes seconds.
func queueBacklog(ctx context.Context, path, sync, net string, n int, progress func(queued int)) (err error) {
	opts := defaultConfig().storeOptions()
	opts.Sync = sync
	st, err := openStore(ctx, path, opts)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := st.Close(); cerr != nil {
			err = errors.Join(err, fmt.Errorf("close store: %w", cerr))
		}
	}()
	_, tok, err := st.createToken(ctx, net, "")
	if err != nil {
		return err
	}
	// Random 128-bit rids, as pushreq makes them, so the rid index is as
	// scattered as a real one.
	const chunk = 100_000
	simReq := `{"simBody":null,"simEndpoint":"/items/7","simHeaders":{},"simMethod":"GET","simQueryParams":{"q":"bench"},"simRouteParams":{}}`
	for done := 0; done < n; done += chunk {
		rows := min(chunk, n-done)
		now := st.nowMS()
		err := st.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
				INSERT INTO requests (rid, net, token_hash, from_peer, status, sim_req, created_at, expires_at)
				SELECT lower(hex(randomblob(16))), ?, ?, ?, 'queued', ?, ?, ? FROM n`,
				rows, net, tok.Hash, tok.PeerID, simReq, now, now+time.Hour.Milliseconds())
			return err
		})
		if err != nil {
			return err
		}
		progress(done + rows)
	}
	return nil
}
