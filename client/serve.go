// Serve: an http.Handler as the SimServer of a net. It long-polls the relay
// for requests, runs the handler on each, renews leases while it runs, and
// posts the answers.

package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"runtime/debug"
	"sync"
	"time"

	"github.com/c2cvia/c2cvia/internal/simhttp"
)

const (
	// stopGrace is how long handlers still running when Serve's context ends
	// have to finish and answer before their own context is cancelled.
	stopGrace = 5 * time.Second
	// answerRetry is how long Serve retries posting an answer the relay
	// could not take (a network error, 5xx, 429). Past it the request is
	// handed out again when its lease runs out.
	answerRetry = time.Minute
	// maxPerPoll is the relay's limit on requests per pullreqsmart.
	maxPerPoll = 100
)

// Serve makes h the SimServer of net on the relay at relayURL, with key as
// the net's key (the first server call with a key claims an unclaimed net).
// An answer too large for the relay (over its --max-body after base64)
// reaches the caller at once as a 502 with the code response_too_large,
// one the relay cannot write (a status past 599, a header value with a
// control character) as a 502 invalid_response; the handler does not run
// again for it.
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
// 500 "internal server error"; the panic goes to the error log (a panic
// with http.ErrAbortHandler answers the same, unreported, as net/http keeps
// it quiet).
//
// Network errors and relay errors that may pass (5xx, 429) are retried
// with backoff. A refusal that will not pass (a bad net, a missing or
// wrong key) ends Serve with that *Error.
func Serve(ctx context.Context, relayURL, net, key string, h http.Handler, opts ...Option) error {
	o := newOptions(opts)
	s := &server{relay: newRelay(relayURL, o.httpClient), net: net, key: key, h: h, o: o,
		slots: make(chan struct{}, o.concurrency)}
	return s.run(ctx)
}

type server struct {
	relay
	net, key string
	h        http.Handler
	o        options
	slots    chan struct{} // one per running handler or request being polled for
	running  sync.WaitGroup
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
// it returns ctx.Err() or a fatal relay error.
func (s *server) loop(ctx, hctx context.Context) error {
	var bo backoff
	for {
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

		reqs, retryAfter, err := s.poll(ctx, n)
		for range n - len(reqs) {
			<-s.slots
		}
		for _, req := range reqs {
			s.running.Add(1)
			go s.handle(hctx, req)
		}
		if err == nil {
			bo.reset()
			continue
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if !transient(ctx, err) {
			return err
		}
		s.o.onError(fmt.Errorf("c2cvia: polling net %s for requests: %w", s.net, err))
		if !sleep(ctx, max(bo.next(), retryAfter)) {
			return ctx.Err()
		}
	}
}

// poll long-polls pullreqsmart for at most n requests.
func (s *server) poll(ctx context.Context, n int) ([]leased, time.Duration, error) {
	var out struct {
		Requests []leased `json:"requests"`
	}
	body := map[string]any{"net": s.net, "wait": seconds(s.o.wait), "max": n, "lease": seconds(s.o.lease)}
	if s.o.preflights {
		body["preflight"] = true
	}
	_, retryAfter, err := s.call(ctx, "/api/v1/server/pullreqsmart", s.key, body, &out)
	if len(out.Requests) > n { // never more than asked: each needs a slot
		out.Requests = out.Requests[:n]
	}
	return out.Requests, retryAfter, err
}

// handle runs the handler on one request, keeps its lease while it runs,
// posts the answer and frees the request's slot.
func (s *server) handle(ctx context.Context, l leased) {
	defer s.running.Done()
	defer func() { <-s.slots }()

	stop := s.keepLease(ctx, l.RID)
	res := s.serveOne(ctx, l)
	stop()
	s.answer(ctx, l.RID, res)
}

// keepLease renews the lease on rid every lease/2 until the returned stop
// is called; stop returns once no renewal is in flight. A lost lease (409)
// is not an error here: the answer tells whether it still counts.
func (s *server) keepLease(ctx context.Context, rid string) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
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
			body := map[string]any{"net": s.net, "rid": rid, "lease": seconds(s.o.lease)}
			_, _, err := s.call(ctx, "/api/v1/server/extend", s.key, body, nil)
			var e *Error
			if err != nil && ctx.Err() == nil && !(errors.As(err, &e) && e.Status == http.StatusConflict) {
				s.o.onError(fmt.Errorf("c2cvia: renewing the lease on %s: %w", rid, err))
			}
		}
	}()
	return func() {
		cancel()
		<-done
	}
}

