// The RoundTripper behind Session.HTTPClient: each request becomes a sim_req
// (pushreq), and its sim_res, long-polled with pullsmart, the response.

package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/c2cvia/c2cvia/internal/simhttp"
)

type transport struct{ s *Session }

// RoundTrip sends req through the relay and waits for the SimServer's
// answer, for as long as req's context allows. A streamed answer's body
// reads on as the SimServer posts it (streamBody). A request whose context
// ends before its answer is complete is withdrawn (cancel), so that its
// handler stops. When the token expires while the answer is awaited, the
// session logs in again; a request that net/http would send again is
// pushed again under the new login, once.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := readBody(req.Body)
	if err != nil {
		return nil, err
	}
	ctx := req.Context()
	for again := false; ; again = true {
		rid, token, err := t.push(ctx, req, body)
		if err != nil {
			return nil, err
		}
		p, err := t.wait(ctx, rid, token)
		if err == nil {
			return t.response(req, rid, token, p)
		}
		if ctx.Err() != nil {
			t.cancel(ctx, rid, token)
		}
		if again || !tokenExpired(err) {
			return nil, err
		}
		if lerr := t.s.renew(ctx, token); lerr != nil {
			return nil, fmt.Errorf("%w; logging in again: %w", err, lerr)
		}
		if !replayable(req) {
			return nil, fmt.Errorf("c2cvia: %s %s: the login expired while the answer was awaited, and only the old token reads it; the session has logged in again: %w",
				req.Method, req.URL.Redacted(), err)
		}
	}
}

// replayable reports whether net/http would send req again on a new
// connection after the old one failed: its method is idempotent and
// safe, or it carries an idempotency key.
func replayable(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, key := req.Header["Idempotency-Key"]
	_, xkey := req.Header["X-Idempotency-Key"]
	return key || xkey
}

// push stores req as a sim_req and returns its rid and the token it was
// pushed with, which alone reads its answer. Refusals for now are retried,
// and so is a network error if req is replayable. When ctx ends while
// pushreq is in flight, it returns ctx's error at once, but the call goes
// on (for up to cancelTimeout): the relay may have stored the request,
// and only its rid lets it be withdrawn, which it then is.
func (t *transport) push(ctx context.Context, req *http.Request, body []byte) (rid, token string, err error) {
	sim := simRequest(req, body)
	type result struct {
		rid, token string
		err        error
	}
	pctx, pcancel := context.WithCancel(context.WithoutCancel(ctx))
	done := make(chan result, 1)
	go func() {
		defer pcancel()
		var out struct {
			RID string `json:"rid"`
		}
		_, token, err := t.s.authed(pctx, replayable(req), func(token string) (int, error) {
			if ctx.Err() != nil {
				return 0, ctx.Err() // no more tries for a caller that has gone
			}
			status, _, err := t.s.call(pctx, "/api/v1/client/pushreq", token, map[string]any{"sim_req": sim}, &out)
			return status, err
		})
		done <- result{out.RID, token, err}
	}()
	select {
	case r := <-done:
		return r.rid, r.token, r.err
	case <-ctx.Done():
		giveUp := time.AfterFunc(cancelTimeout, pcancel)
		go func() {
			r := <-done
			giveUp.Stop()
			if r.err == nil {
				t.cancel(ctx, r.rid, r.token)
			}
		}()
		return "", "", ctx.Err()
	}
}

// defaultUserAgent is the User-Agent net/http's transport sends for a
// request that has none.
const defaultUserAgent = "Go-http-client/1.1"

// simRequest is req's sim_req. Host, Content-Length and User-Agent travel
// as net/http's transport would send them: the request's host, the body's
// length (0 for an empty POST, PUT or PATCH), and Go-http-client/1.1 when
// the request has no User-Agent (an empty one sends none).
func simRequest(req *http.Request, body []byte) simhttp.Request {
	method := req.Method
	if method == "" {
		method = http.MethodGet // as net/http reads ""
	}
	target := simhttp.TargetOf(req.URL)
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	h := req.Header.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Del("Content-Length")
	if _, ok := h["User-Agent"]; !ok {
		h.Set("User-Agent", defaultUserAgent)
	} else if h.Get("User-Agent") == "" {
		h.Del("User-Agent") // as net/http: an empty one sends none
	}
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		h.Set("Content-Length", strconv.Itoa(len(body)))
	default:
		if len(body) > 0 {
			h.Set("Content-Length", strconv.Itoa(len(body)))
		}
	}
	return simhttp.FromRequest(method, target, host, h, body)
}

// pulled is a pullsmart reply for an answered request: its sim_res and,
// for a streamed answer, the stream's state and where the next read starts.
type pulled struct {
	SimRes json.RawMessage `json:"sim_res"`
	Stream string          `json:"stream"` // "" for an answer posted whole
	Offset int64           `json:"offset"`
}

