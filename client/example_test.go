package client_test

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"strings"
	"time"

	"github.com/c2cvia/c2cvia/client"
)

// The relay the examples call: `c2cvia serve` on this machine. (Under go
// test, TestMain points it at a relay it starts.)
var relayURL = "http://localhost:8080"

// An existing web app, here an http.ServeMux, becomes the SimServer of the
// net "shop". It needs no open port: it calls the relay, which holds its
// requests. A SimClient of the net calls it with a plain *http.Client, and
// any HTTP client through the relay's gateway, /via/NET/PATH.
func ExampleServe() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
		// C2cvia-From is the caller's peer_id, or "via" through the gateway.
		fmt.Fprintf(w, "hello, %s\n", r.Header.Get("C2cvia-From"))
	})
	mux.HandleFunc("POST /items", func(w http.ResponseWriter, r *http.Request) {
		var item map[string]any
		if err := json.NewDecoder(r.Body).Decode(&item); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		_ = json.NewEncoder(w).Encode(item)
	})

	// Serve runs until ctx ends. A program would rather stop on Ctrl-C:
	// signal.NotifyContext(context.Background(), os.Interrupt).
	ctx, stop := context.WithCancel(context.Background())
	key := "a-secret-of-16-chars-or-more" // the first to serve a net with a key claims it
	served := make(chan error, 1)
	go func() {
		err := client.Serve(ctx, relayURL, "shop", key, mux, client.WithConcurrency(8))
		served <- err
	}()

	s, err := client.Login(ctx, relayURL, "shop")
	if err != nil {
		log.Fatal(err)
	}
	resp, err := s.HTTPClient().Post("http://c2cvia/items", "application/json", strings.NewReader(`{"name":"lamp"}`))
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print(resp.Status, " ", string(body))

	resp, err = http.Get(relayURL + "/via/shop/hello")
	if err != nil {
		log.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print(resp.Status, " ", string(body))

	stop() // Serve returns once the requests in flight are answered
	if err := <-served; !errors.Is(err, context.Canceled) {
		log.Fatal(err) // a wrong key or a bad net: a *client.Error
	}
	// Output:
	// 201 Created {"name":"lamp"}
	// 200 OK hello, via
}

// A webhook receiver behind the relay: the sender signs the exact bytes
// it posts, and the handler gets those bytes (JSON is not parsed or
// re-encoded on the way), so the signature verifies. r.Host, r.RequestURI
// and r.RemoteAddr are the caller's, as behind a reverse proxy.
func ExampleServe_webhook() {
	secret := []byte("whsec_example")
	mux := http.NewServeMux()
	mux.HandleFunc("POST /hooks/github", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mac := hmac.New(sha256.New, secret)
		mac.Write(body)
		want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
		if !hmac.Equal([]byte(r.Header.Get("X-Hub-Signature-256")), []byte(want)) {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		fmt.Fprintf(w, "verified %d bytes for %s\n", len(body), r.Host)
	})
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- client.Serve(ctx, relayURL, "hooks", "a-secret-of-16-chars-or-more", mux) }()

	// The sender: any HTTP client, here signing a pretty-printed body.
	payload := "{\n  \"action\": \"opened\",\n  \"number\": 12345678901234567890\n}\n"
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(payload))
	req, _ := http.NewRequest(http.MethodPost, relayURL+"/via/hooks/hooks/github", strings.NewReader(payload))
	req.Host = "hooks.example.com"
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Print(resp.Status, " ", string(body))

	stop()
	<-served
	// Output:
	// 200 OK verified 59 bytes for hooks.example.com
}

// A handler that flushes streams its answer: here server-sent events, one
// a tick, which a browser's EventSource or curl -N reads through the
// gateway as they are written. When its caller goes away, the handler's
// context ends, within about a second.
func ExampleServe_events() {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ticks", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 1; ; i++ {
			fmt.Fprintf(w, "data: tick %d\n\n", i)
			if err := http.NewResponseController(w).Flush(); err != nil {
				return // the request was withdrawn
			}
			select {
			case <-tick.C:
			case <-r.Context().Done(): // the caller went away
				return
			}
		}
	})
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- client.Serve(ctx, relayURL, "clock", "a-secret-of-16-chars-or-more", mux) }()

	resp, err := http.Get(relayURL + "/via/clock/ticks")
	if err != nil {
		log.Fatal(err)
	}
	events := bufio.NewScanner(resp.Body)
	for n := 0; n < 3 && events.Scan(); {
		if line := events.Text(); line != "" {
			fmt.Println(line)
			n++
		}
	}
	resp.Body.Close() // the handler's context ends

	stop()
	if err := <-served; !errors.Is(err, context.Canceled) {
		log.Fatal(err)
	}
	// Output:
	// data: tick 1
	// data: tick 2
	// data: tick 3
}

// A SimClient logs in to a net. Its Session holds a token, the secret that
// reads its answers, and a peer_id, the name other peers send to. What the
// relay refuses is a *client.Error.
func ExampleLogin() {
	ctx := context.Background()
	s, err := client.Login(ctx, relayURL, "demo")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("logged in to", s.Net, "for", time.Until(s.ExpiresAt()).Round(time.Hour))

	_, err = client.Login(ctx, relayURL, "no spaces in a net")
	var e *client.Error
	if errors.As(err, &e) {
		fmt.Println(e.Status, e.Code)
	}
	// Output:
	// logged in to demo for 24h0m0s
	// 400 invalid_net
}

// Peers of a net message each other: one peer (Send), the subscribers of a
// topic (Publish) or all the others (Broadcast). Messages reads what
// arrives, oldest first, resuming after the last message across reconnects.
func ExampleSession_Messages() {
	ctx := context.Background()
	ada, err := client.Login(ctx, relayURL, "chat")
	if err != nil {
		log.Fatal(err)
	}
	bob, err := client.Login(ctx, relayURL, "chat")
	if err != nil {
		log.Fatal(err)
	}
	if err := bob.Subscribe(ctx, "news"); err != nil {
		log.Fatal(err)
	}
	if _, err := ada.Send(ctx, bob.PeerID(), map[string]string{"text": "hi Bob"}); err != nil {
		log.Fatal(err)
	}
	if _, _, err := ada.Publish(ctx, "news", "the relay ships"); err != nil {
		log.Fatal(err)
	}
	if _, _, err := ada.Broadcast(ctx, "lunch?"); err != nil {
		log.Fatal(err)
	}

	names := map[string]string{ada.PeerID(): "Ada"}
	read := 0
	for m, err := range bob.Messages(ctx) {
		if err != nil {
			log.Fatal(err) // the login expired: log in again
		}
		fmt.Printf("%s from %s: %s\n", m.Kind, names[m.From], m.Data)
		if read++; read == 3 {
			break // a reader would go on until ctx ends
		}
	}
	// Output:
	// unicast from Ada: {"text":"hi Bob"}
	// multicast from Ada: "the relay ships"
	// broadcast from Ada: "lunch?"
}