// serveOne runs the handler on l and returns the sim_res to post.
func (s *server) serveOne(ctx context.Context, l leased) (res simhttp.Response) {
	req, err := s.request(ctx, l)
	if err != nil {
		s.o.onError(fmt.Errorf("c2cvia: request %s: %w", l.RID, err))
		return plainResponse(http.StatusBadRequest, "bad request")
	}
	rec := &recorder{header: http.Header{}}
	defer func() {
		if p := recover(); p != nil {
			if p != http.ErrAbortHandler { // silent, as net/http keeps it
				s.o.onError(fmt.Errorf("c2cvia: panic serving %s %s (rid %s): %v\n%s", req.Method, req.URL.Path, l.RID, p, debug.Stack()))
			}
			res = plainResponse(http.StatusInternalServerError, "internal server error")
		}
	}()
	s.h.ServeHTTP(rec, req)
	return rec.simRes()
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

// answer posts res for rid, retrying what may pass for up to answerRetry.
// A refusal (409 already answered or lease lost, 404, 410) is reported.
func (s *server) answer(ctx context.Context, rid string, res simhttp.Response) {
	body := map[string]any{"net": s.net, "rid": rid, "sim_res": res}
	fallback := false // res is the 502 that stands in for a refused answer
	var bo backoff
	deadline := time.Now().Add(answerRetry)
	for {
		_, retryAfter, err := s.call(ctx, "/api/v1/server/pushres", s.key, body, nil)
		if err == nil {
			return
		}
		var e *Error
		if errors.As(err, &e) && !fallback && (e.Status == http.StatusRequestEntityTooLarge || e.Code == "invalid_sim_res") {
			// Too large for the relay, or not an answer it can write (a
			// status past 599, a header it refuses): the caller hears so
			// now, and the request is answered, so it is not handed out
			// again.
			s.o.onError(fmt.Errorf("c2cvia: answering %s: %w", rid, err))
			res = jsonError(http.StatusBadGateway, "invalid_response", "the SimServer's answer is not a valid HTTP response")
			if e.Status == http.StatusRequestEntityTooLarge {
				res = jsonError(http.StatusBadGateway, "response_too_large",
					"the SimServer's answer is larger than the relay accepts (--max-body)")
			}
			body["sim_res"], fallback = res, true
			continue
		}
		if !transient(ctx, err) || time.Now().After(deadline) {
			s.o.onError(fmt.Errorf("c2cvia: answering %s: %w", rid, err))
			return
		}
		if !sleep(ctx, max(bo.next(), retryAfter)) {
			s.o.onError(fmt.Errorf("c2cvia: answering %s: %w", rid, ctx.Err()))
			return
		}
	}
}

// plainResponse is a text/plain sim_res.
func plainResponse(status int, text string) simhttp.Response {
	return simhttp.FromResponse(status, http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, []byte(text))
}

// jsonError is a sim_res in the relay's error shape.
func jsonError(status int, code, message string) simhttp.Response {
	body, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": message}})
	return simhttp.FromResponse(status, http.Header{"Content-Type": {"application/json"}}, body)
}

// recorder is the http.ResponseWriter a handler writes to: it keeps the
// status, headers and body for the sim_res. As in net/http, the headers
// are fixed by the first WriteHeader or Write, a second WriteHeader is
// ignored, and a missing Content-Type is sniffed from the body.
type recorder struct {
	header  http.Header
	sent    http.Header // the headers as of WriteHeader
	status  int
	body    bytes.Buffer
	written bool
}

func (w *recorder) Header() http.Header { return w.header }

func (w *recorder) WriteHeader(code int) {
	if code < 100 || code > 999 {
		panic(fmt.Sprintf("invalid WriteHeader code %v", code)) // as net/http
	}
	if w.written || code < 200 { // informational headers do not travel
		return
	}
	w.written = true
	w.status = code
	w.sent = w.header.Clone()
}

func (w *recorder) Write(b []byte) (int, error) {
	if !w.written {
		w.WriteHeader(http.StatusOK)
	}
	if simhttp.Bodyless("", w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	return w.body.Write(b)
}

// Flush does nothing: the answer goes out whole when the handler returns.
func (w *recorder) Flush() {}

func (w *recorder) simRes() simhttp.Response {
	if !w.written {
		w.WriteHeader(http.StatusOK)
	}
	body := w.body.Bytes()
	if _, ok := w.sent["Content-Type"]; !ok && len(body) > 0 {
		w.sent.Set("Content-Type", http.DetectContentType(body))
	}
	return simhttp.FromResponse(w.status, w.sent, body)
}
