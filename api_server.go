// Server API handlers: pullreqsmart, pushres and extend, for the SimServer
// that holds a net's key.

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/c2cvia/c2cvia/internal/simhttp"
)

// handlePullReqSmart serves pullreqsmart: it posts the answers the call
// carries, if any (answersParam), then waits up to `wait` for requests to
// lease (docs/API.md, "Server API").
func handlePullReqSmart(st *store, lp *poller, pres *presence, cfg config, pf *preflights, box *answerBox, held *heldRequests) apiFunc {
	type response struct {
		Requests []leasedRequest `json:"requests"`
		Answers  []answerOutcome `json:"answers,omitempty"`
	}
	return func(w http.ResponseWriter, r *http.Request, p *params) error {
		net, key, err := serverAuth(r, p)
		if err != nil {
			return err
		}
		list, err := answersParam(r, p)
		if err != nil {
			return err
		}
		wait, err := p.seconds("wait", defaultWait, lp.maxWait)
		if err != nil {
			return err
		}
		max, err := p.intIn("max", 1, 100, 1)
		if err != nil {
			return err
		}
		lease, err := leaseParam(p, cfg)
		if err != nil {
			return err
		}
		preflight, err := p.boolean("preflight", false)
		if err != nil {
			return err
		}
		ctx := r.Context()
		k, err := authorizeServer(r, st, net, key)
		if err != nil {
			return err
		}
		var outcome []answerOutcome
		if len(list) > 0 {
			if outcome, err = outcomes(list, postAnswers(ctx, st, lp.hub, box, held, k, list)); err != nil {
				return err
			}
		}
		pf.set(net, preflight)
		st.touchNet(net)
		defer st.touchNet(net)
		defer pres.polling(net)()

		got := []leasedRequest{}
		_, err = lp.poll(ctx, pollServer, netSignal(net), wait, func() (bool, time.Time, error) {
			var next time.Time
			var ended []*heldRequest
			var err error
			got, next, ended, err = leaseNext(ctx, st, held, net, max, lease)
			for _, h := range ended {
				lp.hub.notify(tokenSignal(h.owner.Hash)) // its caller's wait ends
			}
			// If another SimServer was quicker, wait again: the winner's
			// notifyAt below wakes this poll when its lease runs out.
			return len(got) > 0, next, err
		})
		if err != nil && len(outcome) > 0 && ctx.Err() == nil && asAPIError(err) != nil {
			// The answers were posted: the call does not fail, it hands out
			// nothing (docs/API.md, "Answering and polling in one call").
			got, err = nil, nil
		}
		if err != nil {
			return err
		}
		if got == nil {
			got = []leasedRequest{} // "requests": [], never null
		}
		if len(got) > 0 {
			// Other SimServers waiting on this net must see these come back
			// if the lease runs out unanswered.
			lp.hub.notifyAt(netSignal(net), lease)
		}
		for _, l := range got {
			if l.lastLease {
				lp.hub.notify(tokenSignal(l.owner)) // its waits now change at the lease's end
			}
		}
		writeJSON(w, http.StatusOK, response{got, outcome})
		return nil
	}
}

