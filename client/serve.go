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
	"strings"
	"sync"
	"time"
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
// It runs until ctx is done and then returns ctx.Err(), after the handlers
// still running have answered: they get a context that ctx does not
// cancel, for a grace period of 5 s.
//
// Each request reaches h as an *http.Request with the method, escaped
// path, query, headers and body the caller sent; the header C2cvia-From
// (and r.RemoteAddr) is the caller's peer_id, "via" for the relay's
// gateway, and C2cvia-Rid the request's rid. A handler that panics answers
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
func (s *server) serveOne(ctx context.Context, l leased) (res outgoing) {
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

// request maps a leased sim_req to the *http.Request the handler gets.
func (s *server) request(ctx context.Context, l leased) (*http.Request, error) {
	var m simMessage
	if err := json.Unmarshal(l.SimReq, &m); err != nil {
		return nil, fmt.Errorf("sim_req is not a JSON object: %w", err)
	}
	u, err := url.Parse(s.base)
	if err != nil {
		return nil, err
	}
	endpoint := m.Endpoint
	if !strings.HasPrefix(endpoint, "/") {
		endpoint = "/" + endpoint
	}
	// The endpoint is an escaped path: /a%2Fb stays one segment.
	if u.Path, err = url.PathUnescape(endpoint); err != nil {
		u.Path = endpoint
	} else {
		u.RawPath = endpoint
	}
	q := url.Values{}
	for k, raw := range m.Query {
		for _, v := range stringList(raw, true) {
			q.Add(k, v)
		}
	}
	u.RawQuery = q.Encode()

	method := m.Method
	if method == "" {
		method = http.MethodPost
	}
	header := httpHeader(m.Headers)
	header.Del(headerFrom) // only the relay's word counts: no spoofing
	header.Del(headerRID)
	header.Del("Content-Length")
	body, err := decodeBody(&m, header, true)
	if err != nil {
		return nil, err
	}
	if method == http.MethodGet || method == http.MethodHead {
		body = nil
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	if len(body) == 0 {
		req.Body, req.GetBody, req.ContentLength = http.NoBody, nil, 0
	}
	req.URL = u // as built: keeps RawPath
	req.RequestURI = u.RequestURI()
	req.Header = header
	req.Header.Set(headerFrom, l.From)
	req.Header.Set(headerRID, l.RID)
	req.RemoteAddr = l.From
	return req, nil
}

// answer posts res for rid, retrying what may pass for up to answerRetry.
// A refusal (409 already answered or lease lost, 404, 410) is reported.
func (s *server) answer(ctx context.Context, rid string, res outgoing) {
	body := map[string]any{"net": s.net, "rid": rid, "sim_res": res}
	var bo backoff
	deadline := time.Now().Add(answerRetry)
	for {
		_, retryAfter, err := s.call(ctx, "/api/v1/server/pushres", s.key, body, nil)
		if err == nil {
			return
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
func plainResponse(status int, text string) outgoing {
	return outgoing{Status: status, Headers: map[string]any{"Content-Type": "text/plain; charset=utf-8"}, Body: text}
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
	if bodyless(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	return w.body.Write(b)
}

// Flush does nothing: the answer goes out whole when the handler returns.
func (w *recorder) Flush() {}

func (w *recorder) simRes() outgoing {
	if !w.written {
		w.WriteHeader(http.StatusOK)
	}
	body := w.body.Bytes()
	if _, ok := w.sent["Content-Type"]; !ok && len(body) > 0 {
		w.sent.Set("Content-Type", http.DetectContentType(body))
	}
	res := outgoing{Status: w.status, Headers: simHeaders(w.sent)}
	res.Body, res.Encoding = encodeResponseBody(w.sent.Get("Content-Type"), body)
	return res
}
