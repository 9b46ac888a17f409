// The Go client package as a SimClient against a relay on a real SQLite
// file: Session.HTTPClient cancelled and expired, peer messages, Login, and
// the README's Go snippet.

package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/c2cvia/c2cvia/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestClientHTTPClientCancel: cancelling a request's context ends its wait
// at once and leaves no long poll or goroutine behind.
func TestClientHTTPClientCancel(t *testing.T) {
	r := newTestRelay(t)
	sess := clientLogin(t, r.URL, "demo")
	leaks := noLeaks(t)
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://c2cvia/nobody/serves/this", nil)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		resp, err := sess.HTTPClient().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	r.waitPolling(1)
	cancel()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not end when its context did")
	}
	r.waitPolling(0)
	leaks()
}

// TestClientHTTPClientExpired: a request no SimServer answers within the
// relay's --req-ttl fails with a *client.Error with the code "expired".
func TestClientHTTPClientExpired(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	// Polls of 1 s: the relay's clock is fake, so the expiry is seen on
	// the next poll, not by a timer.
	sess := clientLogin(t, r.URL, "demo", client.WithWait(time.Second))
	done := make(chan error, 1)
	go func() {
		resp, err := sess.HTTPClient().Get("http://c2cvia/nobody/serves/this")
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	r.waitPolling(1)
	r.clock.Advance(r.cfg.ReqTTL + time.Second)
	select {
	case err := <-done:
		e := relayError(t, err)
		assert.Equal(t, http.StatusGone, e.Status)
		assert.Equal(t, "expired", e.Code)
	case <-time.After(20 * time.Second):
		t.Fatal("the expired request did not fail")
	}
}

// TestClientMessages: send, publish, subscribe, unsubscribe and broadcast
// between two sessions; Messages yields them in order, resumes after the
// last one it delivered, ends quietly with its context and yields a fatal
// refusal before it ends.
func TestClientMessages(t *testing.T) {
	r := newTestRelay(t)
	ctx := context.Background()
	ada := clientLogin(t, r.URL, "chat")
	bob := clientLogin(t, r.URL, "chat")
	leaks := noLeaks(t)

	require.NoError(t, bob.Subscribe(ctx, "news"))
	id1, err := ada.Send(ctx, bob.PeerID(), json.RawMessage(`{"n":12345678901234567890}`))
	require.NoError(t, err)
	id2, receivers, err := ada.Publish(ctx, "news", map[string]string{"headline": "relay ships"})
	require.NoError(t, err)
	assert.Equal(t, 1, receivers)
	require.NoError(t, bob.Unsubscribe(ctx, "news"))
	_, receivers, err = ada.Publish(ctx, "news", "nobody listens")
	require.NoError(t, err)
	assert.Equal(t, 0, receivers, "unsubscribed")
	id3, receivers, err := ada.Broadcast(ctx, "lunch?")
	require.NoError(t, err)
	assert.Equal(t, 1, receivers, "everyone but the sender")
	id4, err := ada.Send(ctx, bob.PeerID(), 42)
	require.NoError(t, err)
	assert.True(t, id1 < id2 && id2 < id3 && id3 < id4)

	// take reads n messages from seq, then stops the iteration.
	take := func(seq func(func(client.Message, error) bool), n int) []client.Message {
		t.Helper()
		var got []client.Message
		for m, err := range seq {
			require.NoError(t, err)
			got = append(got, m)
			if len(got) == n {
				break
			}
		}
		return got
	}
	first := take(bob.Messages(ctx), 2)
	require.Len(t, first, 2)
	assert.Equal(t, id1, first[0].ID)
	assert.Equal(t, "unicast", first[0].Kind)
	assert.Equal(t, ada.PeerID(), first[0].From)
	assert.Equal(t, "", first[0].Topic)
	assert.Equal(t, `{"n":12345678901234567890}`, string(first[0].Data), "digit for digit")
	assert.Equal(t, r.clock.Now(), first[0].SentAt)
	assert.Equal(t, id2, first[1].ID)
	assert.Equal(t, "multicast", first[1].Kind)
	assert.Equal(t, "news", first[1].Topic)
	assert.JSONEq(t, `{"headline":"relay ships"}`, string(first[1].Data))

	rest := take(bob.Messages(ctx), 2) // resumes after the last delivered
	require.Len(t, rest, 2)
	assert.Equal(t, id3, rest[0].ID)
	assert.Equal(t, "broadcast", rest[0].Kind)
	assert.Equal(t, `"lunch?"`, string(rest[0].Data))
	assert.Equal(t, id4, rest[1].ID)
	assert.Equal(t, `42`, string(rest[1].Data))

	again := take(bob.MessagesSince(ctx, id1), 1)
	assert.Equal(t, id2, again[0].ID, "MessagesSince starts after its cursor")
	// A replay does not move the session's cursor back: Messages waits
	// for what comes after id4.

	// With nothing new, the iteration waits in a long poll; cancelling its
	// context ends it with nothing yielded.
	wctx, cancel := context.WithCancel(ctx)
	yielded := make(chan int, 1)
	go func() {
		n := 0
		for range bob.Messages(wctx) {
			n++
		}
		yielded <- n
	}()
	r.waitPolling(1)
	cancel()
	select {
	case n := <-yielded:
		assert.Equal(t, 0, n, "no message and no error for the context's end")
	case <-time.After(10 * time.Second):
		t.Fatal("Messages did not end with its context")
	}

	// A relay error is a *client.Error.
	_, err = ada.Send(ctx, "no-such-peer-000", "hello?")
	e := relayError(t, err)
	assert.Equal(t, http.StatusNotFound, e.Status)
	assert.Equal(t, "unknown_peer", e.Code)

	// An expired login: Messages logs in again by itself (a new peer_id)
	// and goes on after its last message.
	r.clock.Advance(r.cfg.TokenTTL + time.Second)
	old := bob.PeerID()
	tctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	after := make(chan client.Message, 1)
	go func() {
		for m, err := range bob.Messages(tctx) {
			if err == nil {
				after <- m
			}
			return
		}
	}()
	waitFor(t, 20*time.Second, func() bool { return bob.PeerID() != old }, "a new login")
	_, err = ada.Send(ctx, bob.PeerID(), "after")
	require.NoError(t, err)
	select {
	case m := <-after:
		assert.Equal(t, `"after"`, string(m.Data))
	case <-tctx.Done():
		t.Fatal("no message after the new login")
	}
	leaks()
}

// TestClientLogin: a bad net is the relay's 400 as a *client.Error.
func TestClientLogin(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	_, err := client.Login(context.Background(), r.URL, "no spaces allowed")
	e := relayError(t, err)
	assert.Equal(t, http.StatusBadRequest, e.Status)
	assert.Equal(t, "invalid_net", e.Code)
	assert.Contains(t, e.Error(), "invalid_net")
}

// TestReadmeGoClient: every line of the README's Go snippet is a line of
// the compiled examples in client/example_test.go, so the snippet stays
// true as the package changes.
func TestReadmeGoClient(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(readme), "## Go client")
	require.True(t, ok, "README has the section")
	section, _, _ = strings.Cut(section, "\n## ")
	section, _, _ = strings.Cut(section, "\n### A standard-mux app") // a program of its own: TestReadmeMuxApp
	snippets := regexp.MustCompile("(?s)```go\n(.*?)```").FindAllStringSubmatch(section, -1)
	require.Len(t, snippets, 2, "the section has two go blocks: the walkthrough and the webhook")
	examples, err := os.ReadFile("client/example_test.go")
	require.NoError(t, err)
	lines := map[string]bool{}
	for _, l := range strings.Split(string(examples), "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	for _, snippet := range snippets {
		for _, l := range strings.Split(snippet[1], "\n") {
			if l = strings.TrimSpace(l); l != "" {
				assert.True(t, lines[l], "README line not in client/example_test.go: %s", l)
			}
		}
	}
}

