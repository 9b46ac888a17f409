// Synchronous gateway requests held in memory (docs/API.md, "Gateway"). A
// /via/ caller that asked for no store-and-forward is acknowledged only by
// its answer, and its request has no result token: nobody but the caller
// can ever read its answer. So while the caller waits the relay keeps the
// request in memory: it is handed to a SimServer's poll, leased, and its
// answer handed back to the caller, with nothing written. The store takes
// it over (store.storeHeld) when that promise ends: the caller's wait runs
// out (504: the request stays for its SimServer), the relay shuts down, or
// its SimServer begins a streamed answer, whose parts live in the store.
//
// A crash loses what is held: the callers' connections drop with the
// relay, so none of them was told anything; a SimServer that answers such
// a request afterwards gets 404.

package main

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// heldState is where a held request is. queued and delivered are the
// store's statuses; the others end its time here.
type heldState int

const (
	heldQueued    heldState = iota // waiting for a SimServer's poll
	heldDelivered                  // leased to a SimServer until leaseUntil
	heldAnswered                   // its answer went to its caller
	heldWithdrawn                  // its caller went away
	heldFailed                     // --max-attempts leases ran out unanswered
	heldExpired                    // its TTL ran out unanswered
	heldStored                     // the store has it now (storeHeld)
)

// heldRequest is one synchronous gateway request held in memory.
type heldRequest struct {
	rid, net  string
	simReq    []byte
	remote    string // the caller's "IP:port"
	owner     token  // the token that owns it once stored; nobody holds its secret
	created   int64  // ms
	expiresAt int64  // ms: its TTL

	// Guarded by heldRequests.mu.
	state      heldState
	attempt    int           // leases handed out
	leaseUntil int64         // ms: while delivered, and kept after, for refusals
	stored     chan struct{} // closed once state is heldStored, or storing failed
}

// heldRequests are the synchronous gateway requests held in memory, by
// rid and, while queued, in their net's queue, oldest first. Ended ones
// stay by rid until their lease would have ended, so that a SimServer
// still working on one is told why its answer is refused.
type heldRequests struct {
	st *store // the clock, --max-attempts, the counts the queue quota adds to

	mu       sync.Mutex
	byRID    map[string]*heldRequest
	queues   map[string][]*heldRequest            // net -> queued, oldest first
	out      map[string]map[*heldRequest]struct{} // net -> delivered
	ended    []*heldRequest                       // ended or stored, kept until leaseUntil
	prunedAt int64                                // ms: the last pruneLocked

	held atomic.Int64 // queued or delivered now, for the metrics
	turn atomic.Int64 // alternates pages of one request with the store's (leaseNext)
}

func newHeldRequests(st *store) *heldRequests {
	return &heldRequests{st: st, byRID: map[string]*heldRequest{}, queues: map[string][]*heldRequest{},
		out: map[string]map[*heldRequest]struct{}{}}
}

// newHeld makes a held request for rid of net from the caller at remote,
// created now and expiring after --req-ttl.
func (hr *heldRequests) newHeld(net, rid, remote string, simReq []byte) *heldRequest {
	now := hr.st.nowMS()
	expiresAt := now + hr.st.opts.ReqTTL.Milliseconds()
	return &heldRequest{rid: rid, net: net, simReq: simReq, remote: remote, created: now, expiresAt: expiresAt,
		owner: token{Hash: secretHash(newToken()), PeerID: viaPeer + ":" + rid, ExpiresAt: expiresAt + hr.st.opts.ResTTL.Milliseconds()}}
}

// row is h as the store's counts see a request.
func (h *heldRequest) row() requestRow {
	return requestRow{net: h.net, from: detachedFrom, remote: h.remote, queued: true, bytes: int64(len(h.simReq))}
}

// hold queues h, under the gateway's share of its net's queue
// (--max-queue, with the gateway requests the store holds) and its
// caller's share of that (--via-addr-share): 429 queue_full past either.
// The budgets of what its caller sends are met as if it were stored
// (store.senderRefusal), since it is once its wait runs out: 507 at once
// rather than after the wait.
func (hr *heldRequests) hold(h *heldRequest) error {
	if err := hr.st.senderRefusal(h.row()); err != nil {
		return err
	}
	if max := hr.st.opts.MaxStore; max > 0 && hr.st.used.Load()+hr.st.pending.Load()+int64(len(h.simReq)) > max {
		return errStoreFull
	}
	maxQueue := hr.st.opts.MaxQueue
	hr.mu.Lock()
	defer hr.mu.Unlock()
	hr.pruneLocked(hr.st.nowMS())
	if err := hr.st.counts.admitHeld(h.row(), maxQueue, int(hr.st.viaShare(int64(maxQueue)))); err != nil {
		return err
	}
	hr.byRID[h.rid] = h
	hr.queues[h.net] = append(hr.queues[h.net], h)
	hr.held.Add(1)
	return nil
}

