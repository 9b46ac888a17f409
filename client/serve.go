// Serve: an http.Handler as the SimServer of a net. It long-polls the relay
// for requests, runs the handler on each, renews leases while it runs, and
// posts the answers.

package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/c2cvia/c2cvia/internal/simhttp"
)

const (
	// stopGrace is how long handlers still running when Serve's context ends
	// have to finish and answer before their own context is cancelled.
	stopGrace = 5 * time.Second
	// maxPerPoll is the relay's limit on requests per pullreqsmart.
	maxPerPoll = 100
)

// Serve makes h the SimServer of net on the relay at relayURL, with key as
// the net's key (the first server call with a key claims an unclaimed net).
//
// It runs until ctx is done and then returns ctx.Err(), after the handlers
// still running have answered: they get a context that ctx does not
// cancel, for a grace period of 5 s.
//
// Each request reaches h as a web server behind a reverse proxy would have
// handed it over: the method, the target exactly as sent (r.RequestURI and
// r.URL; a path such as /a//b is not cleaned), r.Host, the headers and the
// exact body bytes, with what the relay's gateway adds (X-Forwarded-For,
// -Host, -Proto, and -Prefix, the path the net stands under in the
// relay's path mode); r.RemoteAddr is the caller's "IP:port". The header
// C2cvia-From is the caller's peer_id, "via" for the gateway, and
// C2cvia-Rid the request's rid. A handler that panics answers
// 500 "internal server error"; the panic is logged at Error (WithLogger),
// with the net, rid and stack (a panic with http.ErrAbortHandler answers
// the same, unreported, as net/http keeps it quiet).
//
// The answer goes out whole when the handler returns, unless the handler
// flushes (http.Flusher, or http.ResponseController's Flush) or its body
// grows past 512 KiB: then the status and headers go out with what was
// written, and the rest in parts, at each flush, every 512 KiB, and when
// the handler returns. Such a streamed answer (server-sent events, a
// download of any size: the relay's --max-body bounds a part, not the
// answer) reaches a /via/ caller and an HTTPClient as it is written, and
// its handler no longer counts against WithConcurrency. A handler that
// panics after its first part cannot answer 500 any more: its stream is
// aborted, and its callers see the body end early. An answer the relay
// cannot write (a status past 599, a header value with a control
// character) reaches the caller at once as a 502 invalid_response (one
// whose headers alone are too large, as a 502 response_too_large); the
// handler does not run again for it.
//
// A whole answer under 64 KiB (its sim_res as JSON) that is ready when
// Serve polls again goes with that poll, up to 100 answers and 512 KiB a
// poll: one round trip answers them and asks for more. After starting the
// handlers of a poll's requests, Serve waits for them to finish, for at
// most WithLinger (2 ms by default), before it polls again. An answer
// that is ready while a poll waits at the relay, a larger one, and a
// stream's head go out at once by a call of their own; so do all answers
// to a relay that does not take them with a poll.
//
// r.Context() ends when the request is withdrawn: its caller went away (a
// /via/ caller that hung up, an HTTPClient request cancelled or whose body
// was closed early), or it expired. Serve learns of that within about a
// second (it keeps a watch open at the relay for the handlers that run
// longer than 250 ms), or from the relay's 410 when it posts a part or
// renews the lease. context.Cause(r.Context()) is then an *Error with
// status 410 (errors.Is(err, ErrCancelled) for a withdrawn one, ErrGone
// for any), and Write and Flush return it.
//
// Network errors and relay errors that may pass (5xx, 429, 408) are
// retried with WithBackoff's delays (250 ms doubling to 30 s): the poll
// for requests until ctx ends, an answer or a part (with the same offset)
// WithRetries times (9), after which the answer is given up and logged,
// and the relay hands the request out again when its lease runs out. A
// refusal that will not pass (a bad net, a missing key, ErrWrongKey) ends
// Serve with that *Error.
func Serve(ctx context.Context, relayURL, net, key string, h http.Handler, opts ...Option) error {
	o := newOptions(opts)
	s := &server{relay: newRelay(relayURL, o.httpClient), net: net, key: key, h: h, o: o,
		slots: make(chan struct{}, o.concurrency), batch: newBatch()}
	s.watch = newWatcher(s)
	return s.run(ctx)
}

type server struct {
	relay
	net, key string
	h        http.Handler
	o        options
	slots    chan struct{} // one per running handler or request being polled for, but streams
	running  sync.WaitGroup
	watch    *watcher
	parts    partLimit
	batch    *batch // the answers that go with the next poll
}

