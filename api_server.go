// Server API handlers: pullreqsmart, pushres and extend, for the SimServer
// that holds a net's key.

package main

import (
	"net/http"
	"time"
)

func handlePullReqSmart(st *store, lp *poller, pres *presence, cfg config, pf *preflights) apiFunc {
	type response struct {
		Requests []leasedRequest `json:"requests"`
	}
	return func(w http.ResponseWriter, r *http.Request, p *params) error {
		net, key, err := serverAuth(r, p)
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
		if err := authorizeServer(r, st, net, key); err != nil {
			return err
		}
		pf.set(net, preflight)
		st.touchNet(net)
		defer st.touchNet(net)
		defer pres.polling(net)()

		got := []leasedRequest{}
		_, err = lp.poll(ctx, pollServer, netSignal(net), wait, func() (bool, time.Time, error) {
			ready, nextLease, err := st.readyState(ctx, net)
			if err != nil || !ready {
				return false, nextLease, err
			}
			// If another SimServer was quicker, wait again: the winner's
			// notifyAt below wakes this poll when its lease runs out.
			got, err = st.lease(ctx, net, max, lease)
			return len(got) > 0, nextLease, err
		})
		if err != nil {
			return err
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
		writeJSON(w, http.StatusOK, response{got})
		return nil
	}
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
func authorizeServer(r *http.Request, st *store, net, key string) error {
	k, err := checkServerKey(r, st, net, key)
	if err != nil {
		return err
	}
	return st.claimNet(r.Context(), k)
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

func handlePushRes(st *store, h *hub, answers *answerBox) apiFunc {
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
		k, err := checkServerKey(r, st, net, key)
		if err != nil {
			return err
		}
		owner, err := st.answer(r.Context(), k, rid, simRes)
		if err != nil {
			return err
		}
		answers.deliver(rid, simRes) // a /via/ request waiting for it
		h.notify(tokenSignal(owner))
		writeJSON(w, http.StatusOK, response{rid, statusAnswered})
		return nil
	}
}

func handleExtend(st *store, cfg config) apiFunc {
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
		until, err := st.extend(r.Context(), k, rid, lease)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, response{rid, formatMS(until)})
		return nil
	}
}
