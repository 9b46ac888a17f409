// What the relay logs for its operator: one line per call (the access
// log; calls answered with an error within a quota per address), a line
// when a net is claimed and when its SimServer comes and goes, and the
// HTTP server's own complaints, scanners' TLS handshakes at debug.

package main

import (
	"cmp"
	"context"
	"log"
	"log/slog"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// withAccessLog logs each call once it is answered, at info: "call" with
// method, route (the mux pattern, never the URL: a query may hold a token
// or a result token), status (499: the client went away first), ms (time in
// the relay, long-poll waits included), bytes (of the response body), net
// (when the call named one, through its parameters, its token or /via/)
// and client (the address --trust-proxy resolves). A call answered with an
// error is logged within quota (nil: every one), so that a client that
// is refused thousands of times a second cannot fill the disk with lines.
func withAccessLog(log *slog.Logger, mux *http.ServeMux, trusted []netip.Prefix, quota *logQuota, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		cw := &countingWriter{statusWriter: statusWriter{ResponseWriter: w}}
		cut := false // a reply cut short (http.ErrAbortHandler): logged, then the panic goes on
		defer func() {
			if v := recover(); v != nil {
				defer panic(v)
				cut = true
				logCall(log, mux, trusted, quota, r, cw, start, cut)
			}
		}()
		next.ServeHTTP(cw, r)
		logCall(log, mux, trusted, quota, r, cw, start, cut)
	})
}

// logCall writes withAccessLog's line for one call; cut: its reply was
// cut short after its status went out (a stream aborted or left by its
// caller).
func logCall(log *slog.Logger, mux *http.ServeMux, trusted []netip.Prefix, quota *logQuota, r *http.Request, cw *countingWriter, start time.Time, cut bool) {
	route := r.Pattern
	if route == "" {
		route = routeOf(mux, r)
	}
	status := cw.status
	if status == 0 {
		status = http.StatusOK
		if r.Context().Err() != nil {
			status = 499
		}
	}
	net := ""
	if c := callFrom(r.Context()); c != nil {
		net = c.net
	}
	if net == "" {
		net = gatewayNet(r)
	}
	client := r.RemoteAddr
	a, ok := callClient(r, trusted)
	if ok {
		client = a.String()
	}
	if quotaStatus(status) && !quota.allow(a, ok) {
		return
	}
	attrs := []slog.Attr{slog.String("method", r.Method), slog.String("route", route), slog.Int("status", status),
		slog.Float64("ms", float64(time.Since(start).Microseconds())/1000), slog.Int64("bytes", cw.bytes),
		slog.String("net", net), slog.String("client", client)}
	if cut {
		attrs = append(attrs, slog.Bool("cut", true))
	}
	log.LogAttrs(r.Context(), slog.LevelInfo, "call", attrs...)
}

// quotaStatus reports whether a call answered status is logged within the
// access log's quota: every error but 500, a relay fault, which is never
// hidden (and is logged in full apart).
func quotaStatus(status int) bool { return status >= 400 && status != http.StatusInternalServerError }

// logQuota bounds the access log's lines for calls answered with an
// error: perAddr lines per second of the relay's clock per client address
// (addrKey), and relayWide lines per second in all. The lines over it are
// counted per address, and summarize logs the counts once a minute:
// "access log lines suppressed" with client and lines.
type logQuota struct {
	log       *slog.Logger
	clock     clockwork.Clock
	perAddr   int
	relayWide int

	mu         sync.Mutex
	second     time.Time            // the second the counts below are of
	inSecond   int                  // lines logged in it, in all
	byAddr     map[netip.Addr]int   // lines logged in it per address
	suppressed map[netip.Addr]int64 // lines not logged since the last summary, per address
	others     int64                // ... of addresses past maxSuppressedAddrs
	summarized time.Time
}

// relayWideLines is the relay-wide quota as a multiple of the quota per
// address: 20, so that twenty addresses refused at full speed are logged
// in full, and a flood from a whole block of addresses adds at most
// 20 x --access-log-errors lines (about 200 bytes each) a second.
const relayWideLines = 20

// maxSuppressedAddrs bounds the addresses whose suppressed lines are
// counted one by one: 10,000 take about 1 MB; past it they are counted
// together.
const maxSuppressedAddrs = 10_000

// summaryEvery is how often the suppressed lines are summarized: a minute.
const summaryEvery = time.Minute

// summaryAddrs is how many addresses a summary names, the most suppressed
// first; the others share one line.
const summaryAddrs = 20

// newLogQuota returns a quota of perAddr lines a second per address, or
// nil for none (perAddr 0).
func newLogQuota(log *slog.Logger, clk clockwork.Clock, perAddr int) *logQuota {
	if perAddr <= 0 {
		return nil
	}
	return &logQuota{log: log, clock: clk, perAddr: perAddr, relayWide: perAddr * relayWideLines,
		byAddr: map[netip.Addr]int{}, suppressed: map[netip.Addr]int64{}, summarized: clk.Now()}
}

