// The call record: what the relay keeps about one HTTP call while it runs,
// for the limits and the metrics. Middleware puts it in the request's
// context; handlers and the poller reach it from there.

package main

import (
	"context"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"
)

type call struct {
	start    time.Time
	remote   string     // the sender's "IP:port" (remoteAddr)
	client   netip.Addr // the client's address (clientAddr), read once per call
	clientOK bool
	lim      *limits
	parked   atomic.Int64 // ns spent parked in long polls, waiting for something to happen
	token    []byte       // hash of the token the call was charged to, once authenticated
	// charged: a handler has charged the call to a rate limit (limitIP
	// charges the address for a call that reached none).
	charged bool
	net     string // the net the call concerns, once known: for the access log
}

type callInContext struct{}

// withCall starts the call record for every request.
func withCall(lim *limits, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := &call{start: time.Now(), lim: lim}
		c.client, c.clientOK = clientAddr(r, lim.trusted)
		c.remote = remoteAddr(r, c.client, c.clientOK)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callInContext{}, c)))
	})
}

// callFrom returns the call record of ctx, or nil outside a relay call.
func callFrom(ctx context.Context) *call {
	c, _ := ctx.Value(callInContext{}).(*call)
	return c
}

// remoteAddr is the address r comes from, as "IP:port": the connection's
// peer, or behind a trusted proxy (--trust-proxy) the client address addr
// it forwards (clientAddr), with port 0 as the proxy does not tell it.
func remoteAddr(r *http.Request, addr netip.Addr, ok bool) string {
	if !ok {
		return r.RemoteAddr
	}
	if peer, err := netip.ParseAddrPort(r.RemoteAddr); err == nil && peer.Addr().Unmap() == addr {
		return netip.AddrPortFrom(addr, peer.Port()).String()
	}
	return netip.AddrPortFrom(addr, 0).String()
}

// callClient is the client address of r (clientAddr), as its call record
// read it once, or read now outside a relay call.
func callClient(r *http.Request, trusted []netip.Prefix) (netip.Addr, bool) {
	if c := callFrom(r.Context()); c != nil {
		return c.client, c.clientOK
	}
	return clientAddr(r, trusted)
}

// senderAddr is the "IP:port" the call r comes from (remoteAddr).
func senderAddr(r *http.Request) string {
	if c := callFrom(r.Context()); c != nil {
		return c.remote
	}
	return r.RemoteAddr
}

// chargeToken charges r to the SimClient t: the per-token rate limit, and
// from then on the token's long-poll slots. Every handler behind withToken
// gets it; a handler that authenticates a token another way calls it once.
func chargeToken(r *http.Request, t token) error {
	c := callFrom(r.Context())
	if c == nil {
		return nil
	}
	c.token, c.charged = t.Hash, true
	return c.lim.allowToken(t.Hash)
}

// chargeServer charges r to net's SimServer (--rate-server): its key was
// right. A call that claims a net is also charged to its address, since
// anyone may claim a new net.
func chargeServer(r *http.Request, k serverKey) error {
	c := callFrom(r.Context())
	if c == nil {
		return nil
	}
	if k.claim {
		if err := c.lim.allowAddress(r); err != nil {
			return err
		}
	}
	c.charged = true
	return c.lim.allowServer(k.net)
}

// chargeVia charges a gateway request for net: to the net (--rate-via),
// within its client address's share of it (--via-addr-share), when its
// SimServer is polling, for that is its owner's traffic; else to the client
// address, like any anonymous call.
func chargeVia(r *http.Request, net string) error {
	c := callFrom(r.Context())
	if c == nil {
		return nil
	}
	c.charged = true
	if c.lim.served != nil && c.lim.served(net) {
		return c.lim.allowVia(r, net)
	}
	return c.lim.allowAddress(r)
}

// chargingVia charges a gateway request (chargeVia) before fn serves it.
func chargingVia(fn func(http.ResponseWriter, *http.Request) error) func(http.ResponseWriter, *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		if t, ok := r.Context().Value(viaTargetKey{}).(viaTarget); ok { // withViaTarget checked the net
			if err := chargeVia(r, t.net); err != nil {
				return err
			}
		}
		return fn(w, r)
	}
}

// chargeAddress charges r to its client address after its credential was
// refused with failed: the call answers failed, or 429 once the address is
// over --rate-ip.
func chargeAddress(r *http.Request, failed error) error {
	c := callFrom(r.Context())
	if c == nil {
		return failed
	}
	c.charged = true
	if err := c.lim.allowAddress(r); err != nil {
		return err
	}
	return failed
}

// overhead is the time the call has spent in the relay, less the time it
// was parked in long polls.
func (c *call) overhead() time.Duration {
	return time.Since(c.start) - time.Duration(c.parked.Load())
}
