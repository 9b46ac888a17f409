// The call record: what the relay keeps about one HTTP call while it runs,
// for the limits and the metrics. Middleware puts it in the request's
// context; handlers and the poller reach it from there.

package main

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"
)

type call struct {
	start  time.Time
	lim    *limits
	parked atomic.Int64 // ns spent parked in long polls, waiting for something to happen
	token  []byte       // hash of the token the call was charged to, once authenticated
	net    string       // the net the call concerns, once known: for the access log
}

type callInContext struct{}

// withCall starts the call record for every request.
func withCall(lim *limits, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := &call{start: time.Now(), lim: lim}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callInContext{}, c)))
	})
}

// callFrom returns the call record of ctx, or nil outside a relay call.
func callFrom(ctx context.Context) *call {
	c, _ := ctx.Value(callInContext{}).(*call)
	return c
}

// chargeToken charges r to the SimClient t: the per-token rate limit, and
// from then on the token's long-poll slots. Every handler behind withToken
// gets it; a handler that authenticates a token another way calls it once.
func chargeToken(r *http.Request, t token) error {
	c := callFrom(r.Context())
	if c == nil {
		return nil
	}
	c.token = t.Hash
	return c.lim.allowToken(t.Hash)
}

// overhead is the time the call has spent in the relay, less the time it
// was parked in long polls.
func (c *call) overhead() time.Duration {
	return time.Since(c.start) - time.Duration(c.parked.Load())
}
