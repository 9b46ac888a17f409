// Prometheus metrics at GET /metrics, on a registry the server owns: HTTP
// calls by route and status, long polls open, requests by status, how long
// an exchange waits for a SimServer, the relay's own time per call, and the
// store's group commits. Labels are bounded: a route pattern, a status, a
// kind; never a net, token, peer or rid.

package main

import (
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

type metrics struct {
	reg       *prometheus.Registry
	requests  *prometheus.CounterVec   // route, code
	overhead  *prometheus.HistogramVec // route
	queueWait prometheus.Histogram
	server    prometheus.Histogram
	commit    prometheus.Histogram
	batch     prometheus.Histogram
	handOuts  *handOuts
}

// Buckets. Relay time and commits: 100 µs to about 1.6 s. An exchange's
// waits: 10 ms to the default --req-ttl of 5 min.
var (
	fastBuckets     = prometheus.ExponentialBuckets(0.0001, 2, 15)
	exchangeBuckets = []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}
)

// newMetrics registers every metric of the relay, and the Go and process
// collectors, on a new registry, and hooks the store's observers.
func newMetrics(st *store, lp *poller, lim *limits, bodies *bodyBudget, held *heldRequests) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "c2cvia_http_requests_total",
			Help: "HTTP calls answered, by route (the mux pattern, \"unmatched\" or \"preflight\") and status code (499: the client went away).",
		}, []string{"route", "code"}),
		overhead: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "c2cvia_relay_overhead_seconds",
			Help:    "Time a call spends in the relay, less the time it is parked in a long poll waiting for something to happen. An exchange's relay overhead is the sum over its calls.",
			Buckets: fastBuckets,
		}, []string{"route"}),
		queueWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "c2cvia_exchange_queue_wait_seconds",
			Help:    "Time from a request's pushreq to its first hand-out to a SimServer.",
			Buckets: exchangeBuckets,
		}),
		server: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "c2cvia_exchange_server_seconds",
			Help:    "Time from a request's first hand-out to the pushres that answers it, redeliveries included. Queue wait plus server time is the exchange's wait for a SimServer.",
			Buckets: exchangeBuckets,
		}),
		commit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "c2cvia_store_commit_seconds",
			Help:    "Time of one group commit, from the start of its transaction to its commit.",
			Buckets: fastBuckets,
		}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "c2cvia_store_commit_writes",
			Help:    "Writes in one group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 9), // 1 to maxBatch (256)
		}),
		handOuts: newHandOuts(st.opts.ReqTTL),
	}
	v := buildVersion()
	buildInfo := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "c2cvia_build_info",
		Help:        "Always 1; the labels say which build runs: module version, VCS revision (\"\" when not stamped) and Go version.",
		ConstLabels: prometheus.Labels{"version": v.Version, "revision": v.Revision, "goversion": v.GoVersion},
	})
	buildInfo.Set(1)
	m.reg.MustRegister(
		buildInfo,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.requests, m.overhead, m.queueWait, m.server, m.commit, m.batch,
		&stateCollector{st: st, lp: lp, lim: lim, bodies: bodies, held: held},
	)
	st.hooks.Store(&storeHooks{
		committed: func(took time.Duration, writes int) {
			m.commit.Observe(took.Seconds())
			m.batch.Observe(float64(writes))
		},
		handedOut: func(rid string, createdMS, nowMS int64) {
			m.queueWait.Observe(msSeconds(nowMS - createdMS))
			m.handOuts.add(rid, nowMS)
		},
		answered: func(rid string, nowMS int64) {
			if at, ok := m.handOuts.take(rid); ok {
				m.server.Observe(msSeconds(nowMS - at))
			}
		},
	})
	return m
}

func msSeconds(ms int64) float64 { return float64(max(ms, 0)) / 1000 }

// handler serves the registry in the Prometheus text format.
func (m *metrics) handler(log *slog.Logger) http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelError),
		Registry: m.reg,
	})
}

// instrument counts every call by route and status and observes its relay
// overhead. It runs outside everything but withCall, so it sees the 429s
// of the limits, the preflights and the recovered panics too.
func (m *metrics) instrument(mux *http.ServeMux, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if v := recover(); v != nil { // a reply cut short: counted, then the panic goes on
				m.count(mux, r, sw)
				panic(v)
			}
		}()
		next.ServeHTTP(sw, r)
		m.count(mux, r, sw)
	})
}

// count records one call of instrument.
func (m *metrics) count(mux *http.ServeMux, r *http.Request, sw *statusWriter) {
	route := r.Pattern // set by the mux on this request
	if route == "" {
		route = routeOf(mux, r)
	}
	code := sw.status
	if code == 0 {
		code = http.StatusOK // what net/http sends for a handler that wrote nothing
		if r.Context().Err() != nil {
			code = 499 // nothing was sent: the client went away
		}
	}
	m.requests.WithLabelValues(route, strconv.Itoa(code)).Inc()
	if c := callFrom(r.Context()); c != nil && route != "unmatched" && route != "preflight" {
		m.overhead.WithLabelValues(route).Observe(c.overhead().Seconds())
	}
}

// routeOf names a call that did not reach a route: a preflight, a call
// refused before the mux (named by the route it was for), or none.
func routeOf(mux *http.ServeMux, r *http.Request) string {
	if r.Method == http.MethodOptions {
		return "preflight"
	}
	if _, pattern := mux.Handler(r); pattern != "" {
		return pattern
	}
	return "unmatched"
}

// statusWriter remembers the status of a response. Unwrap and Flush keep
// http.ResponseController and streaming working through it.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	if s.status == 0 && code >= 200 {
		s.status = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusWriter) Flush() {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	_ = http.NewResponseController(s.ResponseWriter).Flush()
}

