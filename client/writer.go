// The http.ResponseWriter of a Serve handler: it buffers the answer and
// posts it whole when the handler returns, or in parts (a stream) once the
// handler flushes or the body outgrows one part (docs/API.md, "Streamed
// answers and cancellation").

package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/c2cvia/c2cvia/internal/simhttp"
)

const (
	// partSize is the most body bytes one part carries (512 KiB), and what
	// a body may grow to before it goes out as a stream: half the relay's
	// default --max-body (1 MiB), so that a part and the head's base64 fit.
	partSize = 512 << 10
	// minPartSize is where halving a part the relay refused as too large
	// (413, a relay with a smaller --max-body) stops.
	minPartSize = 4 << 10
)

// partLimit is the part size of one Serve: partSize until the relay
// refuses a part as too large, then halved, for every later part too.
type partLimit struct{ n atomic.Int64 }

func (p *partLimit) get() int {
	if n := p.n.Load(); n > 0 {
		return int(n)
	}
	return partSize
}

// shrink halves the limit below a part of n bytes that the relay refused;
// false when it cannot shrink further.
func (p *partLimit) shrink(n int) bool {
	if n <= minPartSize {
		return false
	}
	for {
		cur := p.n.Load()
		next := int64(max(n/2, minPartSize))
		if cur > 0 && cur <= next || p.n.CompareAndSwap(cur, next) {
			return true
		}
	}
}

// responseWriter is the http.ResponseWriter a handler writes to. As in
// net/http, the headers are fixed by the first WriteHeader, Write or
// Flush, a second WriteHeader is ignored, and a missing Content-Type is
// sniffed from the first bytes. The body is buffered until the handler
// returns (one whole pushres), its first Flush, or until it reaches the
// part size: then the head goes out as a pushres with more, and every
// later Flush, every full part and the handler's return as a pushpart.
type responseWriter struct {
	s      *server
	ctx    context.Context // the handler's: relay calls end with it
	cancel context.CancelCauseFunc
	rid    string

	header  http.Header
	sent    http.Header // the headers as of WriteHeader
	status  int
	written bool
	buf     []byte // body bytes not posted yet

	head     bool         // the head is posted: the answer is a stream
	offset   int64        // body bytes the relay has committed
	err      error        // why nothing more can be posted; Write and FlushError return it
	freeSlot func()       // frees the handler's slot: its answer is a stream, or waits for the next poll
	withPoll *atomic.Bool // set while the answer waits with a poll: the lease is not renewed
}

func (w *responseWriter) Header() http.Header { return w.header }