// leaseNext leases up to max of net's requests for lease: the gateway's
// held in memory (held.go) first, but when the store has some too, it
// gets half the page, or every other page of one, so that neither starves
// the other. It returns when the next lease of net ends (zero for none),
// and the held requests that time ended, whose callers must be woken.
func leaseNext(ctx context.Context, st *store, held *heldRequests, net string, max int, lease time.Duration) (
	got []leasedRequest, next time.Time, ended []*heldRequest, err error) {
	// The counts say when requests are queued in the store; only otherwise
	// is it read, for a lease that ran out and for when the next one ends,
	// and not while held requests fill the page: a SimServer that keeps
	// up with its callers costs no read of the store.
	queued := st.counts.queuedIn(net) > 0
	ready := queued
	if !queued {
		if got, next, ended = held.lease(net, max, lease); len(got) > 0 {
			return got, next, ended, nil
		}
		heldNext := next
		read, storeNext := st.leases.due(net, st.nowMS())
		if read {
			if ready, storeNext, err = st.readyState(ctx, net); err != nil {
				return nil, next, ended, err
			}
		}
		next = earliest(heldNext, storeNext)
	}
	quota := max
	if ready {
		quota = max - max/2
		if max == 1 && held.turn.Add(1)%2 == 0 {
			quota = 0
		}
	}
	var heldNext time.Time
	var more []*heldRequest
	got, heldNext, more = held.lease(net, quota, lease)
	next, ended = earliest(next, heldNext), append(ended, more...)
	if !ready || len(got) == max {
		return got, next, ended, nil
	}
	stored, err := st.lease(ctx, net, max-len(got), lease)
	got = append(got, stored...) // on an error, the held ones leased come back when their lease runs out
	if err == nil && len(stored) == 0 && queued {
		// The counts were ahead of the store (a request past its TTL counts
		// as queued until the janitor writes it down): read it.
		var again bool
		var storeNext time.Time
		again, storeNext, err = st.readyState(ctx, net)
		next = earliest(next, storeNext)
		if err == nil && again {
			stored, err = st.lease(ctx, net, max-len(got), lease)
			got = append(got, stored...)
		}
	}
	if err == nil && len(got) < max {
		// The store had less than its part: held requests fill the page.
		var rest []leasedRequest
		rest, heldNext, more = held.lease(net, max-len(got), lease)
		got = append(got, rest...)
		next, ended = earliest(next, heldNext), append(ended, more...)
	}
	return got, next, ended, err
}

// earliest is the earlier of two moments, zero being none.
func earliest(a, b time.Time) time.Time {
	if a.IsZero() || (!b.IsZero() && b.Before(a)) {
		return b
	}
	return a
}

// maxAnswers bounds the answers one pullreqsmart posts.
const maxAnswers = 100

// answersParam reads pullreqsmart's `answers`: at most maxAnswers whole
// answers, each {"rid", "sim_res"} with sim_res as pushres takes it (docs/API.md,
// "Answering and polling in one call"). Anything else is 400 for the
// whole call, before anything is written; so are answers on a GET.
func answersParam(r *http.Request, p *params) ([]simAnswer, error) {
	raw, ok, err := p.rawJSON("answers")
	if err != nil || !ok {
		return nil, err
	}
	bad := func(format string, args ...any) error { return badRequest("invalid_answers", format, args...) }
	if r.Method != http.MethodPost {
		return nil, bad("answers are posted: send them in a POST")
	}
	var items []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, bad(`answers must be an array of {"rid", "sim_res"} objects`)
	}
	if len(items) > maxAnswers {
		return nil, bad("at most %d answers in one call, not %d", maxAnswers, len(items))
	}
	list := make([]simAnswer, len(items))
	for i, item := range items {
		if item == nil {
			return nil, bad(`answers[%d] must be a {"rid", "sim_res"} object`, i)
		}
		for name := range item {
			if name != "rid" && name != "sim_res" {
				return nil, bad(`answers[%d] holds %q: an answer is {"rid", "sim_res"}, whole (a streamed answer begins with pushres and more)`, i, name)
			}
		}
		if err := json.Unmarshal(item["rid"], &list[i].rid); err != nil || list[i].rid == "" {
			return nil, bad("answers[%d] needs a rid, a string", i)
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(item["sim_res"], &obj); err != nil || obj == nil {
			return nil, bad("answers[%d]: sim_res must be a JSON object", i)
		}
		if list[i].simRes, err = normalizeSimRes(obj); err != nil {
			if e := asAPIError(err); e != nil {
				return nil, &apiError{Status: e.Status, Code: e.Code, Message: fmt.Sprintf("answers[%d]: %s", i, e.Message)}
			}
			return nil, err
		}
	}
	return list, nil
}

