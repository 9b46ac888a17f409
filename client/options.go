// Options of Serve and Login, their defaults, and where the failures that
// do not end a call are logged.

package client

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strings"
	"time"
)

// The defaults of the options, the same in the JavaScript SDK.
const (
	DefaultConcurrency    = 4                      // WithConcurrency
	DefaultLease          = 30 * time.Second       // WithLease
	DefaultWait           = 25 * time.Second       // WithWait
	DefaultLinger         = 2 * time.Millisecond   // WithLinger
	DefaultRetries        = 9                      // WithRetries: 10 tries in all
	DefaultBackoffInitial = 250 * time.Millisecond // WithBackoff: the first delay's ceiling
	DefaultBackoffMax     = 30 * time.Second       // WithBackoff: the ceiling it doubles up to
)

// Option changes a default of Serve or Login. Options that do not apply to
// a call are ignored by it.
type Option func(*options)

type options struct {
	concurrency int
	lease       time.Duration
	wait        time.Duration
	httpClient  *http.Client
	logger      *slog.Logger // nil: slog.Default() at the time of logging
	onError     func(error)  // WithErrorLog's, or nil
	preflights  bool
	linger      time.Duration
	retries     int
	backoffMin  time.Duration
	backoffMax  time.Duration
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
		concurrency: DefaultConcurrency,
		lease:       DefaultLease,
		// 25 s: under common proxy idle timeouts (30-60 s), so a middlebox
		// does not cut the long poll.
		wait:       DefaultWait,
		httpClient: defaultHTTPClient,
		// 2 ms: a quick handler is done well within it, and a slow one
		// delays the next poll by no more.
		linger:     DefaultLinger,
		retries:    DefaultRetries,
		backoffMin: DefaultBackoffInitial,
		backoffMax: DefaultBackoffMax,
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
// like http.DefaultClient that keeps up to 100 idle connections). It must
// not have a Timeout shorter than the long poll's wait.
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

// WithRetries sets how many times a call the relay refused for now (429,
// 5xx, 408) or that met a network error is tried again (default 9: ten
// tries in all), with WithBackoff's delays between them; 0 tries once.
// n < 0 keeps the default. It bounds each call of its own: Login, Send,
// Publish, Broadcast, Subscribe, Unsubscribe, Peers, an HTTPClient
// request's pushreq, and Serve's posting of an answer or a part (and the
// failures in a row of a long poll for an answer). The loops that wait
// for work — Serve's poll for requests and Messages — retry without end,
// with the same backoff, until their context ends.
//
// A call whose reply was lost on the way back may have been carried out:
// Send, Publish and Broadcast tried again may deliver twice. An
// HTTPClient request is pushed again after a network error only when
// net/http would send it again (GET, HEAD, OPTIONS, TRACE, or with an
// Idempotency-Key header); the relay's refusals write nothing and are
// always retried.
func WithRetries(n int) Option {
	return func(o *options) {
		if n >= 0 {
			o.retries = n
		}
	}
}

// WithBackoff sets the delays between retries: retry n waits a random time
// between half and all of initial doubled n times, at most max, and at
// least the relay's Retry-After (defaults 250 ms and 30 s). initial <= 0
// or max <= 0 keeps that default; max below initial is initial.
func WithBackoff(initial, max time.Duration) Option {
	return func(o *options) {
		if initial > 0 {
			o.backoffMin = initial
		}
		if max > 0 {
			o.backoffMax = max
		}
		if o.backoffMax < o.backoffMin {
			o.backoffMax = o.backoffMin
		}
	}
}

// WithLogger sets where Serve and a Session log what does not end a call,
// with the attributes net, rid, status, code and err: at Error a handler's
// panic and an answer the relay refused or that could not be posted, at
// Warn a failure that is retried, at Info a Session's new login after its
// token expired. The default is slog.Default() as it is when a line is
// logged, so slog.SetDefault applies, and a program that sets nothing gets
// the standard log package's output as before. slog.New(slog.DiscardHandler)
// logs nothing.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// WithErrorLog sets a function that gets each failure that does not end a
// call, as one error that wraps the cause: a handler's panic, an answer
// the relay refused, a retried network error. Set alone, it takes the
// place of the logger; with WithLogger, both get every failure.
//
// Deprecated: use WithLogger, whose records carry the net, rid and status
// as attributes; WithErrorLog stays for programs that hand errors to
// another reporter.
func WithErrorLog(fn func(error)) Option {
	return func(o *options) {
		if fn != nil {
			o.onError = fn
		}
	}
}

// log records one event that does not end a call: to the logger as msg
// with err and attrs (key, value pairs, as slog takes them), and to
// WithErrorLog's function as one error, "c2cvia: msg (k=v ...): err".
// WithErrorLog alone replaces the default logger.
func (o *options) log(level slog.Level, msg string, err error, attrs ...any) {
	if o.onError != nil && err != nil {
		o.onError(legacyError(msg, err, attrs))
	}
	if o.onError != nil && o.logger == nil {
		return
	}
	l := o.logger
	if l == nil {
		l = slog.Default()
	}
	if err != nil {
		attrs = append(attrs, errAttrs(err)...)
	}
	l.Log(context.Background(), level, "c2cvia: "+msg, attrs...)
}

// legacyError is what WithErrorLog's function gets for an event: one
// error that wraps err, with the attributes but a stack in its text.
func legacyError(msg string, err error, attrs []any) error {
	var b strings.Builder
	for i := 0; i+1 < len(attrs); i += 2 {
		if k, _ := attrs[i].(string); k != "stack" {
			fmt.Fprintf(&b, " %s=%v", k, attrs[i+1])
		}
	}
	if b.Len() > 0 {
		msg += " (" + b.String()[1:] + ")"
	}
	return fmt.Errorf("c2cvia: %s: %w", msg, err)
}

// errAttrs is err as log attributes: the relay's status and code, if it
// is an *Error, and err.
func errAttrs(err error) []any {
	var e *Error
	if errors.As(err, &e) {
		return []any{slog.Int("status", e.Status), slog.String("code", e.Code), slog.Any("err", err)}
	}
	return []any{slog.Any("err", err)}
}

// backoff is an exponential delay between retries (WithBackoff): each
// delay drawn between half and all of its step, so that many clients cut
// off at once do not come back in step.
type backoff struct {
	n        int
	min, max time.Duration
}

func (o *options) backoff() backoff { return backoff{min: o.backoffMin, max: o.backoffMax} }

// next is the delay before the next retry, at least retryAfter.
func (b *backoff) next(retryAfter time.Duration) time.Duration {
	d := backoffDelay(b.n, b.min, b.max, retryAfter)
	b.n++
	return d
}

func (b *backoff) reset() { b.n = 0 }

// backoffAfter is the delay before retry n (0-based), at least retryAfter.
func (o *options) backoffAfter(n int, retryAfter time.Duration) time.Duration {
	return backoffDelay(n, o.backoffMin, o.backoffMax, retryAfter)
}

// backoffDelay is the delay before retry n (0-based): a random time
// between half and all of initial doubled n times (at most ceiling), or
// retryAfter if that is longer.
func backoffDelay(n int, initial, ceiling, retryAfter time.Duration) time.Duration {
	d := initial
	for i := 0; i < n && d < ceiling; i++ {
		d *= 2
	}
	d = min(d, ceiling)
	return max(d/2+rand.N(d/2+1), retryAfter)
}
