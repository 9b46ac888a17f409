// Client API handlers: login, pushreq, check, pullres and pullsmart.

package main

import (
	"encoding/json"
	"net/http"
	"time"
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
	}
	return func(w http.ResponseWriter, r *http.Request, p *params, t token) error {
		rid, req, err := ownRequest(r, st, p, t)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, response{rid, req.status, req.attempt})
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
// answer of this token not pulled yet).
func handlePullRes(st *store, lp *poller, smart bool) func(http.ResponseWriter, *http.Request, *params, token) error {
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
		ctx := r.Context()
		if rid == "" {
			if !smart {
				return badRequest("missing_param", "rid is required")
			}
			var res []byte
			found, err := lp.poll(ctx, pollClient, tokenSignal(t.Hash), wait, func() (bool, time.Time, error) {
				if ok, err := st.hasUnpulled(ctx, t); !ok || err != nil {
					return false, time.Time{}, err
				}
				var ok bool
				rid, res, ok, err = st.takeUnpulled(ctx, t)
				return ok, time.Time{}, err
			})
			if err != nil {
				return err
			}
			if !found {
				w.WriteHeader(http.StatusNoContent)
				return nil
			}
			writeJSON(w, http.StatusOK, answered{rid, res})
			return nil
		}

		var req requestState
		_, err = lp.poll(ctx, pollClient, tokenSignal(t.Hash), wait, func() (bool, time.Time, error) {
			var err error
			if req, err = st.requestForOwner(ctx, t, rid); err != nil {
				return false, time.Time{}, err
			}
			switch req.status {
			case statusAnswered, statusExpired, statusFailed:
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
		if req.status == statusAnswered {
			st.markPulled(req)
			writeJSON(w, http.StatusOK, answered{rid, req.simRes})
		} else {
			writeJSON(w, http.StatusAccepted, pending{rid, req.status})
		}
		return nil
	}
}