// answerOutcome is one posted answer's line in pullreqsmart's reply:
// status "answered", or the error its pushres would have had.
type answerOutcome struct {
	RID    string     `json:"rid"`
	Status string     `json:"status,omitempty"`
	Error  *errorBody `json:"error,omitempty"`
}

// postAnswers posts list's whole answers for k's net, each as its pushres
// would: to the held request's caller (heldRequests.answer), or to the
// store (store.answerAll). Each one taken is handed to the calls waiting
// for it (the answer box) and wakes its owner's waits. errs[i] is list[i]'s
// refusal, nil when it was taken.
func postAnswers(ctx context.Context, st *store, h *hub, box *answerBox, held *heldRequests, k serverKey, list []simAnswer) (errs []error) {
	errs = make([]error, len(list))
	var stored []simAnswer // the answers to requests in the store
	var at []int           // their places in list
	taken := func(a simAnswer, owner []byte) {
		box.deliver(a.rid, a.simRes, false)
		h.notify(tokenSignal(owner))
	}
	for i, a := range list {
		if hr := held.find(k.net, a.rid); hr != nil {
			if errs[i] = held.answer(hr); errs[i] == nil {
				taken(a, hr.owner.Hash) // at once: its caller waits on no commit
			}
			if errs[i] != errStoredNow {
				continue
			}
		}
		stored, at = append(stored, a), append(at, i)
	}
	if len(stored) > 0 {
		owners, storeErrs := st.answerAll(ctx, k, stored)
		for j, i := range at {
			if errs[i] = storeErrs[j]; errs[i] == nil {
				taken(list[i], owners[j])
			}
		}
	}
	return errs
}

// outcomes are pullreqsmart's lines for list's answers refused by errs
// (postAnswers). Only a relay fault fails the call.
func outcomes(list []simAnswer, errs []error) ([]answerOutcome, error) {
	out := make([]answerOutcome, len(list))
	for i, a := range list {
		out[i].RID = a.rid
		if errs[i] == nil {
			out[i].Status = statusAnswered
			continue
		}
		e := asAPIError(errs[i])
		if e == nil {
			return nil, errs[i]
		}
		out[i].Error = &errorBody{Code: e.Code, Message: e.Message, Status: e.Status, RetryAfter: retryAfterSeconds(e)}
	}
	return out, nil
}

// checkServerKey checks a SimServer's key for net (store.checkServerKey)
// and charges the call: to the net (--rate-server) when the key is right,
// to the client address when it is not.
func checkServerKey(r *http.Request, st *store, net, key string) (serverKey, error) {
	k, err := st.checkServerKey(r.Context(), net, key)
	if err != nil {
		return k, chargeAddress(r, err)
	}
	return k, chargeServer(r, k)
}

// authorizeServer is checkServerKey for a call that writes nothing else:
// it claims an unclaimed net at once.
func authorizeServer(r *http.Request, st *store, net, key string) (serverKey, error) {
	k, err := checkServerKey(r, st, net, key)
	if err != nil {
		return k, err
	}
	if err := st.claimNet(r.Context(), k); err != nil {
		return k, err
	}
	k.claim = false // claimed now
	return k, nil
}

// leaseParam reads `lease` in seconds: default --lease, at most --max-lease,
// more than zero.
func leaseParam(p *params, cfg config) (time.Duration, error) {
	lease, err := p.seconds("lease", cfg.DefaultLease, cfg.MaxLease)
	if err != nil {
		return 0, err
	}
	if lease < time.Millisecond {
		return 0, badRequest("invalid_param", "lease must be more than 0 seconds")
	}
	return lease, nil
}

