// The crash soak's SimServer workers: they answer a SimClient's request
// with the body it came with and a gateway request with what identifies
// it (viaEcho), through kills of the relay, half of them with a pushres
// each and half with their next pullreqsmart.

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/c2cvia/c2cvia/internal/simhttp"
)

// soakLeased is one request as pullreqsmart hands it out.
type soakLeased struct {
	RID     string          `json:"rid"`
	From    string          `json:"from"` // "via" for a gateway request
	Attempt int             `json:"attempt"`
	SimReq  json.RawMessage `json:"sim_req"`
}

// serveCounts are the SimServer workers' figures.
type serveCounts struct {
	pushres, withPoll atomic.Int64 // answers taken, by how they were posted
	via404, via410    atomic.Int64 // answers to gateway requests refused so
}

// soakServe is a SimServer worker: it leases requests and answers each at
// once, but for the first delivery of a gateway request under /slow/,
// which it leaves unanswered: its caller waits past Prefer: wait=1, and
// the request is handed out again when its lease (2 s) runs out. withPoll:
// it posts its answers with its next pullreqsmart (docs/API.md, "Answering
// and polling in one call"), else with a pushres each.
//
// Answers refused as already given (a redelivery after a kill, or a call
// repeated after its reply was lost) are fine; so is a gateway request's
// 404 (a synchronous one held in memory by a relay that died) or 410 (its
// caller went away), counted. Any other refusal is a failure.
func soakServe(ctx context.Context, relay *soakRelay, withPoll bool, counts *serveCounts, fail func(error)) {
	var ready []soakReady // answers for the next pullreqsmart
	for ctx.Err() == nil {
		form := url.Values{"net": {soakNet}, "key": {soakKey}, "wait": {"1"}, "max": {"20"}}
		method, path := http.MethodGet, "/api/v1/server/pullreqsmart?"+form.Encode()
		if len(ready) > 0 {
			type answer struct {
				RID    string          `json:"rid"`
				SimRes json.RawMessage `json:"sim_res"`
			}
			list := make([]answer, len(ready))
			for i, a := range ready {
				list[i] = answer{a.req.RID, a.simRes}
			}
			answers, err := json.Marshal(list)
			if err != nil {
				fail(err)
				return
			}
			form.Set("answers", string(answers))
			method, path = http.MethodPost, "/api/v1/server/pullreqsmart"
		} else {
			form = nil
		}
		status, b, err := relay.call(ctx, method, path, form)
		if err != nil {
			return
		}
		var out struct {
			Requests []soakLeased `json:"requests"`
			Answers  []struct {
				RID   string `json:"rid"`
				Error *struct {
					Status int `json:"status"`
				} `json:"error"`
			} `json:"answers"`
		}
		if status != http.StatusOK || json.Unmarshal(b, &out) != nil || len(out.Answers) != len(ready) {
			fail(fmt.Errorf("pullreqsmart with %d answers: %d %s", len(ready), status, b))
			return
		}
		for i, a := range out.Answers {
			status := http.StatusOK
			if a.Error != nil {
				status = a.Error.Status
			}
			if err := counts.settle(ready[i].req, status, &counts.withPoll); err != nil || a.RID != ready[i].req.RID {
				fail(fmt.Errorf("pullreqsmart: answer %d to %s: %s", i, ready[i].req.RID, b))
				return
			}
		}
		ready = ready[:0]
		for _, req := range out.Requests {
			simRes, ok, err := soakAnswer(req)
			if err != nil {
				fail(err)
				return
			}
			if !ok {
				continue
			}
			if withPoll {
				ready = append(ready, soakReady{req, simRes})
				continue
			}
			status, b, err := relay.call(ctx, http.MethodPost, "/api/v1/server/pushres", url.Values{
				"net": {soakNet}, "key": {soakKey}, "rid": {req.RID}, "sim_res": {string(simRes)}})
			if err != nil {
				return
			}
			if err := counts.settle(req, status, &counts.pushres); err != nil {
				fail(fmt.Errorf("pushres %s: %w: %s", req.RID, err, b))
				return
			}
		}
	}
}

// soakReady is an answer waiting for the next pullreqsmart.
type soakReady struct {
	req    soakLeased
	simRes []byte
}

// settle counts how the relay took an answer to req (the status its
// pushres had, or would have had), in taken when it was taken; its error
// is for a refusal the soak does not expect.
func (c *serveCounts) settle(req soakLeased, status int, taken *atomic.Int64) error {
	switch {
	case status == http.StatusOK:
		taken.Add(1)
	case status == http.StatusConflict: // answered before: a kill, or a call repeated
	case status == http.StatusGone && req.From == "via":
		c.via410.Add(1)
	case status == http.StatusGone: // its SimClient withdrew it
	case status == http.StatusNotFound && req.From == "via":
		c.via404.Add(1)
	default:
		return fmt.Errorf("answered %d", status)
	}
	return nil
}

// soakAnswer is req's sim_res; ok is false for a first delivery left
// unanswered on purpose.
func soakAnswer(req soakLeased) (simRes []byte, ok bool, err error) {
	if req.From != "via" {
		var sr struct {
			Body json.RawMessage `json:"simBody"`
		}
		if err := json.Unmarshal(req.SimReq, &sr); err != nil {
			return nil, false, fmt.Errorf("sim_req of %s: %w", req.RID, err)
		}
		return []byte(`{"simStatus":200,"simBody":` + string(sr.Body) + `}`), true, nil
	}
	// A gateway request, rebuilt as a web server's handler would get it.
	var sr simhttp.Request
	if err := json.Unmarshal(req.SimReq, &sr); err != nil {
		return nil, false, fmt.Errorf("sim_req of %s: %w", req.RID, err)
	}
	hr, err := sr.HTTPRequest()
	if err != nil {
		return nil, false, fmt.Errorf("sim_req of %s: %w", req.RID, err)
	}
	if strings.HasPrefix(hr.URL.Path, "/slow/") && req.Attempt == 1 {
		return nil, false, nil
	}
	body, err := io.ReadAll(hr.Body)
	if err != nil {
		return nil, false, err
	}
	echo := viaEcho(hr.Method, hr.RequestURI, body)
	simRes, err = simhttp.Marshal(simhttp.FromResponse(echo.status, echo.header(), echo.body))
	return simRes, err == nil, err
}
