// The HTTP server around the routes: the handler adapter that decodes
// parameters and writes errors, CORS, JSON 404/405, and panic recovery.

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
)

// server is the relay's http.Handler.
type server struct {
	http.Handler
	poller   *poller
	presence *presence
	limits   *limits
	metrics  *metrics
	bodies   *bodyBudget // --max-inflight-body; nil: no limit
	logQuota *logQuota   // --access-log-errors; nil: no quota
	held     *heldRequests
}

// newServer builds the relay's handler. It does not listen.
func newServer(log *slog.Logger, st *store, cfg config) *server {
	lp := newPoller(newHub(st.clock), cfg.MaxWait, st.clock)
	lim := newLimits(cfg, st.now)
	lim.served = func(net string) bool { return st.served(net, servedWithin(cfg.MaxWait)) }
	bodies := newBodyBudget(cfg.MaxInflight, simEnvelope(cfg.MaxBody))
	held := newHeldRequests(st) // synchronous /via/ requests, while their callers wait
	met := newMetrics(st, lp, lim, bodies, held)
	pres := newPresence(log, st.clock)
	st.events.Store(&storeEvents{claimed: func(net string) { log.Info("net claimed", "net", net) }})
	mux := http.NewServeMux()
	addRoutes(mux, log, cfg, st, lp, met, pres, held)
	var h http.Handler = jsonMuxErrors(mux)
	h = lim.limitIP(h)
	h = withCORS(newCORSPolicy(cfg.CORSOrigin), h)
	h = withRecover(log, h)
	h = met.instrument(mux, h)
	var quota *logQuota
	if cfg.AccessLog {
		quota = newLogQuota(log, st.clock, cfg.AccessLogErrors)
		h = withAccessLog(log, mux, cfg.TrustProxy, quota, h)
	}
	h = withViaTarget(cfg.ViaHost, h) // before the mux sees a gateway path: metrics and the log name its route
	h = withBodyBudget(bodies, h)
	h = withCall(lim, h)
	return &server{Handler: h, poller: lp, presence: pres, limits: lim, metrics: met, bodies: bodies, logQuota: quota, held: held}
}

// shutdown answers the open long polls; http.Server.Shutdown alone would
// wait for them to time out.
func (s *server) shutdown() { s.poller.shutdown() }

// sweep is the janitor's round of the server's own bookkeeping: the
// SimServers gone, the access log lines suppressed, and the held gateway
// requests that ended.
func (s *server) sweep() {
	s.presence.sweep()
	s.logQuota.summarize()
	s.held.sweep()
}

// apiFunc is a handler that returns its failure for the adapter to write.
type apiFunc func(w http.ResponseWriter, r *http.Request, p *params) error

// apiAdapter turns an apiFunc into a handler: parameters in, errors out.
// allow names the route's methods for the Allow of a refused HEAD; none is
// "GET, POST".
func apiAdapter(log *slog.Logger, maxBody int64) func(fn apiFunc, allow ...string) http.Handler {
	return bodyAdapter(log, maxBody, false)
}

// octetsAdapter is apiAdapter for a route that also takes an
// application/octet-stream body (params.octets): pushpart.
func octetsAdapter(log *slog.Logger, maxBody int64) func(fn apiFunc, allow ...string) http.Handler {
	return bodyAdapter(log, maxBody, true)
}

func bodyAdapter(log *slog.Logger, maxBody int64, octets bool) func(fn apiFunc, allow ...string) http.Handler {
	return func(fn apiFunc, allow ...string) http.Handler {
		allowed := "GET, POST"
		if len(allow) > 0 {
			allowed = strings.Join(allow, ", ")
		}
		return errorAdapter(log, func(w http.ResponseWriter, r *http.Request) error {
			if r.Method == http.MethodHead {
				// The mux routes HEAD to GET patterns; a HEAD must not log in.
				w.Header().Set("Allow", allowed)
				return errMethod
			}
			p, release, err := decodeParams(w, r, maxBody, octets)
			defer release() // the body's bytes count until the call ends
			if err != nil {
				return err
			}
			return fn(w, r, p)
		})
	}
}

