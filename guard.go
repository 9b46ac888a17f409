// Guards of the connections against clients that hold them: caps on the
// connections open in all, per address and per IPv6 /48, a deadline on
// every write of a reply, and no keep-alive after a request whose framing
// could be read two ways.

package main

import (
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// connCaps are the caps on the connections the relay holds open, shared
// by its listeners: in all (total, below the process's open-file limit, so
// accept never fails for want of a descriptor), per client address (an
// IPv6 address by its /64, as in --rate-ip) and per IPv6 /48 (a site's
// prefix: one holder of a /48 has 65,536 /64s). A connection over a cap
// is closed as soon as it is accepted. The addresses of trusted proxies
// count in the total only: every caller behind them shares them.
// Connections from the host itself (127.0.0.1, ::1) may use
// loopbackReserve more than the total, so a monitor on the host reaches
// /healthz while the rest of the world holds every slot.
type connCaps struct {
	total, perAddr, perSite int // 0: no cap
	trusted                 []netip.Prefix

	mu     sync.Mutex
	open   int
	byAddr map[netip.Addr]int // address (v6: its /64's first address) -> connections open
	bySite map[netip.Addr]int // v6 /48's first address -> connections open

	refusedTotal, refusedAddr, refusedSite atomic.Int64 // connections closed at once, by cap

	reported   [3]int64  // the refusals as last logged (report)
	reportedAt time.Time // when
}

// loopbackReserve is how many connections from 127.0.0.1 and ::1 may be
// open past the total cap: 16, for a monitor and an operator's curl, and
// within the headroom defaultMaxConns leaves under the open-file limit.
const loopbackReserve = 16

var localhost4 = netip.AddrFrom4([4]byte{127, 0, 0, 1})

// newConnCaps returns the caps: total, per address and per /48 (0: none).
func newConnCaps(total, perAddr, perSite int, trusted []netip.Prefix) *connCaps {
	return &connCaps{total: total, perAddr: perAddr, perSite: perSite, trusted: trusted,
		byAddr: map[netip.Addr]int{}, bySite: map[netip.Addr]int{}}
}

// admit counts a connection from peer (ok false: an address that is not
// IP) and returns its release, or false when a cap is full.
func (k *connCaps) admit(peer netip.Addr, ok bool) (release func(), admitted bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	limit := k.total
	if ok && (peer == localhost4 || peer == netip.IPv6Loopback()) {
		limit += loopbackReserve
	}
	if k.total > 0 && k.open >= limit {
		k.refusedTotal.Add(1)
		return nil, false
	}
	capped := ok && !isTrusted(peer, k.trusted)
	var addr, site netip.Addr
	if capped {
		addr = addrKey(peer)
		if k.perAddr > 0 && k.byAddr[addr] >= k.perAddr {
			k.refusedAddr.Add(1)
			return nil, false
		}
		if peer.Is6() && k.perSite > 0 {
			site = netip.PrefixFrom(peer, 48).Masked().Addr()
			if k.bySite[site] >= k.perSite {
				k.refusedSite.Add(1)
				return nil, false
			}
		}
	}
	k.open++
	if capped {
		k.byAddr[addr]++
		if site.IsValid() {
			k.bySite[site]++
		}
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			k.mu.Lock()
			defer k.mu.Unlock()
			k.open--
			if capped {
				drop(k.byAddr, addr)
				if site.IsValid() {
					drop(k.bySite, site)
				}
			}
		})
	}, true
}

// drop counts one connection of key closed; the maps hold only keys with
// connections open.
func drop(m map[netip.Addr]int, key netip.Addr) {
	if m[key]--; m[key] <= 0 {
		delete(m, key)
	}
}

// openConns returns the connections open now.
func (k *connCaps) openConns() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.open
}