func handlePushRes(st *store, h *hub, answers *answerBox, held *heldRequests, cfg config) apiFunc {
	type response struct {
		RID    string `json:"rid"`
		Status string `json:"status"`
	}
	return func(w http.ResponseWriter, r *http.Request, p *params) error {
		net, key, err := serverAuth(r, p)
		if err != nil {
			return err
		}
		rid, err := p.requiredStr("rid")
		if err != nil {
			return err
		}
		obj, err := simObject(p, "sim_res", simResFields)
		if err != nil {
			return err
		}
		simRes, err := normalizeSimRes(obj)
		if err != nil {
			return err
		}
		more, err := p.boolean("more", false)
		if err != nil {
			return err
		}
		lease, err := leaseParam(p, cfg)
		if err != nil {
			return err
		}
		var body []byte
		if more {
			if simRes, body, err = splitHead(simRes); err != nil {
				return err
			}
		}
		k, err := checkServerKey(r, st, net, key)
		if err != nil {
			return err
		}
		if !more {
			// A whole answer: posted as a poll's answers are.
			if err := postAnswers(r.Context(), st, h, answers, held, k, []simAnswer{{rid, simRes}})[0]; err != nil {
				return err
			}
			writeJSON(w, http.StatusOK, response{rid, statusAnswered})
			return nil
		}
		if hr := held.find(net, rid); hr != nil {
			// A streamed answer's parts live in the store: the request goes
			// there first, its caller reading on from it.
			if err := partsFirst(r.Context(), held, hr); err != nil {
				return err
			}
		}
		owner, err := st.answer(r.Context(), k, rid, simRes, &streamHead{body: body, lease: lease})
		if err != nil {
			return err
		}
		answers.deliver(rid, simRes, true) // a /via/ request waiting for it, held until now or not
		h.notify(tokenSignal(owner))
		writeJSON(w, http.StatusOK, streamResponse{RID: rid, Status: statusAnswered, Stream: streamOpen, Offset: int64(len(body))})
		return nil
	}
}

// partsFirst stores hr, held in memory, before its streamed answer's head
// is stored: refused as the answer itself would be once it ended.
func partsFirst(ctx context.Context, held *heldRequests, hr *heldRequest) error {
	if err := held.partRefusal(hr); err != nil && err != errNoStream {
		return err
	}
	return held.store(ctx, hr)
}

// streamResponse is the reply to a part of a streamed answer: the
// stream's state and the body bytes committed in all.
type streamResponse struct {
	RID    string `json:"rid"`
	Status string `json:"status,omitempty"`
	Stream string `json:"stream"`
	Offset int64  `json:"offset"`
}

// splitHead splits a normalized sim_res into the head of a streamed answer
// (its simBody null) and its body's bytes (simhttp.DecodeBody).
func splitHead(simRes []byte) (head, body []byte, err error) {
	var res simhttp.Response
	if err := json.Unmarshal(simRes, &res); err != nil {
		return nil, nil, err
	}
	h, err := simhttp.ToHeader(res.Headers, res.HeadersEncoding)
	if err != nil {
		return nil, nil, badRequest("invalid_sim_res", "%v", err)
	}
	if body, _, err = simhttp.DecodeBody(res.Body, res.BodyEncoding, h); err != nil {
		return nil, nil, badRequest("invalid_sim_res", "%v", err)
	}
	res.Body, res.BodyEncoding = json.RawMessage("null"), ""
	head, err = simhttp.Marshal(res)
	return head, body, err
}

