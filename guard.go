// Guards of the connections against clients that hold them: a cap on the
// connections one address may have open, a deadline on every write of a
// reply, and no keep-alive after a request whose framing could be read two
// ways.

package main

import (
	"net"
	"net/http"
	"net/netip"
	"sync"
	"time"
)

// connCapListener closes, as soon as they are accepted, the connections of
// an address that already has max open (an IPv6 address counts by its
// /64, as in --rate-ip). The addresses of trusted proxies are not capped:
// every caller behind them shares them.
type connCapListener struct {
	net.Listener
	max     int
	trusted []netip.Prefix

	mu   sync.Mutex
	open map[netip.Addr]int // address (v6: its /64's first address) -> connections open

	refused func() // counts a refused connection; nil: none
}

// capConnsPerAddr wraps ln with connCapListener; max 0 returns ln as it is.
func capConnsPerAddr(ln net.Listener, max int, trusted []netip.Prefix) net.Listener {
	if max <= 0 {
		return ln
	}
	return &connCapListener{Listener: ln, max: max, trusted: trusted, open: map[netip.Addr]int{}}
}

func (l *connCapListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr, ok := connAddr(c)
		if !ok || isTrusted(addr, l.trusted) {
			return c, nil
		}
		l.mu.Lock()
		full := l.open[addr] >= l.max
		if !full {
			l.open[addr]++
		}
		l.mu.Unlock()
		if full {
			c.Close() // nothing read, nothing answered: the descriptor is back at once
			if l.refused != nil {
				l.refused()
			}
			continue
		}
		return &cappedConn{Conn: c, release: func() { l.release(addr) }}, nil
	}
}

func (l *connCapListener) release(addr netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[addr]--; l.open[addr] <= 0 {
		delete(l.open, addr)
	}
}

// connAddr is the address a connection counts under: its peer's, an IPv6
// one by its /64.
func connAddr(c net.Conn) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(c.RemoteAddr().String())
	if err != nil {
		return netip.Addr{}, false
	}
	return addrKey(ap.Addr().Unmap()), true
}

// cappedConn gives its address's slot back when it is closed, once.
type cappedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *cappedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
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
