// What the bench's load goes to and the calls it makes: the relay run
// in-process as serve runs it, the direct baseline that answers the relay's
// recorded replies, the HTTP client of each, and the wire calls.

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// benchRelayConfig is serve's configuration with no flags given, on db.
// TestBenchRelayConfigIsServeDefaults keeps the two in step.
func benchRelayConfig(db, sync string) config {
	cfg := defaultConfig()
	cfg.Addr, cfg.DB, cfg.Sync = "127.0.0.1:0", db, sync
	// Every bench client calls from 127.0.0.1: per-address and per-token
	// rate limits would measure the limiter, not the relay. The idle
	// scenario logs 10,000+ peers into one net, past --max-peers.
	cfg.RateIP, cfg.RateToken, cfg.MaxPeers = 0, 0, 0
	return cfg
}

// benchRelay is a relay run in-process the way serve runs it: openStore,
// newServer, a listener, the janitor.
type benchRelay struct {
	url         string
	st          *store
	srv         *server
	hs          *http.Server
	served      chan error
	stopJanitor context.CancelFunc
	janitor     sync.WaitGroup
}

func startBenchRelay(ctx context.Context, log *slog.Logger, cfg config) (*benchRelay, error) {
	st, err := openStore(ctx, cfg.DB, cfg.storeOptions())
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		st.Close()
		return nil, err
	}
	r := &benchRelay{url: "http://" + ln.Addr().String(), st: st, srv: newServer(log, st, cfg), served: make(chan error, 1)}
	r.hs = newBenchHTTPServer(r.srv, log)
	jctx, stop := context.WithCancel(context.Background())
	r.stopJanitor = stop
	r.janitor.Go(func() { runJanitor(jctx, log, st, cfg.JanitorEvery) })
	go func() { r.served <- r.hs.Serve(ln) }()
	return r, nil
}

// newBenchHTTPServer is an http.Server set up as serve sets up the relay's;
// direct gets the same.
func newBenchHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}

// stop shuts the relay down as serve does on SIGTERM.
func (r *benchRelay) stop() error {
	r.srv.shutdown()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := r.hs.Shutdown(ctx)
	<-r.served
	r.stopJanitor()
	r.janitor.Wait()
	return errors.Join(err, r.st.Close())
}

// openPolls is the relay's gauge of long polls in progress.
func (r *benchRelay) openPolls() int64 { return r.srv.poller.open.Load() }

// waitReady times how long a relay on cfg.DB takes to answer /healthz with
// 200 from nothing: open the store, listen, serve.
func waitReady(ctx context.Context, log *slog.Logger, cfg config) (*benchRelay, time.Duration, error) {
	start := time.Now()
	r, err := startBenchRelay(ctx, log, cfg)
	if err != nil {
		return nil, 0, err
	}
	t := &benchTarget{name: "relay", base: r.url, hc: &http.Client{Transport: &http.Transport{Proxy: nil}}}
	defer t.close()
	for {
		_, err := t.call(ctx, http.MethodGet, "/healthz", "", nil, http.StatusOK)
		if err == nil {
			return r, time.Since(start), nil
		}
		if ctx.Err() != nil || time.Since(start) > time.Minute {
			return nil, 0, errors.Join(err, r.stop())
		}
	}
}

// directServer is the baseline: a plain net/http handler that reads the
// body and answers the reply the relay gave for the same method and path,
// bytes and headers. With hold, a pullsmart with a wait is held until its
// client goes away, like an idle long poll.
type directServer struct {
	url     string
	hs      *http.Server
	served  chan error
	replies map[string]benchReply
	hold    bool
	held    atomic.Int64 // pullsmarts held now
	closing chan struct{}
}

func startDirect(log *slog.Logger, replies map[string]benchReply, hold bool) (*directServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	d := &directServer{url: "http://" + ln.Addr().String(), replies: replies, hold: hold,
		served: make(chan error, 1), closing: make(chan struct{})}
	d.hs = newBenchHTTPServer(d, log)
	go func() { d.served <- d.hs.Serve(ln) }()
	return d, nil
}

func (d *directServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	rep, ok := d.replies[r.Method+" "+r.URL.Path]
	if !ok {
		http.Error(w, "direct: no recorded reply for "+r.Method+" "+r.URL.Path, http.StatusNotFound)
		return
	}
	if d.hold && strings.HasSuffix(r.URL.Path, "/pullsmart") && r.URL.Query().Get("wait") != "0" {
		d.held.Add(1)
		select {
		case <-r.Context().Done():
		case <-d.closing:
		}
		d.held.Add(-1)
	}
	h := w.Header()
	for k, v := range rep.header {
		h[k] = v
	}
	w.WriteHeader(rep.status)
	_, _ = w.Write(rep.body)
}

func (d *directServer) stop() {
	close(d.closing)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = d.hs.Shutdown(ctx)
	<-d.served
}

// benchReply is one reply as the load generator saw it.
type benchReply struct {
	status int
	header http.Header
	body   []byte
}

// benchTarget is where a load goes: the relay or direct. While rec is set,
// every reply is recorded by "METHOD /path", for direct to answer with.
type benchTarget struct {
	name string
	base string
	hc   *http.Client
	mu   sync.Mutex
	rec  map[string]benchReply
}

