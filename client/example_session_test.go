package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"slices"
	"time"

	"github.com/c2cvia/c2cvia/client"
)

// HTTPClient's *http.Client reaches the net's SimServer: only the URL's
// path and query count, and the request arrives as net/http would have
// sent it, User-Agent included.
func ExampleSession_HTTPClient() {
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- client.Serve(ctx, relayURL, "agents", "a-secret-of-16-chars-or-more",
			http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				fmt.Fprintf(w, "%s %s from %s", r.Method, r.URL, r.UserAgent())
			}))
	}()

	s, err := client.Login(ctx, relayURL, "agents")
	if err != nil {
		log.Fatal(err)
	}
	resp, err := s.HTTPClient().Get("http://c2cvia/items?page=2")
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, string(body))

	stop()
	<-served
	// Output:
	// 200 GET /items?page=2 from Go-http-client/1.1
}

// Send messages one peer, by its peer_id; the message's data is any
// value that marshals to JSON, and arrives as its JSON text.
func ExampleSession_Send() {
	ctx := context.Background()
	ada, err := client.Login(ctx, relayURL, "post")
	if err != nil {
		log.Fatal(err)
	}
	bob, err := client.Login(ctx, relayURL, "post")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := ada.Send(ctx, bob.PeerID(), map[string]any{"order": 42, "items": []string{"lamp"}}); err != nil {
		log.Fatal(err)
	}
	for m, err := range bob.Messages(ctx) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(m.Kind, m.From == ada.PeerID(), string(m.Data))
		break
	}
	// Output:
	// unicast true {"items":["lamp"],"order":42}
}

// Subscribe makes a session receive what is published on a topic.
func ExampleSession_Subscribe() {
	ctx := context.Background()
	station, _ := client.Login(ctx, relayURL, "weather")
	listener, err := client.Login(ctx, relayURL, "weather")
	if err != nil {
		log.Fatal(err)
	}
	if err := listener.Subscribe(ctx, "forecast"); err != nil {
		log.Fatal(err)
	}
	if _, _, err := station.Publish(ctx, "forecast", "rain"); err != nil {
		log.Fatal(err)
	}
	for m, err := range listener.Messages(ctx) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(m.Topic, string(m.Data))
		break
	}
	// Output:
	// forecast "rain"
}

// Unsubscribe stops a topic's messages; others still come.
func ExampleSession_Unsubscribe() {
	ctx := context.Background()
	station, _ := client.Login(ctx, relayURL, "weather")
	listener, err := client.Login(ctx, relayURL, "weather")
	if err != nil {
		log.Fatal(err)
	}
	_ = listener.Subscribe(ctx, "forecast")
	_, _, _ = station.Publish(ctx, "forecast", "rain")
	if err := listener.Unsubscribe(ctx, "forecast"); err != nil {
		log.Fatal(err)
	}
	_, _, _ = station.Publish(ctx, "forecast", "sun") // not for the listener any more
	_, _ = station.Send(ctx, listener.PeerID(), "bye")
	read := 0
	for m, err := range listener.Messages(ctx) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(m.Kind, string(m.Data))
		if read++; read == 2 {
			break
		}
	}
	// Output:
	// multicast "rain"
	// unicast "bye"
}

// Publish reaches the peers subscribed to a topic, not its sender; it
// returns the message's id and how many receive it.
func ExampleSession_Publish() {
	ctx := context.Background()
	ada, _ := client.Login(ctx, relayURL, "newsroom")
	bob, err := client.Login(ctx, relayURL, "newsroom")
	if err != nil {
		log.Fatal(err)
	}
	_ = bob.Subscribe(ctx, "headlines")
	_, receivers, err := ada.Publish(ctx, "headlines", "the relay ships")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("received by at least one:", receivers >= 1)
	for m, err := range bob.Messages(ctx) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(m.Kind, m.Topic, string(m.Data))
		break
	}
	// Output:
	// received by at least one: true
	// multicast headlines "the relay ships"
}

// Broadcast reaches every other peer of the net.
func ExampleSession_Broadcast() {
	ctx := context.Background()
	ada, _ := client.Login(ctx, relayURL, "office")
	bob, err := client.Login(ctx, relayURL, "office")
	if err != nil {
		log.Fatal(err)
	}
	if _, _, err := ada.Broadcast(ctx, "lunch?"); err != nil {
		log.Fatal(err)
	}
	for m, err := range bob.Messages(ctx) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(m.Kind, string(m.Data))
		break
	}
	// Output:
	// broadcast "lunch?"
}

// MessagesSince replays from a cursor kept elsewhere: a message's ID.
func ExampleSession_MessagesSince() {
	ctx := context.Background()
	ada, _ := client.Login(ctx, relayURL, "ledger")
	bob, err := client.Login(ctx, relayURL, "ledger")
	if err != nil {
		log.Fatal(err)
	}
	for _, entry := range []string{"one", "two", "three"} {
		_, _ = ada.Send(ctx, bob.PeerID(), entry)
	}
	var first int64
	for m, err := range bob.Messages(ctx) {
		if err != nil {
			log.Fatal(err)
		}
		first = m.ID // a program would store it
		break
	}
	read := 0
	for m, err := range bob.MessagesSince(ctx, first) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(string(m.Data))
		if read++; read == 2 {
			break
		}
	}
	// Output:
	// "two"
	// "three"
}

// Peers lists who is around: the logins of the net seen in the last 5
// minutes, the session's own first.
func ExampleSession_Peers() {
	ctx := context.Background()
	ada, _ := client.Login(ctx, relayURL, "lobby")
	bob, err := client.Login(ctx, relayURL, "lobby")
	if err != nil {
		log.Fatal(err)
	}
	peers, err := ada.Peers(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("ada first:", peers[0].PeerID == ada.PeerID())
	fmt.Println("bob around:", slices.ContainsFunc(peers, func(p client.Peer) bool { return p.PeerID == bob.PeerID() }))
	fmt.Println("seen lately:", time.Since(peers[0].LastSeen) < time.Minute)
	// Output:
	// ada first: true
	// bob around: true
	// seen lately: true
}

// Failures the relay reports are *client.Error values: errors.Is tests
// them against the sentinels, errors.As reaches the status, code and
// Retry-After.
func ExampleError_Is() {
	ctx := context.Background()
	s, err := client.Login(ctx, relayURL, "errors")
	if err != nil {
		log.Fatal(err)
	}
	_, err = s.Send(ctx, "no-such-peer-000", "hello?")
	switch {
	case errors.Is(err, client.ErrUnknownPeer):
		fmt.Println("that peer has gone")
	case errors.Is(err, client.ErrTokenExpired):
		fmt.Println("log in again") // a Session does so by itself, once
	case errors.Is(err, client.ErrRateLimited), errors.Is(err, client.ErrStorageFull):
		fmt.Println("later") // retried already, WithRetries times
	}
	var e *client.Error
	if errors.As(err, &e) {
		fmt.Println(e.Status, e.Code, e.RetryAfter)
	}
	// Output:
	// that peer has gone
	// 404 unknown_peer 0s
}
