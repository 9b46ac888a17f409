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
//			return err // the relay refused for good, e.g. the login expired
//		}
//		fmt.Println(m.Kind, m.From, string(m.Data))
//	}
//
// Every failure that the relay reports is an *Error.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/c2cvia/c2cvia/internal/simhttp"
)

// Error is a failure the relay reported: its HTTP status and the code and
// message of its JSON error shape. A reply that is not that shape (a proxy's
// 502 page, say) gets the code "http_<status>".
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string {
	return fmt.Sprintf("c2cvia: %d %s: %s", e.Status, e.Code, e.Message)
}

// Option changes a default of Serve or Login. Options that do not apply to
// a call are ignored by it.
type Option func(*options)

type options struct {
	concurrency int
	lease       time.Duration
	wait        time.Duration
	httpClient  *http.Client
	onError     func(error)
	preflights  bool
	linger      time.Duration
}

// defaultHTTPClient talks to the relay unless WithHTTPClient says
// otherwise. Every call goes to the one relay host, so it keeps up to 100
// idle connections to it where http.DefaultTransport keeps 2: with more
// calls in flight than that (handlers answering, callers waiting), each
// extra one would dial a new connection and leave it to TIME_WAIT.
var defaultHTTPClient = &http.Client{Transport: func() http.RoundTripper {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 100
	return t
}()}

func newOptions(opts []Option) options {
	o := options{
		concurrency: 4,
		lease:       30 * time.Second,
		// 25 s: under common proxy idle timeouts (30-60 s), so a middlebox
		// does not cut the long poll.
		wait:       25 * time.Second,
		httpClient: defaultHTTPClient,
		onError:    func(err error) { log.Print(err) },
		// 2 ms: a quick handler is done well within it, and a slow one
		// delays the next poll by no more.
		linger: 2 * time.Millisecond,
	}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// WithConcurrency sets how many handlers Serve runs at once (default 4,
// at least 1). A handler whose answer has become a stream (it flushed)
// no longer counts: long-lived streams never keep Serve from taking new
// requests.
func WithConcurrency(n int) Option {
	return func(o *options) { o.concurrency = max(n, 1) }
}

// WithLease sets how long the relay holds a request for Serve before it
// hands it out again (default 30 s), and a streamed answer before it
// aborts it. Serve renews it every lease/2 while the handler runs, and
// with each part. d <= 0 keeps the default.
func WithLease(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.lease = d
		}
	}
}

// WithWait sets how long one long poll waits at the relay (default 25 s;
// the relay caps it, at 60 s by default). d <= 0 keeps the default: a poll
// that never waits would call the relay in a tight loop.
func WithWait(d time.Duration) Option {
	return func(o *options) {
		if d > 0 {
			o.wait = d
		}
	}
}

// WithLinger sets how long Serve waits, after starting the handlers of
// the requests one poll brought, for them to finish before it polls again
// (default 2 ms): the answers ready by then go with that poll, one round
// trip for answering and asking for more, instead of a pushres call each.
// The wait ends as soon as those handlers have all finished. 0 polls again
// at once; d < 0 keeps the default. Whatever it is, an answer that is
// ready while a poll waits at the relay goes out at once on its own.
func WithLinger(d time.Duration) Option {
	return func(o *options) {
		if d >= 0 {
			o.linger = d
		}
	}
}

// WithHTTPClient sets the client that talks to the relay (default: one
// like http.DefaultClient that keeps up to 100 idle connections). It must not have a Timeout shorter than the long
// poll's wait.
func WithHTTPClient(c *http.Client) Option {
	return func(o *options) {
		if c != nil {
			o.httpClient = c
		}
	}
}

// WithPreflights makes Serve's handler answer the browser CORS preflights
// (OPTIONS with Access-Control-Request-Method) sent to its net through the
// relay's /via/ gateway, as CORS middleware in the handler expects; by
// default the relay answers them itself, allowing what they ask.
func WithPreflights() Option {
	return func(o *options) { o.preflights = true }
}

// WithErrorLog sets where the errors that do not end a call go: a
// handler's panic, an answer the relay refused, a retried network error.
// The default writes them with the standard log package.
func WithErrorLog(fn func(error)) Option {
	return func(o *options) {
		if fn != nil {
			o.onError = fn
		}
	}
}

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
	path, _, _ := strings.Cut(target, "?")
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+target, bytes.NewReader(body))
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set("Content-Type", contentType)
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
		if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s >= 0 {
			retryAfter = time.Duration(s) * time.Second
		}
		return resp.StatusCode, retryAfter, replyError(resp.StatusCode, data)
	}
	if out != nil && resp.StatusCode != http.StatusNoContent {
		if err := json.Unmarshal(data, out); err != nil {
			return resp.StatusCode, 0, fmt.Errorf("c2cvia: %s answered %d with a body that is not the expected JSON: %w", path, resp.StatusCode, err)
		}
	}
	return resp.StatusCode, 0, nil
}

// replyError turns a failed reply into an *Error.
func replyError(status int, body []byte) *Error {
	var shape struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &shape) == nil && shape.Error.Code != "" {
		return &Error{Status: status, Code: shape.Error.Code, Message: shape.Error.Message}
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 200 {
		msg = msg[:200]
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &Error{Status: status, Code: "http_" + strconv.Itoa(status), Message: msg}
}

// marshal encodes v as compact JSON without HTML escaping, so a
// json.RawMessage inside goes out as written, numbers digit for digit.
func marshal(v any) ([]byte, error) { return simhttp.Marshal(v) }

// transient reports whether err may go away by itself: a network error,
// or a relay status of 5xx, 429 or 408. A cancelled context is not.
func transient(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Status >= 500 || e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout
	}
	return true
}

// backoff is an exponential delay between retries: from 250 ms doubling to
// at most 30 s, each delay drawn from its upper half so that many clients
// cut off at once do not come back in step.
type backoff struct{ n int }

const (
	backoffMin = 250 * time.Millisecond
	backoffMax = 30 * time.Second
)

func (b *backoff) next() time.Duration {
	d := backoffMax
	if b.n < 8 { // 250 ms << 7 = 32 s: past the cap
		d = min(backoffMin<<b.n, backoffMax)
	}
	b.n++
	return d/2 + rand.N(d/2+1)
}

func (b *backoff) reset() { b.n = 0 }

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
