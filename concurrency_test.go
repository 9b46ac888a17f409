// Many SimClients against several SimServer workers at once: every client
// gets exactly its own answers, none lost, none twice.

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestConcurrentExchanges(t *testing.T) {
	t.Parallel()
	const clients, exchanges, workers = 20, 10, 4
	r := newTestRelay(t)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: clients + workers}, Timeout: time.Minute}
	// Connections the transport dialed for a cancelled call and never used
	// would hold the relay's graceful stop for 5 s (net/http waits that long
	// for a connection's first request).
	defer hc.CloseIdleConnections()
	// The workers' long polls end with ctx: they wait on the relay's fake
	// clock, which nothing moves here.
	ctx, stop := context.WithCancel(context.Background())
	call := func(method, path string, q url.Values, body any) (int, []byte, error) {
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		callCtx := context.Background()
		if path == "/api/v1/server/pullreqsmart" {
			callCtx = ctx // the workers' long polls end with the test; their answers do not
		}
		req, _ := http.NewRequestWithContext(callCtx, method, r.URL+path+"?"+q.Encode(), rd)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}

	// Workers echo each request's body back, tagged with who served it.
	var wg sync.WaitGroup
	served := make([]int, workers)
	for w := 0; w < workers; w++ {
		wg.Go(func() {
			for ctx.Err() == nil {
				status, body, err := call("GET", "/api/v1/server/pullreqsmart",
					url.Values{"net": {"load"}, "key": {testKey}, "wait": {"1"}, "max": {"5"}}, nil)
				if ctx.Err() != nil {
					return // the clients are done
				}
				if err != nil || status != http.StatusOK {
					t.Errorf("worker %d: pullreqsmart %d %v %s", w, status, err, body)
					return
				}
				var got struct{ Requests []leased }
				if err := json.Unmarshal(body, &got); err != nil {
					t.Error(err)
					return
				}
				for _, l := range got.Requests {
					var req struct{ SimBody json.RawMessage }
					_ = json.Unmarshal(l.SimReq, &req)
					status, body, err := call("POST", "/api/v1/server/pushres", nil, map[string]any{"net": "load", "key": testKey,
						"rid": l.RID, "sim_res": map[string]any{"simBody": req.SimBody, "simHeaders": map[string]any{"X-Worker": fmt.Sprint(w)}}})
					if err != nil || status != http.StatusOK {
						t.Errorf("worker %d: pushres %d %v %s", w, status, err, body)
						return
					}
					served[w]++
				}
			}
		})
	}

	// Even clients pull each answer by rid; odd ones push all, then pull
	// whatever is answered without rid.
	var cg sync.WaitGroup
	for c := 0; c < clients; c++ {
		tok, _ := r.login("load")
		cg.Go(func() {
			want := map[string]string{} // rid -> body
			pull := func(q url.Values) (rid, body string) {
				q.Set("token", tok)
				q.Set("wait", "30")
				status, b, err := call("GET", "/api/v1/client/pullsmart", q, nil)
				if err != nil || status != http.StatusOK {
					t.Errorf("client %d: pullsmart %d %v %s", c, status, err, b)
					return "", ""
				}
				var got struct {
					RID    string
					SimRes struct{ SimBody json.RawMessage } `json:"sim_res"`
				}
				_ = json.Unmarshal(b, &got)
				return got.RID, string(got.SimRes.SimBody)
			}
			var got []string
			for i := 0; i < exchanges; i++ {
				body := fmt.Sprintf(`{"client":%d,"i":%d}`, c, i)
				status, b, err := call("POST", "/api/v1/client/pushreq", url.Values{"token": {tok}},
					map[string]any{"simEndpoint": "/echo", "simBody": json.RawMessage(body)})
				if err != nil || status != http.StatusCreated {
					t.Errorf("client %d: pushreq %d %v %s", c, status, err, b)
					return
				}
				var pushed struct{ RID string }
				_ = json.Unmarshal(b, &pushed)
				want[pushed.RID] = body
				if c%2 == 0 {
					rid, body := pull(url.Values{"rid": {pushed.RID}})
					got = append(got, rid+" "+body)
				}
			}
			for c%2 == 1 && len(got) < exchanges && !t.Failed() {
				rid, body := pull(url.Values{})
				got = append(got, rid+" "+body)
			}
			var wantList []string
			for rid, body := range want {
				wantList = append(wantList, rid+" "+body)
			}
			sort.Strings(got)
			sort.Strings(wantList)
			assert.Equal(t, wantList, got, "client %d got exactly its own answers", c)
		})
	}
	cg.Wait()
	stop()
	wg.Wait()

	total := 0
	for _, n := range served {
		total += n
	}
	assert.Equal(t, clients*exchanges, total, "every request answered exactly once")
	var answered int
	require.NoError(t, r.store.r.QueryRow(`SELECT count(*) FROM requests WHERE status = 'answered'`).Scan(&answered))
	assert.Equal(t, clients*exchanges, answered)
}