// errorAdapter turns a handler that returns its failure into one that
// writes it in the JSON error shape.
func errorAdapter(log *slog.Logger, fn func(w http.ResponseWriter, r *http.Request) error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		err := fn(w, r)
		if err == nil {
			return
		}
		if r.Context().Err() != nil && errors.Is(err, context.Canceled) {
			return // the client went away: nobody to answer
		}
		writeError(w, r, log, err)
	})
}

// tokenFunc is a handler for a SimClient authenticated by its token.
type tokenFunc = func(w http.ResponseWriter, r *http.Request, p *params, t token) error

// withToken authenticates a SimClient by its token and charges the call to
// it (chargeToken: rate limit and poll slots) before fn runs. It records the
// token as seen (GET /api/v1/peer/peers) when fn succeeds: a call that fails
// writes nothing.
func withToken(st *store, fn tokenFunc) apiFunc {
	return func(w http.ResponseWriter, r *http.Request, p *params) error {
		secret, err := p.credential("token")
		if err != nil {
			return err
		}
		if secret == "" {
			return chargeAddress(r, errMissingToken)
		}
		t, err := st.lookupToken(r.Context(), secret)
		if err != nil {
			return chargeAddress(r, err)
		}
		noteNet(r.Context(), t.Net)
		if err := chargeToken(r, t); err != nil {
			return err
		}
		if err := fn(w, r, p, t); err != nil {
			return err
		}
		st.touchToken(t)
		return nil
	}
}

// withSender is withToken for calls that act as a participant (send a
// request or a message): a gateway result token only reads its request.
func withSender(st *store, fn tokenFunc) apiFunc {
	return withToken(st, func(w http.ResponseWriter, r *http.Request, p *params, t token) error {
		if t.readOnly() {
			return errReadOnlyToken
		}
		return fn(w, r, p, t)
	})
}

// serverAuth reads a SimServer's net and key. Handlers check the key
// against the store only after the rest of their input is valid, and a first
// key claims its net only in the write of a call that succeeds.
// A call without a key is charged to its address (chargeAddress).
func serverAuth(r *http.Request, p *params) (net, key string, err error) {
	if net, err = p.netParam(); err != nil {
		return "", "", err
	}
	if key, err = p.credential("key"); err != nil {
		return "", "", err
	}
	if key == "" {
		return "", "", chargeAddress(r, errMissingKey)
	}
	return net, key, nil
}

// handleHealthz answers {"status":"ok"} while the store can be read and
// written, else 503 {"status":"unavailable","reason":"..."}. After a write
// failed for want of disk or a writable file, it tries a write of its own
// (the next commit clears the fault too), so a relay that an idle load
// balancer took out of rotation comes back once the disk has room.
// minDiskFree is the free space below which /healthz reports the store's
// disk as full: a commit may still find room in the WAL's own pages (so
// a probe write succeeds) while the next that grows a file fails.
const minDiskFree = 16 << 20

