// The body of a streamed answer as an HTTPClient caller reads it: the bytes
// of the first pullsmart, then pullsmart with an offset, long-polling while
// the stream is open (docs/API.md, "Reading a stream").

package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/c2cvia/c2cvia/internal/simhttp"
)

// The states of a streamed answer, as pullsmart names them.
const (
	streamOpen      = "open"
	streamComplete  = "complete"
	streamAborted   = "aborted"
	streamCancelled = "cancelled"
)

// cancelTimeout bounds withdrawing a request whose caller has gone on (5
// s): the call is one small write, and the caller waits for it.
const cancelTimeout = 5 * time.Second

// errBodyClosed is a Read after Close, as net/http's.
var errBodyClosed = errors.New("c2cvia: read on closed response body")

// streamBody reads a streamed answer's body. It ends with io.EOF once the
// stream is complete and every byte read (or the declared Content-Length
// reached), with io.ErrUnexpectedEOF when the stream was aborted (its
// SimServer stopped posting) or cancelled. When the request's context ends
// or the body is closed before that, the request is withdrawn.
type streamBody struct {
	t      *transport
	rid    string
	token  string // the one the request was pushed with: it alone reads the answer
	reqCtx context.Context
	ctx    context.Context    // reqCtx, cut short by Close
	stop   context.CancelFunc // ends ctx
	length int64              // the declared Content-Length, -1 for none

	buf    []byte // received, not read yet
	offset int64  // where the next pull starts
	state  string // the stream's state as of the last pull
	empty  bool   // the last pull brought no bytes
	err    error  // what Read returns once buf is empty

	closed    atomic.Bool
	ended     atomic.Bool // nothing to withdraw: every byte was read, or the stream ended early
	withdraw  sync.Once
	unwatchCt func() bool // stops withdrawing when reqCtx ends
}

func newStreamBody(t *transport, ctx context.Context, rid, token string, first []byte, p *pulled, length int64) *streamBody {
	b := &streamBody{t: t, rid: rid, token: token, reqCtx: ctx, length: length, buf: first, state: p.Stream,
		offset: p.Offset, empty: len(first) == 0}
	if b.offset < int64(len(first)) { // a relay that does not say
		b.offset = int64(len(first))
	}
	b.ctx, b.stop = context.WithCancel(ctx)
	b.unwatchCt = context.AfterFunc(ctx, b.abandon)
	b.check()
	return b
}

func (b *streamBody) Read(p []byte) (int, error) {
	for len(b.buf) == 0 {
		if b.closed.Load() {
			return 0, errBodyClosed
		}
		if b.err != nil {
			return 0, b.err
		}
		b.fetch()
	}
	n := copy(p, b.buf)
	b.buf = b.buf[n:]
	return n, nil
}

// Close stops reading; before the body's end it withdraws the request, so
// that its handler stops.
func (b *streamBody) Close() error {
	if b.closed.Swap(true) {
		return nil
	}
	b.stop()
	b.abandon()
	b.unwatchCt()
	return nil
}

// abandon withdraws the request once, unless its body has ended; a second
// call returns once the first has withdrawn it.
func (b *streamBody) abandon() {
	if !b.ended.Load() {
		b.withdraw.Do(func() { b.t.cancel(b.reqCtx, b.rid, b.token) })
	}
}

// check sets err from what the last pull said: io.EOF once the stream is
// complete and has nothing past offset, or the declared length is read;
// io.ErrUnexpectedEOF once an aborted or cancelled stream has nothing more.
func (b *streamBody) check() {
	switch {
	case b.length >= 0 && b.offset >= b.length, b.state == streamComplete && b.empty:
		b.err = io.EOF
	case b.state != streamOpen && b.state != streamComplete && b.empty:
		b.err = io.ErrUnexpectedEOF
	default:
		return
	}
	b.ended.Store(true)
	b.unwatchCt()
}

// fetch pulls the bytes past offset, waiting while the stream is open and
// has none.
func (b *streamBody) fetch() {
	p, err := b.t.pull(b.ctx, b.token, map[string]any{"rid": b.rid, "offset": b.offset, "wait": seconds(b.t.s.o.wait)})
	if err != nil {
		switch {
		case b.closed.Load():
			b.err = errBodyClosed
		case b.reqCtx.Err() != nil:
			b.err = b.reqCtx.Err()
		default:
			b.err = err
		}
		return
	}
	var m simhttp.Response
	if err := json.Unmarshal(p.SimRes, &m); err != nil {
		b.err = fmt.Errorf("c2cvia: the answer to %s is not a sim_res: %w", b.rid, err)
		return
	}
	data, _, err := simhttp.DecodeBody(m.Body, m.BodyEncoding, nil)
	if err != nil {
		b.err = fmt.Errorf("c2cvia: the answer to %s: %w", b.rid, err)
		return
	}
	b.buf, b.empty, b.state = data, len(data) == 0, p.Stream
	if p.Offset > b.offset {
		b.offset = p.Offset
	} else {
		b.offset += int64(len(data))
	}
	b.check()
}
