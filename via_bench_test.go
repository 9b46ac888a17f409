package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// BenchmarkGatewayMapping: the gateway's own work for one request of a
// browser's shape (a dozen headers, a small JSON body) and its answer:
// mapping the request to its sim_req, and the sim_res to the response.
// The store and the wait are not in it.
func BenchmarkGatewayMapping(b *testing.B) {
	g := &gateway{cfg: config{MaxBody: 1 << 20}}
	simRes := []byte(`{"simStatus":200,"simHeaders":{"Content-Type":"application/json","Cache-Control":"no-store","Set-Cookie":["a=1","b=2"]},"simBody":"{\"ok\":true,\"items\":[1,2,3]}"}`)
	body := `{"name":"lamp","price":12.5,"tags":["a","b"]}`
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/via/shop/api/items?x=1&y=2", strings.NewReader(body))
		for _, h := range [][2]string{{"Content-Type", "application/json"}, {"Accept", "application/json"},
			{"Accept-Language", "en-GB,en;q=0.9"}, {"Accept-Encoding", "gzip, deflate, br"}, {"User-Agent", "Mozilla/5.0 (X11; Linux x86_64)"},
			{"Origin", "https://app.example"}, {"Referer", "https://app.example/page"}, {"Cookie", "sid=abc123"},
			{"Sec-Fetch-Mode", "cors"}, {"Sec-Fetch-Site", "cross-site"}, {"Connection", "keep-alive"}} {
			req.Header.Set(h[0], h[1])
		}
		t := viaTarget{net: "shop", target: "/api/items?x=1&y=2"}
		if _, err := g.simRequest(httptest.NewRecorder(), req, t); err != nil {
			b.Fatal(err)
		}
		if err := g.writeAnswer(httptest.NewRecorder(), req, t, simRes); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGateway: GET /via/NET/x answered by a SimServer that posts its
// answers with its next poll, with the request held in memory while its
// caller waits (no Prefer: the default) and stored (Prefer: wait=30, which
// the gateway stores so that a 202 can follow). writes/op is the store's
// writes per request: 0 for the held path.
func BenchmarkGateway(b *testing.B) {
	for _, mode := range []struct{ name, prefer string }{{"held", ""}, {"stored", "wait=30"}} {
		b.Run(mode.name, func(b *testing.B) {
			r := newTestRelay(b)
			stopServers := serveByPoll(b, r, "gw", 2)
			defer stopServers()
			hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
			writes := r.store.writes.Load()
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequest(http.MethodGet, r.URL+"/via/gw/x", nil)
					if mode.prefer != "" {
						req.Header.Set("Prefer", mode.prefer)
					}
					resp, err := hc.Do(req)
					if err != nil {
						b.Fatal(err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK || string(body) != "ok" {
						b.Fatalf("%d %s", resp.StatusCode, body)
					}
				}
			})
			b.ReportMetric(float64(r.store.writes.Load()-writes)/float64(b.N), "writes/op")
		})
	}
}

// serveByPoll runs n SimServers of net that answer every request "ok" with
// their next poll (pullreqsmart with answers), until stop.
func serveByPoll(b testing.TB, r *testRelay, net string, n int) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			hc := &http.Client{}
			var ready []string
			for ctx.Err() == nil {
				answers := make([]map[string]any, len(ready))
				for i, rid := range ready {
					answers[i] = map[string]any{"rid": rid, "sim_res": map[string]any{"simBody": "ok"}}
				}
				body, _ := json.Marshal(map[string]any{"net": net, "key": testKey, "wait": 5, "max": 16, "answers": answers})
				req, _ := http.NewRequestWithContext(ctx, http.MethodPost, r.URL+"/api/v1/server/pullreqsmart", bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				resp, err := hc.Do(req)
				if err != nil {
					return // stopped
				}
				var out struct{ Requests []struct{ RID string } }
				err = json.NewDecoder(resp.Body).Decode(&out)
				resp.Body.Close()
				if err != nil {
					return
				}
				ready = ready[:0]
				for _, l := range out.Requests {
					ready = append(ready, l.RID)
				}
			}
		})
	}
	return func() { cancel(); wg.Wait() }
}
