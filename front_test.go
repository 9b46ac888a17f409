package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
)

// frontMode is what a relayFront does with a call.
type frontMode int

const (
	frontUp   frontMode = iota // hand it to the relay
	front503                   // answer 503, as a proxy does for a relay that is down
	frontDrop                  // close the connection unanswered
)

// relayFront stands in front of a relay for the SDK and client tests: it
// counts calls per path, can take the relay down (503, or connections
// dropped) and up again, fails the next calls to a path with a status, and
// shows each call's body to onCall before anything else happens to it.
type relayFront struct {
	URL string

	mu       sync.Mutex
	mode     frontMode
	counts   map[string]int     // calls per path, counted as they arrive
	answered map[string]int     // calls per path the relay has answered
	fails    map[string]failure // path: the next calls get this status
	onCall   func(path string, body []byte)
}

type failure struct{ status, times int }

func newRelayFront(t testing.TB, relay http.Handler) *relayFront {
	t.Helper()
	f := &relayFront{counts: map[string]int{}, answered: map[string]int{}, fails: map[string]failure{}}
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.counts[r.URL.Path]++
		mode, onCall := f.mode, f.onCall
		fail, failing := f.fails[r.URL.Path]
		if failing {
			if fail.times--; fail.times <= 0 {
				delete(f.fails, r.URL.Path)
			} else {
				f.fails[r.URL.Path] = fail
			}
		}
		f.mu.Unlock()
		if onCall != nil {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			onCall(r.URL.Path, body)
		}
		switch {
		case mode == front503:
			http.Error(w, "relay down for maintenance", http.StatusServiceUnavailable)
		case mode == frontDrop:
			if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
				conn.Close()
			}
		case failing:
			w.Header().Set("Access-Control-Allow-Origin", "*")
			writeError(w, r, discardLogger(), newAPIError(fail.status, "injected", "a failure the test asked for"))
		default:
			relay.ServeHTTP(w, r)
			f.mu.Lock()
			f.answered[r.URL.Path]++
			f.mu.Unlock()
		}
	}))
	t.Cleanup(func() {
		ts.CloseClientConnections()
		ts.Close()
	})
	f.URL = ts.URL
	return f
}

// setOnCall sets the hook that sees each call's path and body first.
func (f *relayFront) setOnCall(fn func(path string, body []byte)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.onCall = fn
}

func (f *relayFront) setMode(m frontMode) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.mode = m
}

// answeredCount is the number of calls to path the relay has answered.
func (f *relayFront) answeredCount(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.answered[path]
}

// count is the number of calls to path so far.
func (f *relayFront) count(path string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.counts[path]
}

// failNext makes the next times calls to path get status, in the relay's
// JSON error shape.
func (f *relayFront) failNext(path string, status, times int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fails[path] = failure{status, max(times, 1)}
}