// report logs, at most once a minute (of now), how many connections the
// caps closed since the last line, if any: "connections refused" at warn,
// with the count per cap (total, per_ip, per_48) and the connections open.
// The janitor calls it.
func (k *connCaps) report(log *slog.Logger, now time.Time) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if now.Sub(k.reportedAt) < summaryEvery {
		return
	}
	counts := [3]int64{k.refusedTotal.Load(), k.refusedAddr.Load(), k.refusedSite.Load()}
	if counts == k.reported {
		return
	}
	log.Warn("connections refused", "total", counts[0]-k.reported[0], "per_ip", counts[1]-k.reported[1],
		"per_48", counts[2]-k.reported[2], "open", k.open, "max_conns", k.total)
	k.reported, k.reportedAt = counts, now
}

// listen wraps ln so that its connections count under the caps.
func (k *connCaps) listen(ln net.Listener) net.Listener { return &capListener{Listener: ln, caps: k} }

// capListener closes, as soon as they are accepted, the connections its
// caps refuse: nothing is read or answered, and the descriptor is back at
// once.
type capListener struct {
	net.Listener
	caps *connCaps
}

func (l *capListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		peer, ok := connPeer(c)
		release, admitted := l.caps.admit(peer, ok)
		if !admitted {
			c.Close()
			continue
		}
		return &cappedConn{Conn: c, release: release}, nil
	}
}

// connPeer is a connection's peer address, an IPv4-mapped one as IPv4.
func connPeer(c net.Conn) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

// cappedConn gives its slots back when it is closed, once.
type cappedConn struct {
	net.Conn
	release func()
}

func (c *cappedConn) Close() error {
	c.release()
	return c.Conn.Close()
}

// defaultMaxConns is the total cap when --max-conns is 0: the process's
// open-file limit (which Go raises to its hard limit at start) less a
// tenth of it, at least 128, for the store (three descriptors per SQLite
// connection, a handful of connections), the log, the ACME cache, the
// listeners and loopbackReserve; never under half the limit. 20,000
// descriptors give 18,000 connections. 0 where the limit cannot be read.
func defaultMaxConns() int {
	n := openFileLimit()
	if n <= 0 {
		return 0
	}
	return max(n-max(128, n/10), n/2)
}

// withWriteTimeout gives every write of a reply d to reach the client:
// a client that does not read has its connection closed when d runs out,
// and the handler's write fails, so a reply waiting for it holds its
// memory for at most d. The deadline is set afresh at each write (an event
// stream's writes are far apart), not over the whole response, which a
// long poll holds for up to --max-wait.
func withWriteTimeout(d time.Duration, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&deadlineWriter{ResponseWriter: w, rc: http.NewResponseController(w), d: d}, r)
	})
}

// deadlineWriter sets the connection's write deadline before the headers
// and each write and flush of a reply.
type deadlineWriter struct {
	http.ResponseWriter
	rc *http.ResponseController
	d  time.Duration
}

func (w *deadlineWriter) arm() { _ = w.rc.SetWriteDeadline(time.Now().Add(w.d)) }

func (w *deadlineWriter) WriteHeader(status int) {
	w.arm()
	w.ResponseWriter.WriteHeader(status)
}

func (w *deadlineWriter) Write(b []byte) (int, error) {
	w.arm()
	return w.ResponseWriter.Write(b)
}

func (w *deadlineWriter) Flush() {
	w.arm()
	_ = w.rc.Flush()
}

// FlushError lets http.ResponseController flush through the wrapper and see
// a failed flush.
func (w *deadlineWriter) FlushError() error {
	w.arm()
	return w.rc.Flush()
}

// Unwrap lets http.ResponseController reach the connection's own writer.
func (w *deadlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// withFramingGuard closes the connection after a request sent with
// Transfer-Encoding. One that also had a Content-Length could be read two
// ways (request smuggling, RFC 9112 6.3: the server must then close the
// connection); net/http drops the Content-Length before a handler sees
// the request, so every such request closes its connection. Clients of the
// relay send their bodies with a length; this costs a chunked sender one
// new connection per call.
func withFramingGuard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(r.TransferEncoding) > 0 {
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(w, r)
	})
}
