// What the relay logs for its operator: one line per call (the access
// log), a line when a net is claimed and when its SimServer comes and goes,
// and the HTTP server's own complaints, scanners' TLS handshakes at debug.

package main

import (
	"context"
	"log"
	"log/slog"
	"net/http"
	"net/netip"
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
// and client (the address --trust-proxy resolves).
func withAccessLog(log *slog.Logger, mux *http.ServeMux, trusted []netip.Prefix, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		cw := &countingWriter{statusWriter: statusWriter{ResponseWriter: w}}
		next.ServeHTTP(cw, r)
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
		if a, ok := callClient(r, trusted); ok {
			client = a.String()
		}
		log.LogAttrs(r.Context(), slog.LevelInfo, "call",
			slog.String("method", r.Method), slog.String("route", route), slog.Int("status", status),
			slog.Float64("ms", float64(time.Since(start).Microseconds())/1000), slog.Int64("bytes", cw.bytes),
			slog.String("net", net), slog.String("client", client))
	})
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
