// Serve against the relay: the options as they reach the relay, the
// concurrency limit, lease renewal, and stopping with handlers in flight.

package client_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/c2cvia/c2cvia/client"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestServeOptions: what Serve asks the relay for in its first poll, by
// default and with each option.
func TestServeOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name             string
		opts             []client.Option
		wait, max, lease float64
	}{
		{"defaults", nil, 25, 4, 30},
		{"WithWait, WithConcurrency and WithLease", []client.Option{client.WithWait(3 * time.Second),
			client.WithConcurrency(2), client.WithLease(1500 * time.Millisecond)}, 3, 2, 1.5},
		{"WithConcurrency over the relay's 100 a poll", []client.Option{client.WithConcurrency(500)}, 25, 100, 30},
		{"values out of range keep the defaults", []client.Option{client.WithWait(0), client.WithConcurrency(0),
			client.WithLease(-time.Second)}, 25, 1, 30},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			net := testNet(t)
			f := newFront(t)
			srv := serve(t, f.URL, net, testKey, http.NotFoundHandler(), tc.opts...)
			f.awaitOpen(t, pathPullReqSmart, 1)
			assert.Equal(t, map[string]any{"net": net, "wait": tc.wait, "max": tc.max, "lease": tc.lease},
				f.body(t, pathPullReqSmart, 0))
			assert.ErrorIs(t, srv.stop(), context.Canceled)
		})
	}
}

// TestWithHTTPClient: Serve and a Session call the relay through the
// client they are given.
func TestWithHTTPClient(t *testing.T) {
	t.Parallel()
	net := testNet(t)
	var calls atomic.Int64
	hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		calls.Add(1)
		return http.DefaultTransport.RoundTrip(r)
	})}
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hello") })
	serve(t, relayURL, net, testKey, hello, client.WithHTTPClient(hc))
	s := login(t, relayURL, net, client.WithHTTPClient(hc))
	resp, err := s.HTTPClient().Get("http://c2cvia/")
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, "hello", string(b))
	// login, pushreq, pullsmart; Serve's poll and pushres.
	assert.GreaterOrEqual(t, calls.Load(), int64(5))
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestServeConcurrency: WithConcurrency(n) runs n handlers at once, and
// polls for no more requests while they run: an n+1st waits in the relay
// until one of them finishes.
func TestServeConcurrency(t *testing.T) {
	t.Parallel()
	const n = 3
	net := testNet(t)
	token, _ := rawLogin(t, net)
	rids := make([]string, n+1)
	for i := range rids {
		rids[i] = rawPush(t, token, fmt.Sprintf(`{"simEndpoint":"/r%d","simMethod":"GET"}`, i))
	}
	var running, most atomic.Int64
	entered := make(chan string, n+1)
	release := make(chan struct{})
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); now > m && !most.CompareAndSwap(m, now); m = most.Load() {
		}
		entered <- r.URL.Path
		<-release
		_, _ = io.WriteString(w, "done")
	})
	f := newFront(t)
	srv := serve(t, f.URL, net, testKey, slow, client.WithConcurrency(n))
	unblock := sync.OnceFunc(func() { close(release) })
	t.Cleanup(unblock) // before Serve's stop, should the test fail first
	for range n {
		select {
		case <-entered:
		case <-time.After(within):
			t.Fatalf("not %d handlers at once", n)
		}
	}
	// Every slot is taken: no poll is open, and none will be.
	f.awaitOpen(t, pathPullReqSmart, 0)
	status, _ := ridState(t, token, rids[n])
	assert.Equal(t, "queued", status, "the n+1st waits in the relay")

	release <- struct{}{} // one finishes; its slot takes the n+1st
	select {
	case p := <-entered:
		assert.Equal(t, fmt.Sprintf("/r%d", n), p)
	case <-time.After(within):
		t.Fatal("the n+1st request did not start when a slot freed")
	}
	unblock()
	for _, rid := range rids {
		assert.Contains(t, string(rawResult(t, token, rid)), `"simBody":"done"`)
	}
	assert.ErrorIs(t, srv.stop(), context.Canceled)
	assert.Equal(t, int64(n), most.Load(), "never more than n at once")
	for i := range f.count(pathPullReqSmart) {
		assert.LessOrEqual(t, f.body(t, pathPullReqSmart, i)["max"], float64(n))
	}
}

// TestServeLease: a handler that runs past its lease keeps its request:
// Serve renews the lease every half lease, so the relay does not hand the
// request out again, though a slot is free to take it.
func TestServeLease(t *testing.T) {
	t.Parallel()
	const lease = time.Second
	net := testNet(t)
	f := newFront(t)
	var entered atomic.Int64
	release := make(chan struct{})
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered.Add(1)
		<-release
		_, _ = io.WriteString(w, "slow but sure")
	})
	srv := serve(t, f.URL, net, testKey, slow, client.WithLease(lease), client.WithConcurrency(2))
	unblock := sync.OnceFunc(func() { close(release) })
	t.Cleanup(unblock) // before Serve's stop, should the test fail first
	token, _ := rawLogin(t, net)
	rid := rawPush(t, token, `{"simEndpoint":"/slow"}`)
	f.awaitCalls(t, pathExtend, 3) // 1.5 s: well past the first lease's end
	unblock()
	assert.Contains(t, string(rawResult(t, token, rid)), `"simBody":"slow but sure"`)
	_, attempt := ridState(t, token, rid)
	assert.Equal(t, 1, attempt, "handed out once")
	assert.Equal(t, int64(1), entered.Load())
	assert.Equal(t, map[string]any{"net": net, "rid": rid, "lease": 1.0}, f.body(t, pathExtend, 0))
	assert.ErrorIs(t, srv.stop(), context.Canceled)
}

// TestServeStop: when Serve's context ends, a handler in flight keeps a
// context that is not cancelled, its answer is posted, and only then does
// Serve return ctx.Err().
func TestServeStop(t *testing.T) {
	t.Parallel()
	net := testNet(t)
	f := newFront(t)
	entered := make(chan struct{})
	release := make(chan struct{})
	handlerCtx := make(chan error, 1)
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		handlerCtx <- r.Context().Err()
		_, _ = io.WriteString(w, "answered after stop")
	})
	srv := serve(t, f.URL, net, testKey, slow, client.WithConcurrency(2))
	unblock := sync.OnceFunc(func() { close(release) })
	t.Cleanup(unblock) // before Serve's stop, should the test fail first
	token, _ := rawLogin(t, net)
	rid := rawPush(t, token, `{"simEndpoint":"/slow"}`)
	select {
	case <-entered:
	case <-time.After(within):
		t.Fatal("the handler did not start")
	}
	f.awaitOpen(t, pathPullReqSmart, 1) // the poll for the second slot
	stopped := make(chan error, 1)
	go func() { stopped <- srv.stop() }()
	f.awaitOpen(t, pathPullReqSmart, 0) // Serve has seen its context end
	assert.True(t, srv.running(), "Serve returned before its handler answered")
	unblock()
	select {
	case err := <-stopped:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(within):
		t.Fatal("Serve did not return after its handler answered")
	}
	status, _ := ridState(t, token, rid)
	assert.Equal(t, "answered", status, "answered before Serve returned")
	assert.NoError(t, <-handlerCtx, "the handler's context outlives Serve's")
	assert.Contains(t, string(rawResult(t, token, rid)), "answered after stop")
}
