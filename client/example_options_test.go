package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/c2cvia/c2cvia/client"
)

// viaGet GETs the net's path through the relay's gateway and returns the
// status and body, as any HTTP client would.
func viaGet(net, path string) string {
	resp, err := http.Get(relayURL + "/via/" + net + path)
	if err != nil {
		log.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.Status + " " + string(body)
}

// WithConcurrency bounds the handlers Serve runs at once (4 by default).
func ExampleWithConcurrency() {
	var running, most atomic.Int32
	started, finish := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := running.Add(1)
		defer running.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		started <- struct{}{}
		<-finish // the work ends when the example says
	})
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- client.Serve(ctx, relayURL, "pool", "a-secret-of-16-chars-or-more", h, client.WithConcurrency(2))
	}()

	done := make(chan string)
	for range 6 {
		go func() { done <- viaGet("pool", "/job") }()
	}
	// One handler at a time is let finish: had Serve run more than 2, they
	// would all have counted themselves running before the first ended.
	for range 6 {
		<-started
		finish <- struct{}{}
	}
	for range 6 {
		<-done
	}
	fmt.Println("at most 2 at once:", most.Load() <= 2)
	stop()
	<-served
	// Output:
	// at most 2 at once: true
}

// A handler that runs long keeps its request: Serve renews the lease
// every half lease while it runs. A shorter lease hands a request out
// again sooner when its SimServer dies.
func ExampleWithLease() {
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	slow := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(1500 * time.Millisecond): // work past the lease: renewed meanwhile
			fmt.Fprint(w, "done")
		case <-r.Context().Done(): // the lease was lost, or the caller left
			http.Error(w, "stopped", http.StatusServiceUnavailable)
		}
	})
	go func() {
		served <- client.Serve(ctx, relayURL, "reports", "a-secret-of-16-chars-or-more", slow, client.WithLease(time.Second))
	}()
	fmt.Println(viaGet("reports", "/monthly"))
	stop()
	<-served
	// Output:
	// 200 OK done
}

// WithWait sets how long each long poll waits at the relay: under the
// idle timeout of a proxy on the way.
func ExampleWithWait() {
	ctx := context.Background()
	s, err := client.Login(ctx, relayURL, "behind-proxy", client.WithWait(10*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	_, _ = s.Send(ctx, s.PeerID(), "note to self")
	for m, err := range s.Messages(ctx) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(string(m.Data))
		break
	}
	// Output:
	// "note to self"
}

// WithLinger(0) polls again at once instead of waiting for the quick
// handlers of a poll to answer with the next one.
func ExampleWithLinger() {
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "pong") })
	go func() {
		served <- client.Serve(ctx, relayURL, "ping", "a-secret-of-16-chars-or-more", h, client.WithLinger(0))
	}()
	fmt.Println(viaGet("ping", "/"))
	stop()
	<-served
	// Output:
	// 200 OK pong
}

// WithHTTPClient sets the client that talks to the relay: a proxy, TLS
// settings, or a transport of its own. It must not time out a long poll.
func ExampleWithHTTPClient() {
	hc := &http.Client{Transport: &http.Transport{Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 10}}
	s, err := client.Login(context.Background(), relayURL, "custom", client.WithHTTPClient(hc))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("logged in to", s.Net)
	// Output:
	// logged in to custom
}

// WithPreflights hands browser CORS preflights to the handler, here CORS
// middleware that allows one origin.
func ExampleWithPreflights() {
	cors := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Access-Control-Allow-Origin", "https://app.example")
		if r.Method == http.MethodOptions {
			w.Header().Set("Access-Control-Allow-Methods", "GET, PUT")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		fmt.Fprint(w, "data")
	})
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- client.Serve(ctx, relayURL, "api", "a-secret-of-16-chars-or-more", cors, client.WithPreflights())
	}()

	fmt.Println(viaGet("api", "/items")) // Serve is polling: from now on preflights reach it

	req, _ := http.NewRequest(http.MethodOptions, relayURL+"/via/api/items", nil)
	req.Header.Set("Origin", "https://app.example")
	req.Header.Set("Access-Control-Request-Method", "PUT")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		log.Fatal(err)
	}
	resp.Body.Close()
	fmt.Println(resp.StatusCode, resp.Header.Get("Access-Control-Allow-Methods"))
	stop()
	<-served
	// Output:
	// 200 OK data
	// 204 GET, PUT
}

// WithRetries bounds how often a call refused for now, or that met a
// network error, is tried again; here nothing listens at the address.
func ExampleWithRetries() {
	_, err := client.Login(context.Background(), "http://127.0.0.1:1", "demo",
		client.WithRetries(2), client.WithBackoff(10*time.Millisecond, 50*time.Millisecond))
	var e *client.Error
	fmt.Println("failed:", err != nil, "the relay's refusal:", errors.As(err, &e))
	// Output:
	// failed: true the relay's refusal: false
}

// WithBackoff sets the delays between retries: from initial doubling to
// max, each between half and all of its step, and never under the
// relay's Retry-After.
func ExampleWithBackoff() {
	s, err := client.Login(context.Background(), relayURL, "patient",
		client.WithBackoff(time.Second, 2*time.Minute), client.WithRetries(20))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("logged in to", s.Net)
	// Output:
	// logged in to patient
}

// WithLogger logs what does not end a call, with attributes: here a
// handler's panic, without the attributes that change from run to run.
func ExampleWithLogger() {
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey || a.Key == "rid" || a.Key == "stack" {
				return slog.Attr{}
			}
			return a
		},
	}))
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { panic("boom") })
	go func() {
		served <- client.Serve(ctx, relayURL, "logged", "a-secret-of-16-chars-or-more", h, client.WithLogger(logger))
	}()
	fmt.Println(viaGet("logged", "/boom"))
	stop()
	<-served
	// Output:
	// level=ERROR msg="c2cvia: handler panicked: answering 500" net=logged method=GET path=/boom err="panic: boom"
	// 500 Internal Server Error internal server error
}

// WithErrorLog hands each failure that does not end a call to a function
// of the program's, as one error that wraps the cause.
func ExampleWithErrorLog() {
	report := func(err error) { fmt.Println("reported:", strings.TrimSpace(errors.Unwrap(err).Error())) }
	ctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { panic("boom") })
	go func() {
		served <- client.Serve(ctx, relayURL, "reported", "a-secret-of-16-chars-or-more", h, client.WithErrorLog(report))
	}()
	fmt.Println(viaGet("reported", "/boom"))
	stop()
	<-served
	// Output:
	// reported: panic: boom
	// 500 Internal Server Error internal server error
}