// leased is one request from pullreqsmart.
type leased struct {
	RID    string          `json:"rid"`
	SimReq json.RawMessage `json:"sim_req"`
	From   string          `json:"from"`
	Remote string          `json:"remote_addr"`
}

func (s *server) run(ctx context.Context) error {
	// Handlers answer after ctx ends: their context is cut off from it and
	// cancelled only when the grace period after ctx is over.
	hctx, hcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hcancel()
	// The watch runs while any handler does: until they have all ended.
	wctx, wcancel := context.WithCancel(hctx)
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		s.watch.run(wctx)
	}()
	defer func() {
		wcancel()
		<-watching
	}()
	err := s.loop(ctx, hctx)

	finished := make(chan struct{})
	go func() {
		s.running.Wait()
		close(finished)
	}()
	grace := time.NewTimer(stopGrace)
	defer grace.Stop()
	select {
	case <-finished:
	case <-grace.C:
		hcancel()
		<-finished
	}
	return err
}

// loop polls for requests while a slot is free and starts their handlers;
// it returns ctx.Err() or a fatal relay error. Each poll carries the
// answers ready when it goes out (batch); after starting handlers, it
// lingers for them to finish, so that their answers go with the next.
func (s *server) loop(ctx, hctx context.Context) error {
	bo := s.o.backoff()
	var carry []*answer // a failed poll's answers: they go again with the next
	bare := false       // the next poll carries no answers
	var round chan struct{}
	started := 0 // handlers of the last poll's requests; each sends on round once it frees its slot
	defer func() {
		// Nothing waits for a poll any more: the handlers post by pushres.
		for _, a := range append(carry, s.batch.take()...) {
			a.handBack(nil)
		}
	}()
	for {
		if len(carry) == 0 && !bare {
			s.batch.collect()
		}
		s.linger(ctx, round, started)
		// Wait for one free slot, then take every other free one.
		select {
		case s.slots <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		n := 1
	take:
		for n < min(cap(s.slots), maxPerPoll) {
			select {
			case s.slots <- struct{}{}:
				n++
			default:
				break take
			}
		}

		sent := append(carry, s.batch.take()...)
		carry, bare = nil, false
		reqs, outs, retryAfter, err := s.poll(ctx, n, sent)
		if len(sent) > 0 {
			carry, bare = s.settle(ctx, sent, outs, err)
		}
		if err == nil {
			s.batch.collect() // before the handlers start: a quick one is done at once
		}
		for range n - len(reqs) {
			<-s.slots
		}
		round, started = make(chan struct{}, len(reqs)), len(reqs)
		for _, req := range reqs {
			s.running.Add(1)
			go s.handle(hctx, req, round)
		}
		if err == nil {
			bo.reset()
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if bare {
			continue // refused with answers: whether it is fatal, a poll without them tells
		}
		if !transient(ctx, err) {
			return err
		}
		s.o.log(slog.LevelWarn, "polling for requests: retrying", err, "net", s.net)
		if !sleep(ctx, bo.next(retryAfter)) {
			return ctx.Err()
		}
	}
}

// linger waits until the n handlers started from the last poll have each
// freed their slot (round), at most the linger, so that their answers go
// with the next poll.
func (s *server) linger(ctx context.Context, round <-chan struct{}, n int) {
	if n == 0 || s.o.linger <= 0 || !s.batch.enabled() {
		return
	}
	t := time.NewTimer(s.o.linger)
	defer t.Stop()
	for range n {
		select {
		case <-round:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// poll long-polls pullreqsmart for at most n requests, posting answers
// first (if any), and returns the requests and the answers' outcomes.
func (s *server) poll(ctx context.Context, n int, answers []*answer) ([]leased, []answerOutcome, time.Duration, error) {
	var out struct {
		Requests []leased        `json:"requests"`
		Answers  []answerOutcome `json:"answers"`
	}
	body := map[string]any{"net": s.net, "wait": seconds(s.o.wait), "max": n, "lease": seconds(s.o.lease)}
	if s.o.preflights {
		body["preflight"] = true
	}
	if len(answers) > 0 {
		body["answers"] = answers
		body["wait"] = seconds(s.batch.wait(s.o.wait))
	}
	_, retryAfter, err := s.call(ctx, "/api/v1/server/pullreqsmart", s.key, body, &out)
	if err != nil {
		return nil, nil, retryAfter, err
	}
	if len(out.Requests) > n { // never more than asked: each needs a slot
		out.Requests = out.Requests[:n]
	}
	return out.Requests, out.Answers, retryAfter, nil
}

// handle runs the handler on one request, keeps its lease while it runs,
// posts the answer and frees the request's slot: when the handler returns,
// or when its answer becomes a stream or waits for the next poll, which
// hold no slot; then it sends on round. The handler's context ends when
// the relay withdraws the request (watch, or a 410 from extend, pushres or
// pushpart), or when Serve's grace period is over.
func (s *server) handle(hctx context.Context, l leased, round chan<- struct{}) {
	defer s.running.Done()
	slot := true
	free := func() {
		if slot {
			slot = false
			<-s.slots
			round <- struct{}{}
		}
	}
	defer free()
	ctx, cancel := context.WithCancelCause(hctx)
	defer cancel(nil)

	var withPoll atomic.Bool // the answer waits with a poll: the lease is not renewed
	w := &responseWriter{s: s, ctx: ctx, cancel: cancel, rid: l.RID, header: http.Header{}, freeSlot: free, withPoll: &withPoll}
	req, err := s.request(ctx, l)
	if err != nil {
		s.o.log(slog.LevelError, "a request that is no HTTP request: answering 400", err, "net", s.net, "rid", l.RID)
		w.header.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte("bad request"))
		_ = w.push(true)
		return
	}
	unwatch := s.watch.add(l.RID, cancel)
	stop := s.keepLease(ctx, l.RID, cancel, &withPoll)
	defer stop() // the lease is kept while the answer's last part is posted
	panicked := s.serveOne(w, req)
	unwatch() // from here on only the answer's own calls end the request
	switch {
	case w.failed() != nil: // withdrawn, refused, or past the grace period
	case panicked && w.head:
		stop() // no renewal after the abort's short lease
		w.abort()
	case panicked:
		*w = responseWriter{s: s, ctx: ctx, cancel: cancel, rid: l.RID, header: http.Header{}, freeSlot: free, withPoll: &withPoll}
		w.header.Set("Content-Type", "text/plain; charset=utf-8")
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = w.Write([]byte("internal server error"))
		_ = w.push(true)
	default:
		_ = w.push(true)
	}
}

// keepLease renews the lease on rid every lease/2 until the returned stop
// is called; stop returns once no renewal is in flight. A lost lease (409)
// is not an error here: the answer tells whether it still counts. A
// withdrawn request (410) ends the handler's context through cancel. While
// withPoll is set, the answer has gone with a poll that has not replied
// yet: as far as Serve knows the request is answered, and the relay would
// refuse the renewal (409, or 404 for a /via/ request it has forgotten).
func (s *server) keepLease(ctx context.Context, rid string, cancel context.CancelCauseFunc, withPoll *atomic.Bool) (stop func()) {
	ctx, stopCtx := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(s.o.lease / 2)
		defer t.Stop()
		for {
			select {
			case <-t.C:
			case <-ctx.Done():
				return
			}
			if withPoll.Load() {
				continue
			}
			body := map[string]any{"net": s.net, "rid": rid, "lease": seconds(s.o.lease)}
			_, _, err := s.call(ctx, "/api/v1/server/extend", s.key, body, nil)
			var e *Error
			switch {
			case err == nil || ctx.Err() != nil:
			case errors.As(err, &e) && e.Status == http.StatusGone:
				cancel(e)
				return
			case errors.As(err, &e) && e.Status == http.StatusConflict:
			default:
				s.o.log(slog.LevelWarn, "renewing a lease", err, "net", s.net, "rid", rid)
			}
		}
	}()
	return func() {
		stopCtx()
		<-done
	}
}

// serveOne runs the handler on req and reports whether it panicked.
func (s *server) serveOne(w *responseWriter, req *http.Request) (panicked bool) {
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler { // silent, as net/http keeps it
				s.o.log(slog.LevelError, "handler panicked: answering 500", fmt.Errorf("panic: %v", p),
					"net", s.net, "rid", w.rid, "method", req.Method, "path", req.URL.Path, "stack", string(debug.Stack()))
			}
			panicked = true
		}
	}()
	s.h.ServeHTTP(w, req)
	return false
}

// request maps a leased sim_req to the *http.Request the handler gets
// (simhttp): as a web server would have, with the caller's address.
func (s *server) request(ctx context.Context, l leased) (*http.Request, error) {
	var m simhttp.Request
	if err := json.Unmarshal(l.SimReq, &m); err != nil {
		return nil, fmt.Errorf("sim_req is not a JSON object: %w", err)
	}
	req, err := m.HTTPRequest()
	if err != nil {
		return nil, err
	}
	if req.Host == "" { // a SimClient's own sim_req may name none
		if u, err := url.Parse(s.base); err == nil {
			req.Host = u.Host
		}
	}
	req = req.WithContext(ctx)
	req.Header.Del(headerFrom) // only the relay's word counts: no spoofing
	req.Header.Del(headerRID)
	req.Header.Set(headerFrom, l.From)
	req.Header.Set(headerRID, l.RID)
	req.RemoteAddr = l.Remote
	if req.RemoteAddr == "" { // a relay that does not tell
		req.RemoteAddr = l.From
	}
	return req, nil
}

// post makes a JSON server call, retrying what may pass (retry). A
// pushres whose first try may have been committed (its reply was lost)
// is refused when tried again as answered before (postedBefore): that
// counts as done.
func (s *server) post(ctx context.Context, path string, body, out any) error {
	return s.postFrom(ctx, newTries(), path, body, out)
}

// postFrom is post for a call whose tries began before (t): an answer
// that went with a poll.
func (s *server) postFrom(ctx context.Context, t *tries, path string, body, out any) error {
	return s.retryFrom(ctx, t, func() (time.Duration, error) {
		_, retryAfter, err := s.call(ctx, path, s.key, body, out)
		if t.tried && postedBefore(err) {
			return 0, nil
		}
		t.tried = true
		return retryAfter, err
	})
}

// postedBefore reports whether err, the relay's refusal of an answer
// posted again after a try whose reply was lost, says that try posted it:
// 409 already_answered, or 404 not_found for a synchronous /via/ request
// held in memory, which the relay forgets a while after its caller has
// the answer (when its lease would have ended), or loses when it dies
// (then its caller's connection drops too: there is nobody to answer). A
// request the relay still holds is never 404.
func postedBefore(err error) bool {
	var e *Error
	return errors.As(err, &e) && (e.Code == "already_answered" || e.Status == http.StatusNotFound && e.Code == "not_found")
}

// tries is where the tries of one call stand: how many failed, and
// whether one did (the relay may have written it all the same).
type tries struct {
	failed int
	tried  bool
}

func newTries() *tries { return &tries{} }

// retry runs call until it succeeds, fails for good, or has been tried
// WithRetries+1 times (network errors, 5xx, 429: backoff between tries).
func (s *server) retry(ctx context.Context, call func() (retryAfter time.Duration, err error)) error {
	return s.retryFrom(ctx, newTries(), call)
}

// retryFrom is retry for tries of which t.failed have failed before.
func (s *server) retryFrom(ctx context.Context, t *tries, call func() (retryAfter time.Duration, err error)) error {
	for {
		retryAfter, err := call()
		if err == nil || !transient(ctx, err) || t.failed >= s.o.retries {
			return err
		}
		if !sleep(ctx, s.o.backoffAfter(t.failed, retryAfter)) {
			return ctx.Err()
		}
		t.failed++
	}
}

// standIn is the sim_res that answers rid in place of one the relay
// refused with err: too large (413) or not an answer it can write (a
// status past 599, a header it refuses). The caller hears so at once, and
// the request is answered, so it is not handed out again.
func (s *server) standIn(rid string, err error) (simhttp.Response, bool) {
	var e *Error
	if !errors.As(err, &e) || e.Status != http.StatusRequestEntityTooLarge && e.Code != "invalid_sim_res" {
		return simhttp.Response{}, false
	}
	if e.Status == http.StatusRequestEntityTooLarge {
		// Only when even the smallest part is refused: the headers are.
		s.o.log(slog.LevelError, "the relay refused an answer as too large: answering 502", err, "net", s.net, "rid", rid)
		return jsonError(http.StatusBadGateway, "response_too_large",
			"the SimServer's answer is larger than the relay accepts (--max-body)"), true
	}
	s.o.log(slog.LevelError, "the relay refused an answer: answering 502", err, "net", s.net, "rid", rid)
	return jsonError(http.StatusBadGateway, "invalid_response", "the SimServer's answer is not a valid HTTP response"), true
}

// jsonError is a sim_res in the relay's error shape.
func jsonError(status int, code, message string) simhttp.Response {
	body, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": message}})
	return simhttp.FromResponse(status, http.Header{"Content-Type": {"application/json"}}, body)
}
