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
	"net/http"
	"strconv"

	"github.com/c2cvia/c2cvia/internal/simhttp"
)

// maxPollFailures is how many network or 5xx failures in a row a waiting
// request survives: the request is stored, so polling again is safe, but a
// relay that stays away must not keep a caller without a deadline forever.
const maxPollFailures = 5

type transport struct{ s *Session }

// RoundTrip sends req through the relay and waits for the SimServer's
// answer, for as long as req's context allows.
func (t *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	body, err := readBody(req.Body)
	if err != nil {
		return nil, err
	}
	ctx := req.Context()
	rid, err := t.push(ctx, req, body)
	if err != nil {
		return nil, err
	}
	res, err := t.wait(ctx, rid)
	if err != nil {
		return nil, err
	}
	return response(req, res)
}

// push stores req as a sim_req and returns its rid. Host and
// Content-Length travel as net/http's transport would send them: the
// request's host, and the body's length (0 for an empty POST, PUT or PATCH).
func (t *transport) push(ctx context.Context, req *http.Request, body []byte) (string, error) {
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
	switch method {
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		h.Set("Content-Length", strconv.Itoa(len(body)))
	default:
		if len(body) > 0 {
			h.Set("Content-Length", strconv.Itoa(len(body)))
		}
	}
	sim := simhttp.FromRequest(method, target, host, h, body)
	var out struct {
		RID string `json:"rid"`
	}
	_, _, err := t.s.call(ctx, "/api/v1/client/pushreq", t.s.Token, map[string]any{"sim_req": sim}, &out)
	return out.RID, err
}

// wait long-polls pullsmart until rid is answered, failed or expired.
func (t *transport) wait(ctx context.Context, rid string) (*simhttp.Response, error) {
	var bo backoff
	failures := 0
	for {
		var out struct {
			SimRes json.RawMessage `json:"sim_res"`
		}
		body := map[string]any{"rid": rid, "wait": seconds(t.s.o.wait)}
		status, retryAfter, err := t.s.call(ctx, "/api/v1/client/pullsmart", t.s.Token, body, &out)
		switch {
		case err == nil && status == http.StatusOK:
			var m simhttp.Response
			if err := json.Unmarshal(out.SimRes, &m); err != nil {
				return nil, fmt.Errorf("c2cvia: the answer to %s is not a sim_res: %w", rid, err)
			}
			return &m, nil
		case err == nil: // 202: not answered yet
			bo.reset()
			failures = 0
			continue
		case !transient(ctx, err):
			return nil, err
		}
		if failures++; failures >= maxPollFailures {
			return nil, err
		}
		if !sleep(ctx, max(bo.next(), retryAfter)) {
			return nil, ctx.Err()
		}
	}
}

// response maps a sim_res to the *http.Response for req, following RFC
// 9110's body rules as the gateway does (simhttp).
func response(req *http.Request, m *simhttp.Response) (*http.Response, error) {
	status, header, body, err := m.HTTPResponse(req.Method)
	if nf := (*simhttp.NotFinalError)(nil); errors.As(err, &nf) {
		return nil, &Error{Status: http.StatusBadGateway, Code: "bad_gateway", Message: nf.Error()}
	} else if err != nil {
		return nil, fmt.Errorf("c2cvia: the answer: %w", err)
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
	return resp, nil
}