// BenchmarkClientRoundTrip: one GET from an *http.Client to an http.Handler,
// served directly by httptest (the baseline) and through the relay with
// client.Serve and Session.HTTPClient: pushreq, lease, pushres and pullsmart,
// every step committed to SQLite. Sequential is one caller's latency;
// parallel is 8 callers per CPU against one Serve with WithConcurrency(16).
func BenchmarkClientRoundTrip(b *testing.B) {
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello")
	})
	call := func(b *testing.B, hc *http.Client, u string) {
		resp, err := hc.Get(u)
		if err != nil {
			b.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || string(body) != "hello" {
			b.Fatalf("got %q, %v", body, err)
		}
	}
	run := func(b *testing.B, hc *http.Client, u string) {
		b.Run("sequential", func(b *testing.B) {
			for b.Loop() {
				call(b, hc, u)
			}
		})
		b.Run("parallel", func(b *testing.B) {
			b.SetParallelism(8) // 8 callers per CPU
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					call(b, hc, u)
				}
			})
		})
	}

	b.Run("direct", func(b *testing.B) {
		ts := httptest.NewServer(hello)
		b.Cleanup(ts.Close)
		run(b, &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}, ts.URL+"/hello")
	})
	b.Run("relay", func(b *testing.B) {
		r := newTestRelay(b)
		ctx, cancel := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() { served <- client.Serve(ctx, r.URL, "bench", testKey, hello, client.WithConcurrency(16)) }()
		b.Cleanup(func() { cancel(); <-served })
		s, err := client.Login(context.Background(), r.URL, "bench")
		if err != nil {
			b.Fatal(err)
		}
		run(b, s.HTTPClient(), "http://c2cvia/hello")
	})
}