// unqueueLocked takes h out of its net's queue (it is at the front unless
// its caller left, or its TTL ran out).
func (hr *heldRequests) unqueueLocked(h *heldRequest) {
	q := hr.queues[h.net]
	for i, x := range q {
		if x == h {
			q = append(q[:i:i], q[i+1:]...)
			break
		}
	}
	if len(q) == 0 {
		delete(hr.queues, h.net)
	} else {
		hr.queues[h.net] = q
	}
	hr.st.counts.heldQueue(h.row(), -1)
}

// requeueLocked puts h back in its net's queue, in the order it came.
func (hr *heldRequests) requeueLocked(h *heldRequest) {
	h.state = heldQueued
	q := hr.queues[h.net]
	i := 0
	for i < len(q) && q[i].created <= h.created {
		i++
	}
	hr.queues[h.net] = append(q[:i:i], append([]*heldRequest{h}, q[i:]...)...)
	hr.st.counts.heldQueue(h.row(), 1)
}

// outLocked takes h out of its net's leased requests.
func (hr *heldRequests) outLocked(h *heldRequest) {
	delete(hr.out[h.net], h)
	if len(hr.out[h.net]) == 0 {
		delete(hr.out, h.net)
	}
}

// endLocked ends h's time in memory as state; it stays by rid until its
// lease would have ended.
func (hr *heldRequests) endLocked(h *heldRequest, state heldState, now int64) {
	switch h.state {
	case heldQueued:
		hr.unqueueLocked(h)
		hr.held.Add(-1)
	case heldDelivered:
		hr.outLocked(h)
		hr.held.Add(-1)
	}
	h.state = state
	h.simReq = nil // only its rid and state are kept now
	if h.leaseUntil < now {
		h.leaseUntil = now
	}
	hr.ended = append(hr.ended, h)
}

// sweep forgets the ended requests due, for the janitor: held requests
// that nobody polls for end with their callers, and are pruned here.
func (hr *heldRequests) sweep() {
	hr.mu.Lock()
	defer hr.mu.Unlock()
	hr.pruneLocked(hr.st.nowMS())
}

// pruneLocked forgets the ended requests whose lease would have ended, at
// most once a second: a request ended is kept a little longer rather
// than the list scanned at every lease.
func (hr *heldRequests) pruneLocked(now int64) {
	if now-hr.prunedAt < 1000 {
		return
	}
	hr.prunedAt = now
	keep := hr.ended[:0]
	for _, h := range hr.ended {
		if h.leaseUntil > now {
			keep = append(keep, h)
		} else if hr.byRID[h.rid] == h {
			delete(hr.byRID, h.rid)
		}
	}
	clear(hr.ended[len(keep):])
	hr.ended = keep
}

// times is h as the status rule (statusAt) reads a stored request.
func (h *heldRequest) times() requestTimes {
	if h.state == heldDelivered {
		return requestTimes{stored: statusDelivered, attempt: h.attempt, expiresAt: h.expiresAt, leaseExp: h.leaseUntil}
	}
	return requestTimes{stored: statusQueued, attempt: h.attempt, expiresAt: h.expiresAt}
}

// lapseLocked applies what time did to net's held requests, by the status
// rule (statusAt): a TTL that ran out expires one, a last lease that ran
// out fails it, any other lease that ran out queues it again (in the
// order it came). It returns the requests that ended (their callers must
// look again), and when the next lease of net ends (zero for none).
func (hr *heldRequests) lapseLocked(net string, now int64) (ended []*heldRequest, nextLease int64) {
	var states []heldState
	for _, h := range hr.queues[net] {
		if st, _ := statusAt(h.times(), now, hr.st.opts.MaxAttempts); st == statusExpired {
			ended, states = append(ended, h), append(states, heldExpired)
		}
	}
	for h := range hr.out[net] {
		switch st, _ := statusAt(h.times(), now, hr.st.opts.MaxAttempts); {
		case st == statusExpired:
			ended, states = append(ended, h), append(states, heldExpired)
		case st == statusFailed:
			ended, states = append(ended, h), append(states, heldFailed)
		case h.leaseUntil <= now:
			hr.outLocked(h)
			hr.requeueLocked(h)
		case nextLease == 0 || h.leaseUntil < nextLease:
			nextLease = h.leaseUntil
		}
	}
	for i, h := range ended {
		hr.endLocked(h, states[i], now)
	}
	return ended, nextLease
}