func (w *responseWriter) WriteHeader(code int) {
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

// Write buffers b and posts the buffer as parts of the answer whenever it
// reaches the part size. It fails with the reason once the answer cannot
// be posted any more: the request was withdrawn (an *Error with status
// 410, also context.Cause of the request's context), or the relay refused
// a part.
func (w *responseWriter) Write(b []byte) (int, error) {
	if !w.written {
		w.WriteHeader(http.StatusOK)
	}
	if simhttp.Bodyless("", w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if err := w.failed(); err != nil {
		return 0, err
	}
	n := 0
	for len(b) > 0 {
		k := min(len(b), max(w.s.parts.get()-len(w.buf), 1))
		w.buf = append(w.buf, b[:k]...)
		b, n = b[k:], n+k
		if len(w.buf) >= w.s.parts.get() {
			if err := w.push(false); err != nil {
				return n, err
			}
		}
	}
	return n, nil
}

// Flush posts what the handler has written so far: the first one makes the
// answer a stream. Use FlushError (or http.ResponseController) to learn
// whether it was posted.
func (w *responseWriter) Flush() { _ = w.FlushError() }

// FlushError is Flush that returns why the answer could not be posted:
// the request was withdrawn by its caller (an *Error with status 410), the
// relay refused the part, or the request's context ended. It is what
// http.ResponseController.Flush calls.
func (w *responseWriter) FlushError() error {
	if !w.written {
		w.WriteHeader(http.StatusOK)
	}
	if err := w.failed(); err != nil {
		return err
	}
	return w.push(false)
}

// failed is the writer's error, or the cause of its context's end.
func (w *responseWriter) failed() error {
	if w.err == nil && w.ctx.Err() != nil {
		w.err = context.Cause(w.ctx)
	}
	return w.err
}

// push posts the buffered body: as one whole answer when final and no
// part has gone out yet, else as the head (the first time) and parts of at
// most the part size, the last one with last when final.
func (w *responseWriter) push(final bool) error {
	for {
		n := min(len(w.buf), w.s.parts.get())
		last := final && n == len(w.buf)
		if w.head && n == 0 && !last {
			return nil
		}
		var err error
		switch {
		case !w.head && last:
			err = w.postWhole()
		case !w.head:
			err = w.postHead(n)
		default:
			err = w.postPart(n, last)
		}
		var e *Error
		if errors.As(err, &e) && e.Status == http.StatusRequestEntityTooLarge && w.s.parts.shrink(n) {
			continue // the relay takes smaller parts: post this one again, in pieces
		}
		if err != nil && !w.head {
			err = w.standIn(err)
		}
		if err != nil {
			return w.fail(err)
		}
		w.buf = w.buf[:copy(w.buf, w.buf[n:])]
		if last || len(w.buf) == 0 && !final {
			return nil
		}
	}
}

// fail records err as the writer's error and ends the handler's context
// with it, as net/http does when the connection breaks: the answer cannot
// reach its caller any more. A withdrawn request (410 cancelled) or an
// ended context is no news; anything else is logged at Error.
func (w *responseWriter) fail(err error) error {
	if w.ctx.Err() != nil {
		err = context.Cause(w.ctx)
	} else {
		var e *Error
		if err != errRefused && (!errors.As(err, &e) || e.Status != http.StatusGone || e.Code != "cancelled") {
			w.s.o.log(slog.LevelError, "answering: giving up", err, "net", w.s.net, "rid", w.rid)
		}
		w.cancel(err)
	}
	w.err = err
	return err
}

// simRes is the sim_res of the head: status, the headers as of
// WriteHeader (with a sniffed Content-Type) and body.
func (w *responseWriter) simRes(body []byte) simhttp.Response {
	if !w.written {
		w.WriteHeader(http.StatusOK)
	}
	if _, ok := w.sent["Content-Type"]; !ok && len(body) > 0 {
		w.sent.Set("Content-Type", http.DetectContentType(body))
	}
	return simhttp.FromResponse(w.status, w.sent, body)
}

// postWhole posts the buffer as the whole answer: with the next poll when
// it is small and the poll loop is about to poll (batch.offer), else, or
// when the poll hands it back, by pushres. Either way its outcome is what
// pushres's would be.
func (w *responseWriter) postWhole() error {
	simRes, err := marshal(w.simRes(w.buf))
	if err != nil {
		return err
	}
	t := newTries()
	if a := w.s.batch.offer(w.rid, simRes); a != nil {
		w.free()
		w.withPoll.Store(true)
		var o outcome
		select {
		case o = <-a.done:
		case <-w.ctx.Done():
			return context.Cause(w.ctx)
		}
		if !o.alone {
			return o.err
		}
		w.withPoll.Store(false) // not posted yet: the lease counts again
		t.failed, t.tried = a.failed, a.tried
		if o.err != nil { // refused for now (507): tried again as pushres's would be
			if t.failed >= w.s.o.retries {
				return o.err
			}
			if !sleep(w.ctx, w.s.o.backoffAfter(t.failed, o.retryAfter)) {
				return context.Cause(w.ctx)
			}
			t.failed++
		}
	}
	body := map[string]any{"net": w.s.net, "rid": w.rid, "sim_res": json.RawMessage(simRes)}
	return w.s.postFrom(w.ctx, t, "/api/v1/server/pushres", body, nil)
}

// free frees the handler's slot, once.
func (w *responseWriter) free() {
	if w.freeSlot != nil {
		w.freeSlot()
		w.freeSlot = nil
	}
}

// postHead posts the head and the first n buffered bytes with more: from
// then on the answer is a stream, and the handler no longer holds a slot.
func (w *responseWriter) postHead(n int) error {
	body := map[string]any{"net": w.s.net, "rid": w.rid, "sim_res": w.simRes(w.buf[:n]),
		"more": true, "lease": seconds(w.s.o.lease)}
	if err := w.s.post(w.ctx, "/api/v1/server/pushres", body, nil); err != nil {
		return err
	}
	w.head, w.offset = true, int64(n)
	w.free()
	return nil
}

// standIn answers in place of an answer the relay refused with err (see
// server.standIn) and returns errRefused, or returns err when the relay
// did not refuse the answer itself.
func (w *responseWriter) standIn(err error) error {
	res, ok := w.s.standIn(w.rid, err)
	if !ok {
		return err
	}
	body := map[string]any{"net": w.s.net, "rid": w.rid, "sim_res": res}
	if err := w.s.post(w.ctx, "/api/v1/server/pushres", body, nil); err != nil {
		return err
	}
	return errRefused
}

// errRefused is the writer's error once a 502 stands in for an answer the
// relay refused.
var errRefused = errors.New("c2cvia: the relay refused the answer; its caller got a 502 instead")

// postPart posts the next n buffered bytes as a part, last or not.
func (w *responseWriter) postPart(n int, last bool) error {
	q := url.Values{"net": {w.s.net}, "rid": {w.rid}, "offset": {strconv.FormatInt(w.offset, 10)},
		"lease": {strconv.FormatFloat(seconds(w.s.o.lease), 'f', -1, 64)}}
	if last {
		q.Set("last", "true")
	}
	err := w.s.retry(w.ctx, func() (time.Duration, error) {
		_, retryAfter, err := w.s.relay.post(w.ctx, "/api/v1/server/pushpart?"+q.Encode(),
			"application/octet-stream", w.buf[:n], w.s.key, nil)
		return retryAfter, err
	})
	if err == nil {
		w.offset += int64(n)
	}
	return err
}

// abort ends a stream that cannot be completed (its handler panicked):
// its lease is cut to a millisecond (extend), so that the relay marks it
// aborted and its callers see the body end early, as a reverse proxy's
// callers do when its upstream dies mid-answer.
func (w *responseWriter) abort() {
	body := map[string]any{"net": w.s.net, "rid": w.rid, "lease": 0.001}
	_, _, _ = w.s.call(w.ctx, "/api/v1/server/extend", w.s.key, body, nil)
}
