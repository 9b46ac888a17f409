// Client API handlers: login, pushreq, check, pullres and pullsmart.

package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/c2cvia/c2cvia/internal/simhttp"
)

// defaultWait is a long poll's wait when the call names none. 25 s: under
// common proxy idle timeouts (30-60 s), so a middlebox does not cut the poll.
const defaultWait = 25 * time.Second

func handleLogin(st *store) apiFunc {
	type response struct {
		Token     string `json:"token"`
		PeerID    string `json:"peer_id"`
		Net       string `json:"net"`
		ExpiresAt string `json:"expires_at"`
	}
	return func(w http.ResponseWriter, r *http.Request, p *params) error {
		net, err := p.netParam()
		if err != nil {
			return err
		}
		secret, t, err := st.createToken(r.Context(), net, clientBucket(r, nil))
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, response{secret, t.PeerID, t.Net, formatMS(t.ExpiresAt)})
		return nil
	}
}

func handlePushReq(st *store, h *hub) func(http.ResponseWriter, *http.Request, *params, token) error {
	type response struct {
		RID string `json:"rid"`
	}
	return func(w http.ResponseWriter, r *http.Request, p *params, t token) error {
		obj, err := simObject(p, "sim_req", simReqFields)
		if err != nil {
			return err
		}
		simReq, err := normalizeSimReq(obj)
		if err != nil {
			return err
		}
		rid, err := st.pushRequest(r.Context(), t, simReq, senderAddr(r))
		if err != nil {
			return err
		}
		h.notify(netSignal(t.Net))
		writeJSON(w, http.StatusCreated, response{rid})
		return nil
	}
}

func handleCheck(st *store) func(http.ResponseWriter, *http.Request, *params, token) error {
	type response struct {
		RID     string `json:"rid"`
		Status  string `json:"status"`
		Attempt int    `json:"attempt"`
		Stream  string `json:"stream,omitempty"` // a streamed answer's state
	}
	return func(w http.ResponseWriter, r *http.Request, p *params, t token) error {
		rid, req, err := ownRequest(r, st, p, t)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, response{rid, req.status, req.attempt, req.stream})
		return nil
	}
}

// ownRequest reads the request that the rid parameter names, as its owner
// t sees it: 404 for a rid of another token's, as for one that never was.
func ownRequest(r *http.Request, st *store, p *params, t token) (string, requestState, error) {
	rid, err := p.requiredStr("rid")
	if err != nil {
		return "", requestState{}, err
	}
	req, err := st.requestForOwner(r.Context(), t, rid)
	return rid, req, err
}