// lease hands out up to max of net's held requests, oldest first, at most
// maxPageBytes of sim_req but at least one, each delivered for lease. It
// also returns when the next lease of net ends (zero for none), and the
// requests time ended (their callers must look again: wake them).
func (hr *heldRequests) lease(net string, max int, lease time.Duration) (got []leasedRequest, nextLease time.Time, ended []*heldRequest) {
	now := hr.st.nowMS()
	hr.mu.Lock()
	defer hr.mu.Unlock()
	hr.pruneLocked(now)
	ended, next := hr.lapseLocked(net, now)
	q := hr.queues[net]
	until := now + lease.Milliseconds()
	bytes, n := 0, 0
	for n < len(q) && n < max {
		if bytes += len(q[n].simReq); n > 0 && bytes > maxPageBytes {
			break
		}
		n++
	}
	for _, h := range q[:n] {
		hr.unqueueLocked(h)
		h.state, h.leaseUntil = heldDelivered, until
		h.attempt++
		if hr.out[net] == nil {
			hr.out[net] = map[*heldRequest]struct{}{}
		}
		hr.out[net][h] = struct{}{}
		atEnd, _ := statusAt(h.times(), until, hr.st.opts.MaxAttempts)
		got = append(got, leasedRequest{RID: h.rid, SimReq: h.simReq, From: viaPeer, RemoteAddr: h.remote,
			Attempt: h.attempt, LeaseExpiresAt: formatMS(until), created: h.created, expiresAt: h.expiresAt,
			owner: h.owner.Hash, lastLease: atEnd == statusFailed})
		if next == 0 || until < next {
			next = until
		}
	}
	if next != 0 {
		nextLease = time.UnixMilli(next)
	}
	if hooks := hr.st.hooks.Load(); hooks != nil {
		for _, l := range got {
			if l.Attempt == 1 {
				hooks.handedOut(l.RID, l.created, now)
			}
		}
	}
	return got, nextLease, ended
}

// has reports whether rid of net is held now (or ended here recently):
// the calls that act on a request must ask here before the store.
func (hr *heldRequests) find(net, rid string) *heldRequest {
	hr.mu.Lock()
	defer hr.mu.Unlock()
	if h := hr.byRID[rid]; h != nil && h.net == net {
		return h
	}
	return nil
}

// refusalLocked is why an answer or extend of h is refused, as the
// store's refusal names it; nil while it is queued or delivered.
func refusalLocked(h *heldRequest) error {
	switch h.state {
	case heldAnswered:
		return errAnswered
	case heldWithdrawn:
		return errCancelled
	case heldFailed:
		return errFailed
	case heldExpired:
		return errExpired
	}
	return nil
}

// errStoredNow: the request was handed to the store meanwhile; the store
// answers for it now.
var errStoredNow = errors.New("the held request is in the store now")

// answer takes a whole answer for h, which the caller of answer then hands
// to h's caller through the answer box (postAnswers): 200 for its
// SimServer means the relay has it for that caller (docs/API.md,
// "Gateway"). An answer after h's end is refused as the store would refuse
// it; errStoredNow when the store took h over, which then answers for it.
func (hr *heldRequests) answer(h *heldRequest) error {
	now := hr.st.nowMS()
	hr.mu.Lock()
	if h.state == heldStored {
		stored := h.stored
		hr.mu.Unlock()
		<-stored
		return errStoredNow
	}
	hr.lapseLocked(h.net, now) // a TTL or a last lease that ran out ends it (statusAt)
	if err := refusalLocked(h); err != nil {
		hr.mu.Unlock()
		return err
	}
	hr.endLocked(h, heldAnswered, now)
	hr.mu.Unlock()
	if hooks := hr.st.hooks.Load(); hooks != nil {
		hooks.answered(h.rid, now)
	}
	return nil
}

// extend renews h's lease to now+lease while a SimServer holds it, as the
// store's extend does: 409 lease_lost once it ran out, the refusal once
// it ended.
func (hr *heldRequests) extend(h *heldRequest, lease time.Duration) (until int64, err error) {
	now := hr.st.nowMS()
	hr.mu.Lock()
	defer hr.mu.Unlock()
	if h.state == heldStored {
		return 0, errStoredNow // the caller asks the store (a store in progress holds the old lease)
	}
	hr.lapseLocked(h.net, now)
	if err := refusalLocked(h); err != nil {
		return 0, err
	}
	if h.state != heldDelivered || h.leaseUntil <= now {
		return 0, errLeaseLost
	}
	h.leaseUntil = now + lease.Milliseconds()
	return h.leaseUntil, nil
}

