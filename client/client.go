// Package client connects Go programs to a c2cvia relay, over the relay's
// HTTP API only.
//
// Any http.Handler becomes the SimServer of a net with one line; it answers
// requests sent into the net by SimClients and by the relay's /via/ gateway,
// and needs no open port. A handler that flushes streams its answer
// (server-sent events, large downloads), and its request's context ends
// when the caller goes away:
//
//	mux := http.NewServeMux()
//	mux.HandleFunc("GET /hello", func(w http.ResponseWriter, r *http.Request) {
//		fmt.Fprintf(w, "hello, %s", r.Header.Get("C2cvia-From"))
//	})
//	err := client.Serve(ctx, "https://relay.example.com", "demo", key, mux)
//
// A SimClient logs in and calls the net's SimServer with a plain
// *http.Client; only the path and query of the URL count, and a streamed
// answer's body reads as the handler writes it:
//
//	s, err := client.Login(ctx, "https://relay.example.com", "demo")
//	resp, err := s.HTTPClient().Get("http://c2cvia/hello")
//
// The same Session messages the other peers of the net (Send, Publish,
// Broadcast) and reads what they send it:
//
//	for m, err := range s.Messages(ctx) {
//		if err != nil {
//			return err // the relay refused for good, e.g. ErrUnknownToken
//		}
//		fmt.Println(m.Kind, m.From, string(m.Data))
//	}
//
// Every failure that the relay reports is an *Error with its status, code
// and Retry-After; errors.Is tests it against the sentinels (ErrTokenExpired,
// ErrQueueFull, ErrStorageFull, ...). A failure of the network or of the
// caller's context stays what it is (errors.Is(err, context.Canceled)).
// Calls refused for now (429, 5xx, 408) and network errors are retried
// (WithRetries, WithBackoff: 9 times, from 250 ms doubling to 30 s); a
// Session whose token expires logs in again by itself. What does not end
// a call (a handler's panic, a retry) goes to WithLogger's *slog.Logger,
// slog.Default() unless set.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/c2cvia/c2cvia/internal/simhttp"
)

// relay calls the relay's JSON API.
type relay struct {
	base string // the relay's URL without a trailing slash
	hc   *http.Client
}

func newRelay(relayURL string, hc *http.Client) relay {
	return relay{base: strings.TrimRight(relayURL, "/"), hc: hc}
}

// call POSTs body as JSON to path with bearer as the credential and decodes
// a 2xx reply into out (if not nil). It returns the status, and Retry-After
// for a 429 or 503; a non-2xx reply is an *Error.
func (c relay) call(ctx context.Context, path, bearer string, body, out any) (status int, retryAfter time.Duration, err error) {
	b, err := marshal(body)
	if err != nil {
		return 0, 0, err
	}
	return c.post(ctx, path, "application/json", b, bearer, out)
}

// post POSTs body of type contentType to target (a path, with a query
// string if any) and decodes the reply as call does.
func (c relay) post(ctx context.Context, target, contentType string, body []byte, bearer string, out any) (status int, retryAfter time.Duration, err error) {
	return c.send(ctx, http.MethodPost, target, contentType, body, bearer, out)
}

// get GETs target and decodes the reply as call does.
func (c relay) get(ctx context.Context, target, bearer string, out any) (status int, retryAfter time.Duration, err error) {
	return c.send(ctx, http.MethodGet, target, "", nil, bearer, out)
}

// send makes one call to the relay. A failure that is the network's (a
// refused connection, a cut reply, ctx's end) comes back as it is, wrapped
// by net/http, so that errors.Is and errors.As reach it.
func (c relay) send(ctx context.Context, method, target, contentType string, body []byte, bearer string, out any) (status int, retryAfter time.Duration, err error) {
	path, _, _ := strings.Cut(target, "?")
	req, err := http.NewRequestWithContext(ctx, method, c.base+target, bytes.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return 0, 0, ctx.Err() // not the *url.Error around it
		}
		return 0, 0, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, 0, err
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		e := replyError(resp.StatusCode, resp.Header, data)
		return resp.StatusCode, e.RetryAfter, e
	}
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, 0, fmt.Errorf("c2cvia: %s answered %d with a body that is not the expected JSON: %w", path, resp.StatusCode, err)
		}
	}
	return resp.StatusCode, 0, nil
}

// retry runs call until it succeeds, fails for good, or has been tried
// o.retries+1 times: what the relay refused for now (429, 5xx, 408), and
// a network error if resend, is tried again after a backoff.
func retry(ctx context.Context, o *options, resend bool, call func() error) error {
	bo := o.backoff()
	for try := 0; ; try++ {
		err := call()
		if err == nil || !transient(ctx, err) || try >= o.retries {
			return err
		}
		var e *Error
		if !resend && !errors.As(err, &e) {
			return err
		}
		if !sleep(ctx, bo.next(retryAfter(err))) {
			return ctx.Err()
		}
	}
}

// marshal encodes v as compact JSON without HTML escaping, so a
// json.RawMessage inside goes out as written, numbers digit for digit.
func marshal(v any) ([]byte, error) { return simhttp.Marshal(v) }

// sleep waits d, or less when ctx ends first; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// seconds is d in the relay's unit, seconds, fractions allowed.
func seconds(d time.Duration) float64 { return d.Seconds() }