// handlePushPart serves pushpart: one more part of a streamed answer
// (docs/API.md, "Streamed answers and cancellation"). The part's bytes are
// the raw body of an application/octet-stream POST, or simBody (with
// simBodyEncoding) in a JSON or form body; at most maxBody of them (413).
// A part at the wrong offset is 409 offset_mismatch.
func handlePushPart(st *store, h *hub, held *heldRequests, cfg config) apiFunc {
	return func(w http.ResponseWriter, r *http.Request, p *params) error {
		net, key, err := serverAuth(r, p)
		if err != nil {
			return err
		}
		rid, err := p.requiredStr("rid")
		if err != nil {
			return err
		}
		offset, err := p.offset(true)
		if err != nil {
			return err
		}
		last, err := p.boolean("last", false)
		if err != nil {
			return err
		}
		lease, err := leaseParam(p, cfg)
		if err != nil {
			return err
		}
		data := p.octets
		if data == nil {
			raw, _, err := p.rawJSON("simBody")
			if err != nil {
				return err
			}
			encoding, _, err := p.str("simBodyEncoding")
			if err != nil {
				return err
			}
			if data, _, err = simhttp.DecodeBody(raw, encoding, nil); err != nil {
				return badRequest("invalid_part", "%v", err)
			}
		}
		if int64(len(data)) > int64(cfg.MaxBody) {
			return errTooLarge
		}
		k, err := checkServerKey(r, st, net, key)
		if err != nil {
			return err
		}
		if hr := held.find(net, rid); hr != nil {
			if err := held.partRefusal(hr); err != nil {
				return err
			}
		}
		res, err := st.appendPart(r.Context(), k, rid, offset, data, last, lease)
		if om := (*offsetMismatchError)(nil); errors.As(err, &om) {
			return newAPIError(http.StatusConflict, "offset_mismatch", om.Error())
		}
		if err != nil {
			return err
		}
		h.notify(tokenSignal(res.owner))
		writeJSON(w, http.StatusOK, streamResponse{RID: rid, Stream: res.stream, Offset: res.offset})
		return nil
	}
}

// handleWatch serves watch: it waits, up to `wait`, until one of the rids
// a SimServer holds needs no more work (store.watchDone), and names them
// (docs/API.md, "Cancellation"). It writes nothing.
func handleWatch(st *store, lp *poller, held *heldRequests) apiFunc {
	type response struct {
		Cancelled []string `json:"cancelled"`
	}
	return func(w http.ResponseWriter, r *http.Request, p *params) error {
		net, key, err := serverAuth(r, p)
		if err != nil {
			return err
		}
		rids, err := p.list("rids", maxWatched)
		if err != nil {
			return err
		}
		wait, err := p.seconds("wait", defaultWait, lp.maxWait)
		if err != nil {
			return err
		}
		if _, err := checkServerKey(r, st, net, key); err != nil {
			return err
		}
		ctx := r.Context()
		done := []string{}
		_, err = lp.poll(ctx, pollWatch, watchSignal(net), wait, func() (bool, time.Time, error) {
			ended, rest := held.done(net, rids)
			done = append([]string{}, ended...)
			if len(rest) > 0 {
				more, err := st.watchDone(ctx, net, rest)
				if err != nil {
					return false, time.Time{}, err
				}
				done = append(done, more...)
			}
			return len(done) > 0, time.Time{}, nil
		})
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, response{done})
		return nil
	}
}

func handleExtend(st *store, h *hub, held *heldRequests, cfg config) apiFunc {
	type response struct {
		RID            string `json:"rid"`
		LeaseExpiresAt string `json:"lease_expires_at"`
	}
	return func(w http.ResponseWriter, r *http.Request, p *params) error {
		net, key, err := serverAuth(r, p)
		if err != nil {
			return err
		}
		rid, err := p.requiredStr("rid")
		if err != nil {
			return err
		}
		lease, err := leaseParam(p, cfg)
		if err != nil {
			return err
		}
		k, err := checkServerKey(r, st, net, key)
		if err != nil {
			return err
		}
		if hr := held.find(net, rid); hr != nil {
			until, err := held.extend(hr, lease)
			if err == nil {
				h.notify(tokenSignal(hr.owner.Hash)) // a last lease cut short ends its caller's wait sooner
				writeJSON(w, http.StatusOK, response{rid, formatMS(until)})
				return nil
			}
			if err != errStoredNow {
				return err
			}
		}
		until, streamOwner, err := st.extend(r.Context(), k, rid, lease)
		if err != nil {
			return err
		}
		if streamOwner != nil {
			h.notify(tokenSignal(streamOwner)) // a shorter lease: its readers' waits end sooner
		}
		writeJSON(w, http.StatusOK, response{rid, formatMS(until)})
		return nil
	}
}