// wait long-polls pullsmart with token until rid is answered (its first
// part, for a streamed answer), failed or expired.
func (t *transport) wait(ctx context.Context, rid, token string) (*pulled, error) {
	return t.pull(ctx, token, map[string]any{"rid": rid, "wait": seconds(t.s.o.wait)})
}

// pull calls pullsmart with token and body until it answers with a
// sim_res, retrying network errors and refusals for now up to WithRetries
// times in a row.
func (t *transport) pull(ctx context.Context, token string, body map[string]any) (*pulled, error) {
	bo := t.s.o.backoff()
	failures := 0
	for {
		var out pulled
		status, retryAfter, err := t.s.call(ctx, "/api/v1/client/pullsmart", token, body, &out)
		switch {
		case err == nil && len(out.SimRes) > 0:
			return &out, nil
		case err == nil && status == http.StatusOK:
			return nil, fmt.Errorf("c2cvia: the answer to %s came without a sim_res", body["rid"])
		case err == nil: // 202: not answered yet
			bo.reset()
			failures = 0
			continue
		case !transient(ctx, err):
			return nil, err
		}
		if failures++; failures > t.s.o.retries {
			return nil, err
		}
		if !sleep(ctx, bo.next(retryAfter)) {
			return nil, ctx.Err()
		}
	}
}

// cancel withdraws rid (POST cancel with token, the one it was pushed
// with), so that its handler stops, for up to cancelTimeout even though
// ctx has ended: its caller has gone on, and when cancel returns the
// request is withdrawn. An answer that is complete (409) or a request
// that is over (410) is no news; other failures are logged at Warn.
func (t *transport) cancel(ctx context.Context, rid, token string) {
	ctx, stop := context.WithTimeout(context.WithoutCancel(ctx), cancelTimeout)
	defer stop()
	_, _, err := t.s.call(ctx, "/api/v1/client/cancel", token, map[string]string{"rid": rid}, nil)
	var e *Error
	if err != nil && !(errors.As(err, &e) && (e.Status == http.StatusConflict || e.Status == http.StatusGone)) {
		t.s.o.log(slog.LevelWarn, "withdrawing a request", err, "net", t.s.net, "rid", rid)
	}
}

// response maps a pulled answer to the *http.Response for req, following
// RFC 9110's body rules as the gateway does (simhttp). A streamed answer
// keeps the Content-Length its SimServer declared (if any) and reads its
// body on from the relay.
func (t *transport) response(req *http.Request, rid, token string, p *pulled) (*http.Response, error) {
	var m simhttp.Response
	if err := json.Unmarshal(p.SimRes, &m); err != nil {
		return nil, fmt.Errorf("c2cvia: the answer to %s is not a sim_res: %w", rid, err)
	}
	resp, body, err := response(req, &m)
	if err != nil || p.Stream == "" {
		return resp, err
	}
	declared := int64(-1)
	if h, err := simhttp.ToHeader(m.Headers, m.HeadersEncoding); err == nil {
		if n, err := strconv.ParseInt(h.Get("Content-Length"), 10, 64); err == nil && n >= 0 {
			declared = n
		}
	}
	if simhttp.Bodyless(req.Method, resp.StatusCode) {
		if p.Stream != streamComplete {
			t.cancel(req.Context(), rid, token) // nobody reads the rest
		}
		return resp, nil
	}
	resp.Header.Del("Content-Length")
	resp.ContentLength = declared
	if declared >= 0 {
		resp.Header.Set("Content-Length", strconv.FormatInt(declared, 10))
	}
	resp.Body = newStreamBody(t, req.Context(), rid, token, body, p, declared)
	return resp, nil
}

// response maps a sim_res to the *http.Response for req, and returns its
// body's bytes apart too.
func response(req *http.Request, m *simhttp.Response) (*http.Response, []byte, error) {
	status, header, body, err := m.HTTPResponse(req.Method)
	if nf := (*simhttp.NotFinalError)(nil); errors.As(err, &nf) {
		return nil, nil, &Error{Status: http.StatusBadGateway, Code: "bad_gateway", Message: nf.Error()}
	} else if err != nil {
		return nil, nil, fmt.Errorf("c2cvia: the answer: %w", err)
	}
	resp := &http.Response{
		Status:        statusLine(status),
		StatusCode:    status,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        header,
		Body:          http.NoBody,
		ContentLength: -1,
		Request:       req,
	}
	if n, err := strconv.ParseInt(header.Get("Content-Length"), 10, 64); err == nil {
		resp.ContentLength = n
	} else if req.Method != http.MethodHead && simhttp.Bodyless(req.Method, status) {
		resp.ContentLength = 0
	}
	if len(body) > 0 {
		resp.Body = io.NopCloser(bytes.NewReader(body))
	}
	return resp, body, nil
}
