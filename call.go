// The call record: what the relay keeps about one HTTP call while it runs,
// for the metrics. Middleware puts it in the request's context; handlers and
// the poller reach it from there.

package main

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"
)

type call struct {
	start  time.Time
	parked atomic.Int64 // ns spent parked in long polls, waiting for something to happen
}

type callKey struct{}

// withCall starts the call record for every request.
func withCall(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := &call{start: time.Now()}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callKey{}, c)))
	})
}

// callFrom returns the call record of ctx, or nil outside a relay call.
func callFrom(ctx context.Context) *call {
	c, _ := ctx.Value(callKey{}).(*call)
	return c
}

// overhead is the time the call has spent in the relay, less the time it
// was parked in long polls.
func (c *call) overhead() time.Duration {
	return time.Since(c.start) - time.Duration(c.parked.Load())
}
