// Rate limits: calls per second per client address, per token and per net
// (token buckets), long polls open per token, the client address behind a
// trusted proxy. The per-net quotas (--max-queue, --max-peers) are counted
// by the store, in counts.go.
//
// Who pays for a call: a SimServer's call with its net's key is charged to
// the net (--rate-server), a SimClient's call with a valid token to the
// token (--rate-token), a gateway request to a net whose SimServer is
// polling to that net (--rate-via), after its client address's share of
// the net's bucket (--via-addr-share); everything else (logins, claims of a
// new net, gateway requests to a net nobody serves, calls with a missing or
// wrong credential, unknown routes) to the client address (--rate-ip). So a
// SimServer is never throttled by the callers it shares an address with.

package main

import (
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// limits are the server's per-address and per-token limits.
type limits struct {
	now         func() time.Time // the store's clock: tests move it to refill buckets
	ip, tok     *bucketLimiter   // nil: no limit
	server, via *bucketLimiter   // per net; nil: no limit
	viaAddr     *bucketLimiter   // per net and client address: its share of via; nil: no share
	trusted     []netip.Prefix   // --trust-proxy
	maxPolls    int              // per token; 0: no limit

	// served reports whether net has a SimServer polling: its gateway
	// requests are then its owner's traffic (--rate-via). nil: never.
	served func(net string) bool

	mu    sync.Mutex
	polls map[string]int // token hash -> long polls open

	ipLimited, tokenLimited, serverLimited, viaLimited, viaAddrLimited, pollsRefused atomic.Int64 // refusals, for the metrics
}

func newLimits(cfg config, now func() time.Time) *limits {
	return &limits{
		now:      now,
		ip:       newBucketLimiter(cfg.RateIP, cfg.RateIPBurst, maxBuckets),
		tok:      newBucketLimiter(cfg.RateToken, cfg.RateTokenBurst, maxBuckets),
		server:   newBucketLimiter(cfg.RateServer, cfg.RateServerBurst, maxBuckets),
		via:      newBucketLimiter(cfg.RateVia, cfg.RateViaBurst, maxBuckets),
		viaAddr:  newShareLimiter(cfg.RateVia, cfg.RateViaBurst, cfg.ViaAddrShare),
		trusted:  cfg.TrustProxy,
		maxPolls: cfg.MaxPollsPerToken,
		polls:    map[string]int{},
	}
}

// limitIP answers 429 to a client address over --rate-ip. /healthz and
// /metrics are not limited: a monitor must always get through. It runs
// inside withCORS, so a browser can read the 429, and CORS preflights are
// answered before it, so they cost nothing.
//
// A call that may carry a credential (a token, a net's key) or go to a
// served net (the gateway) passes here unchecked: its handler charges it
// once it knows to whom (chargeToken, chargeServer, chargeVia,
// chargeAddress). If the handler charged nobody (it failed before that),
// the call is charged to the address when it ends, so it still counts.
func (l *limits) limitIP(next http.Handler) http.Handler {
	if l.ip == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/healthz" || r.URL.Path == "/metrics":
		case chargedByHandler(r.URL.Path):
			next.ServeHTTP(w, r)
			if c := callFrom(r.Context()); c != nil && !c.charged {
				l.ip.reserve(clientBucket(r, l.trusted), l.now())
			}
			return
		default:
			if err := l.allowAddress(r); err != nil {
				writeError(w, r, nil, err)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// chargedByHandler reports whether calls to path are charged by their
// handler: every token or key route, and the gateway. Logins are not.
func chargedByHandler(path string) bool {
	switch {
	case path == "/api/v1/client/login":
		return false
	case strings.HasPrefix(path, "/api/v1/client/"), strings.HasPrefix(path, "/api/v1/server/"),
		strings.HasPrefix(path, "/api/v1/peer/"), strings.HasPrefix(path, "/via/"):
		return true
	}
	return false
}

// allowAddress charges one call to r's client address under --rate-ip.
func (l *limits) allowAddress(r *http.Request) error {
	if l.ip == nil {
		return nil
	}
	if wait := l.ip.reserve(clientBucket(r, l.trusted), l.now()); wait > 0 {
		l.ipLimited.Add(1)
		return errRateLimited(wait)
	}
	return nil
}

// allowToken charges one call to the token with hash h under --rate-token.
func (l *limits) allowToken(h []byte) error {
	return allow(l.tok, string(h), l.now(), &l.tokenLimited)
}

// allowServer charges one call of net's SimServer under --rate-server.
func (l *limits) allowServer(net string) error {
	return allow(l.server, net, l.now(), &l.serverLimited)
}

// allowVia charges one gateway request r to net under --rate-via, after
// its client address's share of it (--via-addr-share): a call over its
// address's share is refused without taking from the net's bucket, so one
// address cannot empty it for the others.
func (l *limits) allowVia(r *http.Request, net string) error {
	if l.viaAddr != nil {
		if err := allow(l.viaAddr, net+" "+clientBucket(r, l.trusted), l.now(), &l.viaAddrLimited); err != nil {
			return err
		}
	}
	return allow(l.via, net, l.now(), &l.viaLimited)
}

// newShareLimiter is the limiter of one client address's share of each
// net's --rate-via: share of its rate and of its burst (at least 1); nil
// when the net's has no limit or the share is all of it (0 or 1).
func newShareLimiter(perSecond float64, burst int, share float64) *bucketLimiter {
	if share <= 0 || share >= 1 {
		return nil
	}
	return newBucketLimiter(perSecond*share, max(1, int(share*float64(burst))), maxBuckets)
}

// allow takes one call from the bucket who of k (nil: no limit), counting
// a refusal in refused.
func allow(k *bucketLimiter, who string, now time.Time, refused *atomic.Int64) error {
	if k == nil {
		return nil
	}
	if wait := k.reserve(who, now); wait > 0 {
		refused.Add(1)
		return errRateLimited(wait)
	}
	return nil
}

// takePollSlot takes one of the --max-polls-per-token slots of the token
// with hash h (nil: a call without a token, no slot) and returns its release.
func (l *limits) takePollSlot(h []byte) (release func(), err error) {
	if h == nil || l.maxPolls <= 0 {
		return func() {}, nil
	}
	tok := string(h)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.polls[tok] >= l.maxPolls {
		l.pollsRefused.Add(1)
		return nil, errTooManyPolls
	}
	l.polls[tok]++
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.polls[tok]--; l.polls[tok] <= 0 {
				delete(l.polls, tok) // the map holds only tokens with open polls
			}
		})
	}, nil
}

