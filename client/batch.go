// Answers that go with Serve's next poll: a handler's whole answer that is
// ready when the poll loop polls again rides on that pullreqsmart, one
// round trip for answering and asking for more (docs/API.md, "Answering
// and polling in one call"). The others go by pushres, as before.

package client

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"sync"
	"time"
)

const (
	// maxBatchAnswer: an answer whose sim_res encodes to 64 KiB or more
	// goes by a pushres of its own, where a 413 can shrink it into parts.
	maxBatchAnswer = 64 << 10
	// maxBatchBytes bounds the sim_res bytes one poll carries (512 KiB):
	// with the call's other fields, well under the relay's default
	// --max-body of 1 MiB.
	maxBatchBytes = 512 << 10
	// minBatchBytes: once the relay has refused polls as too large (413)
	// down to this, answers stop going with polls.
	minBatchBytes = 4 << 10
	// maxBatch is the relay's limit on answers per pullreqsmart.
	maxBatch = 100
)

// answer is one whole answer handed to the poll loop, as pullreqsmart's
// answers carry it.
type answer struct {
	RID    string          `json:"rid"`
	SimRes json.RawMessage `json:"sim_res"`

	failed int          // the calls that carried it and failed, or refused it for now: WithRetries bounds them
	tried  bool         // a call that carried it failed: the relay may have taken it
	done   chan outcome // 1-buffered: what became of it, sent once
}

// outcome is what became of an answer the loop took: posted (err nil) or
// refused (err, as its pushres would have been), or, with alone, handed
// back to be posted by pushres: the poll could not post it, or the relay
// refused it for now (err, a 507 say: pushres retries it after a backoff,
// at least retryAfter).
type outcome struct {
	err        error
	alone      bool
	retryAfter time.Duration
}

func (a *answer) finish(err error)   { a.done <- outcome{err: err} }
func (a *answer) handBack(err error) { a.done <- outcome{err: err, alone: true} }

// answerOutcome is one line of pullreqsmart's answers: status "answered",
// or the error its pushres would have had, with that pushres's status and
// Retry-After (seconds).
type answerOutcome struct {
	RID    string `json:"rid"`
	Status string `json:"status"`
	Error  *struct {
		Code       string `json:"code"`
		Message    string `json:"message"`
		Status     int    `json:"status"`
		RetryAfter int    `json:"retry_after"`
	} `json:"error"`
}

// batch holds the answers waiting for the next poll.
type batch struct {
	mu      sync.Mutex
	open    bool // the loop polls next: offered answers wait for it
	waiting []*answer
	bytes   int  // of the waiting answers' sim_res
	limit   int  // sim_res bytes one poll may carry; 0: none go with polls
	proven  bool // the relay has posted answers that came with a poll
}

func newBatch() *batch { return &batch{limit: maxBatchBytes} }

// offer hands rid's answer (its sim_res, encoded) to the next poll and
// returns it, or returns nil when the answer must go by pushres now: a
// poll is in flight (or Serve has stopped polling), the answer is large,
// or the next poll carries all it may.
func (b *batch) offer(rid string, simRes []byte) *answer {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(simRes)
	if !b.open || n >= maxBatchAnswer || b.bytes+n > b.limit || len(b.waiting) >= maxBatch {
		return nil
	}
	a := &answer{RID: rid, SimRes: simRes, done: make(chan outcome, 1)}
	b.waiting = append(b.waiting, a)
	b.bytes += n
	return a
}

// collect has the answers offered from now on wait for the next poll.
func (b *batch) collect() {
	b.mu.Lock()
	b.open = b.limit > 0
	b.mu.Unlock()
}

// take returns the waiting answers for the poll about to go out; answers
// offered from now on go by pushres until collect.
func (b *batch) take() []*answer {
	b.mu.Lock()
	defer b.mu.Unlock()
	list := b.waiting
	b.open, b.waiting, b.bytes = false, nil, 0
	return list
}

// enabled reports whether answers may go with polls.
func (b *batch) enabled() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.limit > 0
}

