// The crash soak's SimServer workers: they answer a SimClient's request
// with the body it came with and a gateway request with what identifies
// it (viaEcho), through kills of the relay.

package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/c2cvia/c2cvia/internal/simhttp"
)

// soakLeased is one request as pullreqsmart hands it out.
type soakLeased struct {
	RID     string          `json:"rid"`
	From    string          `json:"from"` // "via" for a gateway request
	Attempt int             `json:"attempt"`
	SimReq  json.RawMessage `json:"sim_req"`
}

// soakServe is a SimServer worker: it leases requests and answers each at
// once, but for the first delivery of a gateway request under /slow/,
// which it leaves unanswered: its caller waits past Prefer: wait=1, and
// the request is handed out again when its lease (2 s) runs out.
//
// Answers refused as already given (a redelivery after a kill) are fine;
// so is a gateway request's 404 (a synchronous one held in memory by a
// relay that died) or 410 (its caller went away), counted in via. Any
// other refusal is a failure.
func soakServe(ctx context.Context, relay *soakRelay, via *viaCounts, fail func(error)) {
	for ctx.Err() == nil {
		status, b, err := relay.call(ctx, http.MethodGet, "/api/v1/server/pullreqsmart?"+url.Values{
			"net": {soakNet}, "key": {soakKey}, "wait": {"1"}, "max": {"20"}}.Encode(), nil)
		if err != nil {
			return
		}
		var out struct {
			Requests []soakLeased `json:"requests"`
		}
		if status != http.StatusOK || json.Unmarshal(b, &out) != nil {
			fail(fmt.Errorf("pullreqsmart: %d %s", status, b))
			return
		}
		for _, req := range out.Requests {
			simRes, ok, err := soakAnswer(req)
			if err != nil {
				fail(err)
				return
			}
			if !ok {
				continue
			}
			status, b, err := relay.call(ctx, http.MethodPost, "/api/v1/server/pushres", url.Values{
				"net": {soakNet}, "key": {soakKey}, "rid": {req.RID}, "sim_res": {string(simRes)}})
			if err != nil {
				return
			}
			switch {
			case status == http.StatusOK, status == http.StatusConflict:
			case status == http.StatusGone && req.From == "via":
				via.answers410.Add(1)
			case status == http.StatusGone: // its SimClient withdrew it
			case status == http.StatusNotFound && req.From == "via":
				via.answers404.Add(1)
			default:
				fail(fmt.Errorf("pushres %s: %d %s", req.RID, status, b))
				return
			}
		}
	}
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
