package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"

	"github.com/c2cvia/c2cvia/client"
)

// An existing web app, here an http.ServeMux, becomes the SimServer of the
// net "demo". It needs no open port: it calls the relay, which holds its
// requests. Ctrl-C stops it after the requests in flight are answered.
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

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	key := os.Getenv("C2CVIA_KEY") // at least 16 characters; the first to use it claims the net
	err := client.Serve(ctx, "http://localhost:8080", "demo", key, mux, client.WithConcurrency(8))
	if err != nil && ctx.Err() == nil {
		log.Fatal(err) // a wrong key or a bad net: a *client.Error
	}
}

// A SimClient logs in and calls the net's SimServer with a plain
// *http.Client: only the path and query of the URL count.
func ExampleLogin() {
	ctx := context.Background()
	s, err := client.Login(ctx, "http://localhost:8080", "demo")
	if err != nil {
		log.Fatal(err)
	}
	resp, err := s.HTTPClient().Get("http://c2cvia/hello")
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.Status, string(body))
}

// Peers of a net message each other; Messages reads what arrives, resuming
// after the last message across reconnects.
func ExampleSession_Messages() {
	ctx := context.Background()
	s, err := client.Login(ctx, "http://localhost:8080", "chat")
	if err != nil {
		log.Fatal(err)
	}
	if err := s.Subscribe(ctx, "news"); err != nil {
		log.Fatal(err)
	}
	if _, _, err := s.Broadcast(ctx, map[string]string{"hello": s.PeerID}); err != nil {
		log.Fatal(err)
	}
	for m, err := range s.Messages(ctx) {
		if err != nil {
			log.Fatal(err) // the login expired: log in again
		}
		fmt.Println(m.Kind, m.From, m.Topic, string(m.Data))
	}
}