// target makes a client for base that keeps up to conns connections.
func (b *bench) target(name, base string, conns int) *benchTarget {
	return &benchTarget{name: name, base: base, hc: &http.Client{Transport: &http.Transport{
		Proxy:               nil, // a proxy would be measured too
		MaxIdleConns:        conns + 16,
		MaxIdleConnsPerHost: conns + 16,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}}}
}

func (t *benchTarget) close() { t.hc.CloseIdleConnections() }

// record starts recording replies; recorded returns them.
func (t *benchTarget) record() { t.mu.Lock(); t.rec = map[string]benchReply{}; t.mu.Unlock() }

func (t *benchTarget) recorded() map[string]benchReply {
	t.mu.Lock()
	defer t.mu.Unlock()
	rec := t.rec
	t.rec = nil
	return rec
}

// call sends one request (bearer in Authorization, a JSON body if given)
// and reads the whole reply; a status other than want is an error.
func (t *benchTarget) call(ctx context.Context, method, pathQuery, bearer string, body []byte, want int) (benchReply, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, t.base+pathQuery, rd)
	if err != nil {
		return benchReply{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := t.hc.Do(req)
	if err != nil {
		return benchReply{}, err
	}
	defer resp.Body.Close()
	rep := benchReply{status: resp.StatusCode, header: resp.Header}
	if rep.body, err = io.ReadAll(resp.Body); err != nil {
		return rep, err
	}
	path, _, _ := strings.Cut(pathQuery, "?")
	if rep.status != want {
		return rep, fmt.Errorf("%s: %s %s: %d %s", t.name, method, path, rep.status, bytes.TrimSpace(rep.body))
	}
	t.mu.Lock()
	if t.rec != nil {
		h := rep.header.Clone()
		h.Del("Date")
		h.Del("Content-Length")
		t.rec[method+" "+path] = benchReply{rep.status, h, rep.body}
	}
	t.mu.Unlock()
	return rep, nil
}

// logins logs n SimClients into net and returns their tokens.
func (b *bench) logins(ctx context.Context, t *benchTarget, net string, n int) ([]string, error) {
	tokens := make([]string, n)
	err := b.parallel(ctx, "logins", n, 16, func(ctx context.Context, i int) error {
		rep, err := t.call(ctx, http.MethodGet, "/api/v1/client/login?net="+url.QueryEscape(net), "", nil, http.StatusOK)
		if err != nil {
			return err
		}
		var v struct{ Token string }
		if err := json.Unmarshal(rep.body, &v); err != nil || v.Token == "" {
			return fmt.Errorf("%s: login: no token in %s", t.name, rep.body)
		}
		tokens[i] = v.Token
		return nil
	})
	return tokens, err
}

// The wire calls. Each checks the status and reads what the load needs.

func pushReq(ctx context.Context, t *benchTarget, token string) (string, error) {
	rep, err := t.call(ctx, http.MethodPost, "/api/v1/client/pushreq", token, []byte(benchPushReqBody), http.StatusCreated)
	if err != nil {
		return "", err
	}
	var v struct{ RID string }
	if err := json.Unmarshal(rep.body, &v); err != nil || v.RID == "" {
		return "", fmt.Errorf("%s: pushreq: no rid in %s", t.name, rep.body)
	}
	return v.RID, nil
}

// pullSmart waits for rid's response; a 202 (the wait ran out) waits again.
func pullSmart(ctx context.Context, t *benchTarget, token, rid string) error {
	for {
		rep, err := t.call(ctx, http.MethodGet, "/api/v1/client/pullsmart?wait=25&rid="+url.QueryEscape(rid), token, nil, http.StatusOK)
		if err == nil || rep.status != http.StatusAccepted {
			return err
		}
	}
}

func pullReqSmart(ctx context.Context, t *benchTarget, net, key string, wait, max int) ([]string, error) {
	q := url.Values{"net": {net}, "wait": {fmt.Sprint(wait)}, "max": {fmt.Sprint(max)}}
	rep, err := t.call(ctx, http.MethodGet, "/api/v1/server/pullreqsmart?"+q.Encode(), key, nil, http.StatusOK)
	if err != nil {
		return nil, err
	}
	var v struct {
		Requests []struct{ RID string }
	}
	if err := json.Unmarshal(rep.body, &v); err != nil {
		return nil, fmt.Errorf("%s: pullreqsmart: %w", t.name, err)
	}
	rids := make([]string, len(v.Requests))
	for i, r := range v.Requests {
		rids[i] = r.RID
	}
	return rids, nil
}

func pushRes(ctx context.Context, t *benchTarget, net, key, rid string) error {
	body := `{"net":` + jsonString(net) + `,"rid":` + jsonString(rid) + `,"sim_res":` + benchSimResBody + `}`
	_, err := t.call(ctx, http.MethodPost, "/api/v1/server/pushres", key, []byte(body), http.StatusOK)
	return err
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// storeCounters are the in-process store's write counters.
type storeCounters struct{ commits, writes, checkpoints int64 }

func readStoreCounters(st *store) storeCounters {
	return storeCounters{st.commits.Load(), st.writes.Load(), st.checkpoints.Load()}
}

func (c storeCounters) minus(o storeCounters) storeCounters {
	return storeCounters{c.commits - o.commits, c.writes - o.writes, c.checkpoints - o.checkpoints}
}
