// A Session against the relay: peer messaging between sessions, and
// requests that end with their context.

package client_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/c2cvia/c2cvia/client"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// take reads up to n messages from seq, requiring no error, then stops it.
func take(t *testing.T, seq func(func(client.Message, error) bool), n int) []client.Message {
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

// TestMessages: send, publish, subscribe, unsubscribe and broadcast
// between two sessions; Messages yields what arrives in order and resumes
// after the last message it delivered; MessagesSince replays.
func TestMessages(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	net := testNet(t)
	ada := login(t, relayURL, net)
	bob := login(t, relayURL, net)

	require.NoError(t, bob.Subscribe(ctx, "news"))
	id1, err := ada.Send(ctx, bob.PeerID(), json.RawMessage(`{"n":12345678901234567890}`))
	require.NoError(t, err)
	id2, receivers, err := ada.Publish(ctx, "news", map[string]string{"headline": "<relay> & ships"})
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
	assert.True(t, id1 < id2 && id2 < id3 && id3 < id4, "ids in order: %d %d %d %d", id1, id2, id3, id4)

	first := take(t, bob.Messages(ctx), 2)
	require.Len(t, first, 2)
	assert.Equal(t, client.Message{ID: id1, Kind: "unicast", From: ada.PeerID(),
		Data: json.RawMessage(`{"n":12345678901234567890}`), SentAt: first[0].SentAt}, first[0], "every digit kept")
	assert.WithinDuration(t, time.Now(), first[0].SentAt, time.Hour, "sent_at is read")
	assert.Equal(t, client.Message{ID: id2, Kind: "multicast", From: ada.PeerID(), Topic: "news",
		Data: json.RawMessage(`{"headline":"<relay> & ships"}`), SentAt: first[1].SentAt}, first[1], "no HTML escaping")

	rest := take(t, bob.Messages(ctx), 2) // after the last delivered
	require.Len(t, rest, 2)
	assert.Equal(t, id3, rest[0].ID)
	assert.Equal(t, "broadcast", rest[0].Kind)
	assert.Equal(t, `"lunch?"`, string(rest[0].Data))
	assert.Equal(t, id4, rest[1].ID)
	assert.Equal(t, `42`, string(rest[1].Data))

	again := take(t, bob.MessagesSince(ctx, id1), 1)
	require.Len(t, again, 1)
	assert.Equal(t, id2, again[0].ID, "MessagesSince starts after its cursor")

	// The replay did not move the cursor back: Messages yields what comes
	// after id4.
	id5, err := ada.Send(ctx, bob.PeerID(), "five")
	require.NoError(t, err)
	next := take(t, bob.Messages(ctx), 1)
	require.Len(t, next, 1)
	assert.Equal(t, id5, next[0].ID)

	// A sender does not get its own publish or broadcast: the first
	// message Ada reads is Bob's reply.
	reply, err := bob.Send(ctx, ada.PeerID(), "got it")
	require.NoError(t, err)
	mine := take(t, ada.Messages(ctx), 1)
	require.Len(t, mine, 1)
	assert.Equal(t, reply, mine[0].ID)
	assert.Equal(t, bob.PeerID(), mine[0].From)
}

// TestMessagesContextEnd: with nothing to read, Messages waits in a long
// poll; when its context ends, the poll ends and the iteration ends with
// nothing yielded, no error either.
func TestMessagesContextEnd(t *testing.T) {
	t.Parallel()
	f := newFront(t)
	s := login(t, f.URL, testNet(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	yielded := make(chan int, 1)
	go func() {
		n := 0
		for range s.Messages(ctx) {
			n++
		}
		yielded <- n
	}()
	f.awaitOpen(t, pathPeerPull, 1)
	cancel()
	select {
	case n := <-yielded:
		assert.Equal(t, 0, n)
	case <-time.After(within):
		t.Fatal("Messages did not end with its context")
	}
	f.awaitOpen(t, pathPeerPull, 0)
	assert.Equal(t, 1, f.count(pathPeerPull))
}

// TestHTTPClientContextEnd: a request nobody answers waits in a long poll;
// when its context ends, Do returns the context's error and the poll ends.
func TestHTTPClientContextEnd(t *testing.T) {
	t.Parallel()
	f := newFront(t)
	s := login(t, f.URL, testNet(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://c2cvia/nobody/serves/this", nil)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		resp, err := s.HTTPClient().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	f.awaitOpen(t, pathPullSmart, 1)
	cancel()
	select {
	case err := <-done:
		assert.ErrorIs(t, err, context.Canceled)
	case <-time.After(within):
		t.Fatal("the request did not end with its context")
	}
	f.awaitOpen(t, pathPullSmart, 0)
	assert.Equal(t, 1, f.count(pathPushReq))
}

// TestSessionOptions: the long poll's wait, by default and WithWait, for
// Messages and for a request's answer.
func TestSessionOptions(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts []client.Option
		wait float64
	}{
		{"default", nil, 25},
		{"WithWait", []client.Option{client.WithWait(2 * time.Second)}, 2},
		{"WithWait(0) keeps the default", []client.Option{client.WithWait(0)}, 25},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newFront(t)
			s := login(t, f.URL, testNet(t), tc.opts...)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				for range s.Messages(ctx) {
				}
			}()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://c2cvia/", nil)
			require.NoError(t, err)
			asked := make(chan struct{})
			go func() {
				defer close(asked)
				if resp, err := s.HTTPClient().Do(req); err == nil {
					resp.Body.Close()
				}
			}()
			f.awaitOpen(t, pathPeerPull, 1)
			f.awaitOpen(t, pathPullSmart, 1)
			cancel()
			<-done
			<-asked
			assert.Equal(t, tc.wait, f.body(t, pathPeerPull, 0)["wait"])
			assert.Equal(t, tc.wait, f.body(t, pathPullSmart, 0)["wait"])
		})
	}
}