func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// maxHandOuts bounds the hand-out times kept: 100,000 take about 10 MB.
// Past it, or for a request handed out before a restart, the server time
// of the exchange is not observed.
const maxHandOuts = 100_000

// handOuts remember when each request out with SimServers was first handed
// out, until it is answered or can no longer be.
type handOuts struct {
	mu    sync.Mutex
	at    map[string]int64 // rid -> first hand-out, ms
	ttl   int64            // ms: --req-ttl; a hand-out older than that cannot be answered any more
	swept int64
}

func newHandOuts(reqTTL time.Duration) *handOuts {
	return &handOuts{at: map[string]int64{}, ttl: reqTTL.Milliseconds()}
}

func (h *handOuts) add(rid string, nowMS int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.at) >= maxHandOuts && nowMS-h.swept >= 1000 { // at most one sweep a second
		h.swept = nowMS
		for r, at := range h.at {
			if at < nowMS-h.ttl {
				delete(h.at, r)
			}
		}
	}
	if len(h.at) < maxHandOuts {
		h.at[rid] = nowMS
	}
}

func (h *handOuts) take(rid string) (int64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	at, ok := h.at[rid]
	delete(h.at, rid)
	return at, ok
}

// stateCollector reads, at each scrape, state that others keep: requests by
// status (the store's in-memory counts: no query, whatever the store's
// size), long polls open by kind, and the limits' refusals.
type stateCollector struct {
	st     *store
	lp     *poller
	lim    *limits
	bodies *bodyBudget // nil: no --max-inflight-body
	held   *heldRequests
}

var (
	descRequests = prometheus.NewDesc("c2cvia_requests",
		"Requests in the store by stored status; one past its TTL counts as queued or delivered until the janitor writes it down.",
		[]string{"status"}, nil)
	descPolls = prometheus.NewDesc("c2cvia_long_polls_open",
		"Long polls in progress, by kind.", []string{"kind"}, nil)
	descRefusals = prometheus.NewDesc("c2cvia_limit_refusals_total",
		"Calls refused with 429, by limit: rate_ip, rate_token, rate_server, rate_via, rate_via_addr, polls_per_token, queue, peers, subscriptions; and with 503 server_busy: inflight_body.", []string{"limit"}, nil)
	descLimiterBuckets = prometheus.NewDesc("c2cvia_rate_limiter_buckets",
		"Token buckets held, by limiter (ip, token, server, via, via_addr).", []string{"limiter"}, nil)
	descMsgCacheBytes = prometheus.NewDesc("c2cvia_msg_cache_bytes",
		"Bytes of recent peer messages held in memory, all nets together; at most --msg-cache.", nil, nil)
	descHeld = prometheus.NewDesc("c2cvia_gateway_held_requests",
		"Synchronous gateway requests held in memory while their callers wait (queued or leased); not in c2cvia_requests, which counts the store's.", nil, nil)
	descMsgCacheEvictions = prometheus.NewDesc("c2cvia_msg_cache_evictions_total",
		"Nets whose recent peer messages were forgotten to keep the cache within --msg-cache.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRequests
	ch <- descPolls
	ch <- descRefusals
	ch <- descLimiterBuckets
	ch <- descMsgCacheBytes
	ch <- descMsgCacheEvictions
	ch <- descHeld
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	for status, n := range c.st.counts.statusTotals() {
		ch <- prometheus.MustNewConstMetric(descRequests, prometheus.GaugeValue, float64(n), status)
	}
	c.lp.openByKind(func(k pollKind, n int64) {
		ch <- prometheus.MustNewConstMetric(descPolls, prometheus.GaugeValue, float64(n), string(k))
	})
	for limit, n := range map[string]int64{
		"rate_ip":         c.lim.ipLimited.Load(),
		"rate_token":      c.lim.tokenLimited.Load(),
		"rate_server":     c.lim.serverLimited.Load(),
		"rate_via":        c.lim.viaLimited.Load(),
		"rate_via_addr":   c.lim.viaAddrLimited.Load(),
		"polls_per_token": c.lim.pollsRefused.Load(),
		"queue":           c.st.counts.queueFull.Load(),
		"peers":           c.st.counts.netFull.Load(),
		"subscriptions":   c.st.subsRefused.Load(),
		"inflight_body":   c.bodies.refusals(),
	} {
		ch <- prometheus.MustNewConstMetric(descRefusals, prometheus.CounterValue, float64(n), limit)
	}
	ch <- prometheus.MustNewConstMetric(descLimiterBuckets, prometheus.GaugeValue, float64(c.lim.ip.size()), "ip")
	ch <- prometheus.MustNewConstMetric(descLimiterBuckets, prometheus.GaugeValue, float64(c.lim.tok.size()), "token")
	ch <- prometheus.MustNewConstMetric(descLimiterBuckets, prometheus.GaugeValue, float64(c.lim.server.size()), "server")
	ch <- prometheus.MustNewConstMetric(descLimiterBuckets, prometheus.GaugeValue, float64(c.lim.via.size()), "via")
	ch <- prometheus.MustNewConstMetric(descLimiterBuckets, prometheus.GaugeValue, float64(c.lim.viaAddr.size()), "via_addr")
	ch <- prometheus.MustNewConstMetric(descMsgCacheBytes, prometheus.GaugeValue, float64(c.st.msgs.size()))
	ch <- prometheus.MustNewConstMetric(descMsgCacheEvictions, prometheus.CounterValue, float64(c.st.msgs.evictions.Load()))
	ch <- prometheus.MustNewConstMetric(descHeld, prometheus.GaugeValue, float64(c.held.held.Load()))
}