// maxBuckets bounds each limiter's map: 100,000 buckets take about
// 20 MB. Past it the idle ones are swept at once, and if none is idle an
// arbitrary one is dropped (that address or token starts again with a full
// bucket):
// memory stays bounded, at the price of some leniency under a flood of
// addresses.
const maxBuckets = 100_000

// sweepEvery is how often a limiter drops the buckets that are full again:
// such a bucket is the same as a new one, so dropping it changes nothing.
const sweepEvery = time.Minute

// bucketLimiter is a token bucket per client address or per token, each
// bucket named by a string.
type bucketLimiter struct {
	limit      rate.Limit
	burst      int
	maxBuckets int

	mu      sync.Mutex
	buckets map[string]*rate.Limiter
	swept   time.Time
}

// newBucketLimiter returns a limiter of perSecond calls with bursts of burst
// per bucket, or nil for no limit (perSecond 0).
func newBucketLimiter(perSecond float64, burst, maxBuckets int) *bucketLimiter {
	if perSecond <= 0 {
		return nil
	}
	return &bucketLimiter{limit: rate.Limit(perSecond), burst: burst, maxBuckets: maxBuckets, buckets: map[string]*rate.Limiter{}}
}

// reserve takes one call from the bucket named who at now, or returns how
// long until that bucket has one (and takes nothing).
func (k *bucketLimiter) reserve(who string, now time.Time) time.Duration {
	k.mu.Lock()
	defer k.mu.Unlock()
	if now.Sub(k.swept) >= sweepEvery || now.Before(k.swept) {
		k.sweep(now)
	}
	b := k.buckets[who]
	if b == nil {
		if len(k.buckets) >= k.maxBuckets {
			k.sweep(now)
		}
		for drop := range k.buckets {
			if len(k.buckets) < k.maxBuckets {
				break
			}
			delete(k.buckets, drop)
		}
		b = rate.NewLimiter(k.limit, k.burst)
		k.buckets[who] = b
	}
	r := b.ReserveN(now, 1)
	if !r.OK() { // burst < 1: serve flags refuse it
		return time.Second
	}
	if wait := r.DelayFrom(now); wait > 0 {
		r.CancelAt(now) // a refused call takes nothing from the bucket
		return wait
	}
	return 0
}

// sweep drops the buckets that are full again. Called with k.mu held.
func (k *bucketLimiter) sweep(now time.Time) {
	k.swept = now
	for who, b := range k.buckets {
		if b.TokensAt(now) >= float64(k.burst) {
			delete(k.buckets, who)
		}
	}
}

// size returns the number of buckets held.
func (k *bucketLimiter) size() int {
	if k == nil {
		return 0
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.buckets)
}

// clientBucket names the bucket a call is charged to under --rate-ip: its client
// address (clientAddr), an IPv6 address by its /64, the block one host
// usually holds.
func clientBucket(r *http.Request, trusted []netip.Prefix) string {
	a, ok := callClient(r, trusted)
	if !ok {
		return r.RemoteAddr
	}
	return addrKey(a).String()
}

// addrKey is the key of one client's address in per-address limits: an
// IPv4 address itself, an IPv6 address by its /64 (one site's, RFC 6177).
func addrKey(a netip.Addr) netip.Addr {
	if a.Is6() {
		return netip.PrefixFrom(a, 64).Masked().Addr()
	}
	return a
}

// clientAddr is the address a call comes from. Without trusted proxies, or
// when the connection does not come from one, it is the connection's peer
// and X-Forwarded-For is ignored: anyone can send that header.
//
// From a trusted proxy it is the right-most X-Forwarded-For address that
// is not itself trusted. Each proxy appends the address it got the call
// from, so reading from the right, the first untrusted address was written
// by a trusted proxy and is the first one a client could not forge; what
// stands left of it could be. If every address is trusted it is the
// left-most; at an entry that is not an address it is the trusted hop
// right of that entry.
func clientAddr(r *http.Request, trusted []netip.Prefix) (netip.Addr, bool) {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, false
	}
	addr := peer.Addr().Unmap()
	if !isTrusted(addr, trusted) {
		return addr, true
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		hop, ok := parseHop(hops[i])
		if !ok {
			return addr, true
		}
		if addr = hop; !isTrusted(addr, trusted) {
			break
		}
	}
	return addr, true
}

// parseHop reads one X-Forwarded-For entry: an address, with or without a
// port.
func parseHop(s string) (netip.Addr, bool) {
	s = strings.TrimSpace(s)
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	return netip.Addr{}, false
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