// allow reports whether a line for a call from a (ok false: an address
// that is not IP) is within the quota, and counts it either way.
func (q *logQuota) allow(a netip.Addr, ok bool) bool {
	if q == nil {
		return true
	}
	if ok {
		a = addrKey(a)
	}
	now := q.clock.Now().Truncate(time.Second)
	q.mu.Lock()
	defer q.mu.Unlock()
	if !now.Equal(q.second) {
		q.second, q.inSecond = now, 0
		clear(q.byAddr)
	}
	if q.byAddr[a] >= q.perAddr || q.inSecond >= q.relayWide {
		if _, known := q.suppressed[a]; known || len(q.suppressed) < maxSuppressedAddrs {
			q.suppressed[a]++
		} else {
			q.others++
		}
		return false
	}
	q.byAddr[a]++
	q.inSecond++
	return true
}

// summarize logs, at most once a minute, how many lines the quota kept out
// since the last summary: one line per address for the summaryAddrs most
// suppressed, one for the rest. The janitor calls it.
func (q *logQuota) summarize() {
	if q == nil {
		return
	}
	now := q.clock.Now()
	q.mu.Lock()
	if now.Sub(q.summarized) < summaryEvery || len(q.suppressed) == 0 && q.others == 0 {
		q.mu.Unlock()
		return
	}
	type count struct {
		addr netip.Addr
		n    int64
	}
	counts := make([]count, 0, len(q.suppressed))
	for a, n := range q.suppressed {
		counts = append(counts, count{a, n})
	}
	others, since := q.others, q.summarized
	q.suppressed, q.others, q.summarized = map[netip.Addr]int64{}, 0, now
	q.mu.Unlock()

	slices.SortFunc(counts, func(x, y count) int { return cmp.Compare(y.n, x.n) })
	for i, c := range counts {
		if i >= summaryAddrs {
			others += c.n
			continue
		}
		client := "unknown"
		if c.addr.IsValid() {
			client = c.addr.String()
		}
		q.log.Info("access log lines suppressed", "client", client, "lines", c.n,
			"since", since.UTC().Format(time.RFC3339))
	}
	if others > 0 {
		q.log.Info("access log lines suppressed", "client", "others", "lines", others,
			"since", since.UTC().Format(time.RFC3339))
	}
}

// gatewayNet is the net a /via/ call goes to (withViaTarget found it), or "".
func gatewayNet(r *http.Request) string {
	if t, ok := r.Context().Value(viaTargetKey{}).(viaTarget); ok {
		return t.net
	}
	return ""
}

// countingWriter is a statusWriter that also counts the body's bytes.
type countingWriter struct {
	statusWriter
	bytes int64
}

func (c *countingWriter) Write(b []byte) (int, error) {
	n, err := c.statusWriter.Write(b)
	c.bytes += int64(n)
	return n, err
}

func (c *countingWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// noteNet records the net a call concerns, for the access log.
func noteNet(ctx context.Context, net string) {
	if c := callFrom(ctx); c != nil {
		c.net = net
	}
}

// serverGoneAfter is how long a net has no SimServer poll, open or ended,
// before the log says its SimServer went away: a minute, twice the longest
// retry backoff of the SDKs (30 s), so a SimServer that is only retrying
// is not reported gone.
const serverGoneAfter = time.Minute

// presence tracks which nets have a SimServer polling, to log when one
// comes and when it goes.
type presence struct {
	log   *slog.Logger
	clock clockwork.Clock
	mu    sync.Mutex
	nets  map[string]*serverSeen
}

type serverSeen struct {
	open int       // pullreqsmart calls in progress
	last time.Time // when the last one ended
}

func newPresence(log *slog.Logger, clk clockwork.Clock) *presence {
	return &presence{log: log, clock: clk, nets: map[string]*serverSeen{}}
}

// polling records a SimServer's pullreqsmart on net until done is called.
// The first one after an absence logs "SimServer polling".
func (p *presence) polling(net string) (done func()) {
	p.mu.Lock()
	s := p.nets[net]
	if s == nil {
		s = &serverSeen{}
		p.nets[net] = s
		p.log.Info("SimServer polling", "net", net)
	}
	s.open++
	p.mu.Unlock()
	return func() {
		p.mu.Lock()
		s.open--
		s.last = p.clock.Now()
		p.mu.Unlock()
	}
}

// sweep logs "SimServer gone" for each net whose SimServer has had no poll
// open for serverGoneAfter, and forgets it. The janitor runs it, every
// --janitor-every.
func (p *presence) sweep() {
	now := p.clock.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	for net, s := range p.nets {
		if s.open == 0 && now.Sub(s.last) >= serverGoneAfter {
			delete(p.nets, net)
			p.log.Info("SimServer gone", "net", net, "last_poll_ended", s.last.UTC().Format(time.RFC3339))
		}
	}
}

// httpErrorLog is the http.Server's ErrorLog: its lines at warn, but a TLS
// handshake that failed (scanners, clients that distrust the certificate,
// plain HTTP on the HTTPS port) at debug: it is noise on any public address.
func httpErrorLog(l *slog.Logger) *log.Logger {
	return log.New(httpErrorWriter{l}, "", 0)
}

type httpErrorWriter struct{ log *slog.Logger }

func (h httpErrorWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	level := slog.LevelWarn
	if strings.HasPrefix(msg, "http: TLS handshake error") {
		level = slog.LevelDebug
	}
	h.log.Log(context.Background(), level, msg)
	return len(p), nil
}