// handlePullRes serves pullres (smart false: answer now) and pullsmart
// (smart: wait up to `wait` seconds for the answer; without rid, for any
// answer of this token not pulled yet). A streamed answer is read from
// `offset` on (pullStream).
func handlePullRes(st *store, lp *poller, box *answerBox, smart bool) func(http.ResponseWriter, *http.Request, *params, token) error {
	type answered struct {
		RID    string          `json:"rid"`
		SimRes json.RawMessage `json:"sim_res"`
	}
	type pending struct {
		RID    string `json:"rid"`
		Status string `json:"status"`
	}
	return func(w http.ResponseWriter, r *http.Request, p *params, t token) error {
		wait := time.Duration(0)
		if smart {
			var err error
			if wait, err = p.seconds("wait", defaultWait, lp.maxWait); err != nil {
				return err
			}
		}
		rid, _, err := p.str("rid")
		if err != nil {
			return err
		}
		offset, err := p.offset(false)
		if err != nil {
			return err
		}
		ctx := r.Context()
		if rid == "" {
			if !smart {
				return badRequest("missing_param", "rid is required")
			}
			var res []byte
			var streamed bool
			found, err := lp.poll(ctx, pollClient, tokenSignal(t.Hash), wait, func() (bool, time.Time, error) {
				if ok, err := st.hasUnpulled(ctx, t); !ok || err != nil {
					return false, time.Time{}, err
				}
				var ok bool
				rid, res, streamed, ok, err = st.takeUnpulled(ctx, t)
				return ok, time.Time{}, err
			})
			if err != nil {
				return err
			}
			if !found {
				w.WriteHeader(http.StatusNoContent)
				return nil
			}
			if streamed {
				req, err := st.requestForOwner(ctx, t, rid)
				if err != nil {
					return err
				}
				return pullStream(w, r, st, rid, req, 0)
			}
			writeJSON(w, http.StatusOK, answered{rid, res})
			return nil
		}

		// A whole answer posted while this waits comes in memory (as to a
		// /via/ caller), so the wait reads the store once, not twice. The
		// box is read only once the store said the request is t's.
		var answer <-chan boxedAnswer
		if wait > 0 {
			var done func()
			answer, done = box.expect(rid)
			defer done()
		}
		var req requestState
		owned, first := false, true
		_, err = lp.poll(ctx, pollClient, tokenSignal(t.Hash), wait, func() (bool, time.Time, error) {
			if owned {
				select {
				case a := <-answer:
					if !a.streamed {
						req.status, req.simRes, req.changesAt = statusAnswered, a.simRes, 0
						return true, time.Time{}, nil
					}
				default:
				}
			}
			if first && answer != nil && offset == 0 {
				// Pushed through this relay and pending: nothing to read
				// until a wake-up (freshRequests). Every later try reads,
				// the last one included.
				first = false
				if expiresAt, ok := st.fresh.pending(rid, t.Hash); ok {
					owned, req = true, requestState{status: statusQueued}
					return false, time.UnixMilli(expiresAt), nil
				}
			}
			first = false
			var err error
			if req, err = st.requestForOwner(ctx, t, rid); err != nil {
				return false, time.Time{}, err
			}
			owned = true
			switch {
			case req.stream == streamOpen && req.bodyBytes <= offset:
				return false, req.next(), nil // nothing new in the stream yet
			case req.status == statusAnswered, req.gone() != nil:
				return true, time.Time{}, nil
			}
			return false, req.next(), nil
		})
		if err != nil {
			return err
		}
		if err := req.gone(); err != nil {
			return err
		}
		switch {
		case req.status != statusAnswered:
			writeJSON(w, http.StatusAccepted, pending{rid, req.status})
		case req.stream != "":
			st.markPulled(req)
			return pullStream(w, r, st, rid, req, offset)
		case req.seq == 0: // answered in memory, its row not read
			st.markPulledRID(rid)
			writeJSON(w, http.StatusOK, answered{rid, req.simRes})
		default:
			st.markPulled(req)
			writeJSON(w, http.StatusOK, answered{rid, req.simRes})
		}
		return nil
	}
}

// pullStream answers a pull of the streamed answer req: its head with the
// body from offset on (at most maxReadBytes), the stream's state, and the
// offset the next read starts at.
func pullStream(w http.ResponseWriter, r *http.Request, st *store, rid string, req requestState, offset int64) error {
	type streamed struct {
		RID    string          `json:"rid"`
		SimRes json.RawMessage `json:"sim_res"`
		Stream string          `json:"stream"`
		Offset int64           `json:"offset"`
	}
	if offset > req.bodyBytes {
		return newAPIError(http.StatusRequestedRangeNotSatisfiable, "offset_past_end", fmt.Sprintf(
			"offset %d is past the %d body bytes committed", offset, req.bodyBytes))
	}
	body, err := st.readBody(r.Context(), req.seq, offset, maxReadBytes)
	if err != nil {
		return err
	}
	var res simhttp.Response
	if err := json.Unmarshal(req.simRes, &res); err != nil {
		return err
	}
	res.Body, res.BodyEncoding = simhttp.EncodeBody(body)
	simRes, err := simhttp.Marshal(res)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, streamed{rid, simRes, req.stream, offset + int64(len(body))})
	return nil
}

// handleCancel serves cancel: the token's request rid is withdrawn
// (store.cancel; docs/API.md, "Cancellation"). Its waits and, when a
// SimServer may hold it, the net's watches wake.
func handleCancel(st *store, h *hub) func(http.ResponseWriter, *http.Request, *params, token) error {
	type response struct {
		RID    string `json:"rid"`
		Status string `json:"status"`
	}
	return func(w http.ResponseWriter, r *http.Request, p *params, t token) error {
		rid, err := p.requiredStr("rid")
		if err != nil {
			return err
		}
		net, held, err := st.cancel(r.Context(), t, rid)
		if err != nil {
			return err
		}
		h.notify(tokenSignal(t.Hash))
		if held {
			h.notify(watchSignal(net))
		}
		writeJSON(w, http.StatusOK, response{rid, statusCancelled})
		return nil
	}
}