// wait is how long a poll that carries answers waits for requests: the
// usual wait once the relay has shown that it posts them, else 0. A relay
// that does not know answers ignores them, and they must not wait for a
// long poll to learn that.
func (b *batch) wait(usual time.Duration) time.Duration {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.proven {
		return usual
	}
	return 0
}

// shrink halves the limit below a call of n sim_res bytes that the relay
// refused as too large (413), or turns batching off under minBatchBytes.
func (b *batch) shrink(n int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.limit = min(b.limit, n/2)
	if b.limit < minBatchBytes {
		b.limit = 0
	}
}

// prove records that the relay posts answers that come with a poll.
func (b *batch) prove() {
	b.mu.Lock()
	b.proven = true
	b.mu.Unlock()
}

// off stops answers going with polls: the relay does not take them.
func (b *batch) off() {
	b.mu.Lock()
	b.limit = 0
	b.mu.Unlock()
}

// settle passes on what became of the answers sent with a poll that
// returned err and, if it succeeded, outs: each outcome to its answer's
// handler. For a call that failed, it returns the answers to send again
// with the next poll (carry: the reply was lost, the relay may have taken
// them), or hands them back to be posted by pushres and reports bare: the
// relay refused the call, so the next poll goes without answers before
// its refusal counts.
func (s *server) settle(ctx context.Context, sent []*answer, outs []answerOutcome, err error) (carry []*answer, bare bool) {
	var e *Error
	switch {
	case ctx.Err() != nil:
		// Serve is stopping: the handlers post them, and learn from
		// already_answered which ones the relay took.
		for _, a := range sent {
			a.tried = true
			a.handBack(nil)
		}
	case err == nil && !matches(sent, outs):
		// A relay that does not know answers ignores them: post them by
		// pushres, as every later one.
		s.batch.off()
		for _, a := range sent {
			a.tried = true
			a.handBack(nil)
		}
	case err == nil:
		s.batch.prove()
		for i, a := range sent {
			a.settle(outs[i])
		}
	case transient(ctx, err):
		for _, a := range sent {
			a.tried = true
			if a.failed >= s.o.retries {
				a.finish(err) // as pushres gives up
			} else {
				a.failed++
				carry = append(carry, a)
			}
		}
	default: // the call was refused whole: nothing was written
		if errors.As(err, &e) && e.Status == http.StatusRequestEntityTooLarge {
			n := 0
			for _, a := range sent {
				n += len(a.SimRes)
			}
			s.batch.shrink(n)
		} else if errors.As(err, &e) && e.Code == "invalid_answers" {
			s.batch.off() // a relay that reads answers otherwise
		}
		// An answer the relay cannot write (invalid_sim_res) gets its
		// stand-in from its own pushres.
		for _, a := range sent {
			a.handBack(nil)
		}
		bare = true
	}
	return carry, bare
}

// matches reports whether outs has one outcome per answer sent, in order.
func matches(sent []*answer, outs []answerOutcome) bool {
	if len(outs) != len(sent) {
		return false
	}
	for i, a := range sent {
		if outs[i].RID != a.RID {
			return false
		}
	}
	return true
}

// settle passes o on to a's handler as its pushres's reply would have
// been taken: answered before (postedBefore) after a call whose reply was
// lost is the answer posted then; a refusal that may pass (507) is posted
// again by pushres after a backoff; any other refusal is the answer's
// error.
func (a *answer) settle(o answerOutcome) {
	if o.Error == nil {
		a.finish(nil)
		return
	}
	e := &Error{Status: o.Error.Status, Code: o.Error.Code, Message: o.Error.Message,
		RetryAfter: time.Duration(max(o.Error.RetryAfter, 0)) * time.Second}
	switch {
	case a.tried && postedBefore(e):
		a.finish(nil)
	case transient(context.Background(), e):
		a.tried = true
		a.done <- outcome{err: e, alone: true, retryAfter: time.Duration(max(o.Error.RetryAfter, 0)) * time.Second}
	default:
		a.finish(e)
	}
}