// withdraw ends h because its caller went away: a queued one is never
// delivered, a delivered one is refused to its SimServer (410 cancelled)
// and named by its watch. It reports whether a SimServer held it.
func (hr *heldRequests) withdraw(h *heldRequest) (wasDelivered, stored bool) {
	now := hr.st.nowMS()
	hr.mu.Lock()
	defer hr.mu.Unlock()
	hr.pruneLocked(now)
	switch h.state {
	case heldStored:
		return false, true
	case heldQueued, heldDelivered:
		wasDelivered = h.state == heldDelivered
		hr.endLocked(h, heldWithdrawn, now)
	}
	return wasDelivered, false
}

// status is h's state now for its caller's wait, and when it changes by
// itself (its TTL, or its last lease running out; zero for never).
func (hr *heldRequests) status(h *heldRequest) (heldState, time.Time) {
	now := hr.st.nowMS()
	hr.mu.Lock()
	defer hr.mu.Unlock()
	if h.state != heldQueued && h.state != heldDelivered {
		return h.state, time.Time{}
	}
	hr.lapseLocked(h.net, now)
	if _, next := statusAt(h.times(), now, hr.st.opts.MaxAttempts); next != 0 {
		return h.state, time.UnixMilli(next)
	}
	return h.state, time.Time{}
}

// done splits rids into those of net held here that need no more work
// (ended), and those the store must be asked about; ones held and at work
// are in neither.
func (hr *heldRequests) done(net string, rids []string) (ended, rest []string) {
	hr.mu.Lock()
	defer hr.mu.Unlock()
	for _, rid := range rids {
		h := hr.byRID[rid]
		switch {
		case h == nil || h.net != net || h.state == heldStored:
			rest = append(rest, rid)
		case h.state != heldQueued && h.state != heldDelivered:
			ended = append(ended, rid)
		}
	}
	return ended, rest
}

// store hands h to the store (store.storeHeld), as it is: queued, or
// delivered with its attempts and lease. From then on every call about it
// is the store's. It does nothing for a request that ended, or was stored
// already; a refusal (a budget) leaves it held.
func (hr *heldRequests) store(ctx context.Context, h *heldRequest) error {
	hr.mu.Lock()
	switch h.state {
	case heldStored:
		stored := h.stored
		hr.mu.Unlock()
		<-stored
		return nil
	case heldQueued, heldDelivered:
	default:
		hr.mu.Unlock()
		return nil
	}
	snap := *h
	was := h.state
	if was == heldQueued {
		hr.unqueueLocked(h)
	} else {
		hr.outLocked(h)
	}
	h.state = heldStored
	stored := make(chan struct{})
	h.stored = stored
	hr.mu.Unlock()

	err := hr.st.storeHeld(context.WithoutCancel(ctx), &snap)

	now := hr.st.nowMS()
	hr.mu.Lock()
	defer hr.mu.Unlock()
	defer close(stored)
	if err != nil {
		// Held again, as it was: the caller's wait goes on or ends with err.
		h.state = was
		if was == heldQueued {
			hr.requeueLocked(h)
		} else {
			if hr.out[h.net] == nil {
				hr.out[h.net] = map[*heldRequest]struct{}{}
			}
			hr.out[h.net][h] = struct{}{}
		}
		return err
	}
	hr.held.Add(-1)
	h.simReq = nil // the store has it
	if h.leaseUntil < now {
		h.leaseUntil = now
	}
	hr.ended = append(hr.ended, h) // by rid a while: an answer meanwhile goes to the store
	return nil
}

// wasStored reports whether the store took h over.
func (hr *heldRequests) wasStored(h *heldRequest) bool {
	hr.mu.Lock()
	defer hr.mu.Unlock()
	return h.state == heldStored
}

// partRefusal is why a part for h cannot be taken: nil once the store has
// h (a streamed answer's head stores it first), else its refusal, or
// no_stream while it waits for an answer.
func (hr *heldRequests) partRefusal(h *heldRequest) error {
	hr.mu.Lock()
	defer hr.mu.Unlock()
	if h.state == heldStored {
		return nil
	}
	if err := refusalLocked(h); err != nil {
		return err
	}
	return errNoStream
}