// handleHealthz answers 200 {"status":"ok"}, or 503 {"status":
// "unavailable","reason":...} when the store cannot be read, when its last
// commit failed for the file's sake and a write still fails, or when the
// disk that holds it has less than 16 MiB free (free measures it; ok false:
// unknown).
func handleHealthz(st *store, free func() (bytes int64, ok bool)) http.Handler {
	unavailable := func(w http.ResponseWriter, reason string) {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unavailable", "reason": reason})
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := st.r.PingContext(r.Context()); err != nil {
			unavailable(w, "the store cannot be read")
			return
		}
		if n, ok := free(); ok && n < minDiskFree {
			unavailable(w, fmt.Sprintf("the disk that holds the store is full (%d KiB free)", n>>10))
			return
		}
		if st.writeFault() != nil {
			if err := st.probeWrite(r.Context()); isWriteFault(err) {
				reason := errStoreUnwritable.Error()
				if errors.Is(err, errDiskFull) {
					reason = errDiskFull.Error()
				}
				unavailable(w, reason)
				return
			}
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
}

// jsonMuxErrors answers the mux's own 404 and 405 in the JSON error shape
// (the mux writes text). Allow is set by the mux.
func jsonMuxErrors(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, pattern := mux.Handler(r); pattern == "" {
			mux.ServeHTTP(&muxErrorWriter{ResponseWriter: w, r: r}, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

type muxErrorWriter struct {
	http.ResponseWriter
	r       *http.Request
	written bool
}

func (m *muxErrorWriter) WriteHeader(status int) {
	if m.written {
		return
	}
	m.written = true
	m.Header().Del("X-Content-Type-Options")
	switch status {
	case http.StatusMethodNotAllowed:
		writeError(m.ResponseWriter, m.r, nil, errMethod)
	case http.StatusNotFound:
		writeError(m.ResponseWriter, m.r, nil, errNoRoute)
	default: // a redirect to the canonical path
		m.ResponseWriter.WriteHeader(status)
	}
}

func (m *muxErrorWriter) Write(b []byte) (int, error) {
	if !m.written {
		m.WriteHeader(http.StatusOK)
	}
	return len(b), nil // the mux's text body is replaced
}

// corsMethods and corsHeaders are what browsers may send cross-origin.
const (
	corsMethods = "GET, POST, OPTIONS"
	corsHeaders = "Authorization, Content-Type, Last-Event-ID"
)

// corsPolicy is --cors-origin: the origins whose pages may call the relay.
type corsPolicy struct {
	any     bool     // "*"
	allowed []string // else these origins
}

// newCORSPolicy reads origin: "*" or a comma-separated list of origins.
func newCORSPolicy(origin string) corsPolicy {
	var p corsPolicy
	for _, o := range strings.Split(origin, ",") {
		if o = strings.TrimSpace(o); o != "" {
			p.allowed = append(p.allowed, o)
		}
	}
	p.any = len(p.allowed) == 0 || slices.Contains(p.allowed, "*")
	return p
}

// allowOrigin sets Access-Control-Allow-Origin for r's Origin: "*", or
// the origin when it is allowed, with Vary: Origin whenever it is not "*".
func (p corsPolicy) allowOrigin(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	if p.any {
		h.Set("Access-Control-Allow-Origin", "*")
	} else {
		h.Add("Vary", "Origin")
		if o := r.Header.Get("Origin"); slices.Contains(p.allowed, o) {
			h.Set("Access-Control-Allow-Origin", o)
		}
	}
	h.Set("Access-Control-Expose-Headers", "Retry-After, Location, Allow")
}

// preflight answers a gateway preflight for whatever method and headers it
// asks: the SimServer decides the rest by its answers.
func (p corsPolicy) preflight(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Access-Control-Allow-Methods", r.Header.Get("Access-Control-Request-Method"))
	if hdrs := r.Header.Get("Access-Control-Request-Headers"); hdrs != "" {
		h.Set("Access-Control-Allow-Headers", hdrs)
	}
	h.Set("Access-Control-Max-Age", "86400")
	w.WriteHeader(http.StatusNoContent)
}

// isPreflight reports whether r is a browser's CORS preflight.
func isPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Access-Control-Request-Method") != ""
}

// withCORS lets browser participants of any allowed origin call the relay:
// every reply allows the origin, and every OPTIONS request to the API is a
// preflight answered here with 204. The gateway answers its own preflights
// (gateway.handleVia): there one may go to the SimServer, and any other
// OPTIONS does, like every method.
func withCORS(p corsPolicy, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.allowOrigin(w, r)
		if isGateway(r) {
			next.ServeHTTP(w, r)
			return
		}
		if r.Method == http.MethodOptions {
			h := w.Header()
			h.Set("Access-Control-Allow-Methods", corsMethods)
			h.Set("Access-Control-Allow-Headers", corsHeaders)
			h.Set("Access-Control-Max-Age", "86400") // a day: fewer preflights
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// withRecover answers a panicking handler with a JSON 500 and logs it.
func withRecover(log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.Error("handler panic", "method", r.Method, "path", r.URL.Path, "panic", v)
				writeError(w, r, log, errInternal)
			}
		}()
		next.ServeHTTP(w, r)
	})
}
