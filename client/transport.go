// The RoundTripper behind Session.HTTPClient: each request becomes a sim_req
// (pushreq), and its sim_res, long-polled with pullsmart, the response.

package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
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

// push stores req as a sim_req and returns its rid.
func (t *transport) push(ctx context.Context, req *http.Request, body []byte) (string, error) {
	method := req.Method
	if method == "" {
		method = http.MethodGet // as net/http reads ""
	}
	endpoint := req.URL.EscapedPath()
	if endpoint == "" {
		endpoint = "/"
	}
	query := map[string]any{}
	for k, vals := range req.URL.Query() {
		if len(vals) == 1 {
			query[k] = vals[0]
		} else {
			query[k] = vals
		}
	}
	sim := outgoing{Endpoint: endpoint, Method: method, Headers: simHeaders(req.Header), Query: query,
		Route: map[string]any{}}
	sim.Body, sim.Encoding = encodeRequestBody(req.Header.Get("Content-Type"), body)
	var out struct {
		RID string `json:"rid"`
	}
	_, _, err := t.s.call(ctx, "/api/v1/client/pushreq", t.s.Token, map[string]any{"sim_req": sim}, &out)
	return out.RID, err
}

// wait long-polls pullsmart until rid is answered, failed or expired.
func (t *transport) wait(ctx context.Context, rid string) (*simMessage, error) {
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
			var m simMessage
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

// response maps a sim_res to the *http.Response for req.
func response(req *http.Request, m *simMessage) (*http.Response, error) {
	status := m.Status
	if status == 0 {
		status = http.StatusOK
	}
	if status < 200 || status > 999 {
		return nil, &Error{Status: http.StatusBadGateway, Code: "bad_gateway",
			Message: fmt.Sprintf("the SimServer answered %d, which is not a final HTTP status", status)}
	}
	header := httpHeader(m.Headers)
	header.Del("Content-Length")
	body, err := decodeBody(m, header, false)
	if err != nil {
		return nil, fmt.Errorf("c2cvia: the answer's body: %w", err)
	}
	if bodyless(status) {
		body = nil
	}
	length := int64(len(body))
	if req.Method == http.MethodHead { // the length of what GET would get
		body = nil
	}
	resp := &http.Response{
		Status:     statusLine(status),
		StatusCode: status,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     header,
		Body:       http.NoBody,
		Request:    req,
	}
	if len(body) > 0 {
		resp.Body = io.NopCloser(bytes.NewReader(body))
	}
	resp.ContentLength = length
	if !bodyless(status) {
		header.Set("Content-Length", strconv.FormatInt(length, 10))
	}
	return resp, nil
}
