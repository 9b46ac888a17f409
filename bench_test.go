// Benchmarks of the store's hot statements and of whole exchanges over HTTP,
// for comparing changes with benchstat. No test asserts a speed.

package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func benchStore(b *testing.B, sync string) *store {
	b.Helper()
	st, err := openStore(context.Background(), filepath.Join(b.TempDir(), "bench.db"), testStoreOptions(nil, func(o *storeOptions) { o.Sync = sync }))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	return st
}

var benchSimReq = []byte(`{"simEndpoint":"/items/7","simMethod":"GET","simHeaders":{},"simBody":null,"simQueryParams":{},"simRouteParams":{}}`)

// BenchmarkStore times each hot statement alone, one caller at a time.
func BenchmarkStore(b *testing.B) {
	ctx := context.Background()
	for _, sync := range []string{"normal", "full"} {
		b.Run("sync="+sync, func(b *testing.B) {
			st := benchStore(b, sync)
			_, tok, err := st.createToken(ctx, "bench", "")
			if err != nil {
				b.Fatal(err)
			}
			var rids []string
			b.Run("insert", func(b *testing.B) {
				for b.Loop() {
					rid, err := st.pushRequest(ctx, tok, benchSimReq, "")
					if err != nil {
						b.Fatal(err)
					}
					rids = append(rids, rid)
				}
			})
			b.Run("lease", func(b *testing.B) {
				for b.Loop() {
					got, err := st.lease(ctx, "bench", 1, time.Minute)
					if err != nil || len(got) == 0 {
						b.StopTimer()
						if _, err := st.pushRequest(ctx, tok, benchSimReq, ""); err != nil {
							b.Fatal(err)
						}
						b.StartTimer()
					}
				}
			})
			i := 0 // the next rid to answer, across runs of the sub-benchmark
			b.Run("answer", func(b *testing.B) {
				for b.Loop() {
					if i == len(rids) {
						b.StopTimer()
						rid, _ := st.pushRequest(ctx, tok, benchSimReq, "")
						rids = append(rids, rid)
						b.StartTimer()
					}
					if _, err := st.answer(ctx, serverKey{net: "bench"}, rids[i], []byte(`{"simStatus":200,"simHeaders":{},"simBody":"ok"}`), nil); err != nil {
						b.Fatal(err)
					}
					i++
				}
			})
			// readyState is what every pullreqsmart reads first, and again
			// whenever it is woken.
			b.Run("ready", func(b *testing.B) {
				for b.Loop() {
					if _, _, err := st.readyState(ctx, "bench"); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("read", func(b *testing.B) {
				for b.Loop() {
					if _, err := st.requestForOwner(ctx, tok, rids[0]); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// BenchmarkExchange runs whole exchanges over loopback HTTP (pushreq,
// pullreqsmart, pushres, pullsmart) and, as the baseline measured in the same
// run, four round trips to a plain handler answering the same bytes.
func BenchmarkExchange(b *testing.B) {
	direct := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"rid":"M0UCvH8bZHutHQBN61HTRA"}`)
	}))
	b.Cleanup(direct.Close)
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	get := func(u string) []byte {
		resp, err := hc.Get(u)
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return body
	}
	post := func(u, body string) []byte {
		resp, err := hc.Post(u, "application/json", strings.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		out, _ := io.ReadAll(resp.Body)
		return out
	}
	b.Run("direct", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				post(direct.URL, `{}`)
				get(direct.URL)
				post(direct.URL, `{}`)
				get(direct.URL)
			}
		})
	})
	for _, sync := range []string{"normal", "full"} {
		b.Run("relay/sync="+sync, func(b *testing.B) {
			r := newTestRelay(b, func(c *config) { c.Sync = sync })
			st := r.store
			net := "bench"
			b.RunParallel(func(pb *testing.PB) {
				var login struct{ Token string }
				json.Unmarshal(get(r.URL+"/api/v1/client/login?net="+net), &login)
				// Each goroutine is a SimClient and its own SimServer on its
				// own net, so a lease always finds the request just pushed.
				own := fmt.Sprintf("%s-%p", net, &login)
				json.Unmarshal(get(r.URL+"/api/v1/client/login?net="+own), &login)
				q := url.Values{"token": {login.Token}}.Encode()
				for pb.Next() {
					var pushed struct{ RID string }
					json.Unmarshal(post(r.URL+"/api/v1/client/pushreq?"+q, `{"simEndpoint":"/items/7","simMethod":"GET"}`), &pushed)
					get(r.URL + "/api/v1/server/pullreqsmart?wait=1&net=" + own + "&key=" + testKey)
					post(r.URL+"/api/v1/server/pushres", `{"net":"`+own+`","key":"`+testKey+`","rid":"`+pushed.RID+`","simBody":"ok"}`)
					get(r.URL + "/api/v1/client/pullsmart?rid=" + pushed.RID + "&" + q)
				}
			})
			b.ReportMetric(float64(st.writes.Load())/float64(max(st.commits.Load(), 1)), "writes/commit")
		})
	}
}

// BenchmarkBacklog leases and answers with a million requests queued ahead,
// and times opening such a store: both must not grow with the backlog.
// Filling the store takes a while; it runs only when asked for by name.
func BenchmarkBacklog(b *testing.B) {
	ctx := context.Background()
	path := filepath.Join(b.TempDir(), "backlog.db")
	st, err := openStore(ctx, path, testStoreOptions(nil))
	if err != nil {
		b.Fatal(err)
	}
	_, tok, err := st.createToken(ctx, "bench", "")
	if err != nil {
		b.Fatal(err)
	}
	const backlog = 1_000_000
	start := time.Now()
	err = st.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
			INSERT INTO requests (rid, net, token_hash, from_peer, status, sim_req, created_at, expires_at)
			SELECT 'backlog-' || i, 'bench', ?, ?, 'queued', ?, ?, ? FROM n`,
			backlog, tok.Hash, tok.PeerID, string(benchSimReq), st.nowMS(), st.nowMS()+time.Hour.Milliseconds())
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("queued %d requests in %s", backlog, time.Since(start).Round(time.Millisecond))
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	start = time.Now()
	st, err = openStore(ctx, path, testStoreOptions(nil))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { st.Close() })
	open := time.Since(start)
	for b.Loop() {
		got, err := st.lease(ctx, "bench", 1, time.Minute)
		if err != nil || len(got) != 1 {
			b.Fatal(err, len(got))
		}
		if _, err := st.answer(ctx, serverKey{net: "bench"}, got[0].RID, []byte(`{"simStatus":200}`), nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(open.Microseconds()), "open-µs")
}

// BenchmarkBroadcast times a broadcast to 1,000 peers long-polling over
// HTTP, from the call until every one of them has its reply: one op is one
// broadcast fanned out to all. sql-reads/op counts the message reads that
// went to SQL instead of the cache (0 when every waiter reads memory).
func BenchmarkBroadcast(b *testing.B) {
	const peers = 1000
	r := newTestRelay(b)
	st, srv := r.store, r.srv
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2 * peers}}
	b.Cleanup(hc.CloseIdleConnections)
	login := func() string {
		resp, err := hc.Get(r.URL + "/api/v1/client/login?net=crowd")
		if err != nil {
			b.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct{ Token string }
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
			b.Fatal(err)
		}
		return out.Token
	}
	sender := login()
	tokens := make([]string, peers)
	for i := range tokens {
		tokens[i] = login()
	}
	since := int64(0)
	reads := st.msgReads.Load()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		done := make(chan error, peers)
		for _, tok := range tokens {
			go func() {
				resp, err := hc.Get(r.URL + "/api/v1/peer/pullsmart?wait=60&since=" + fmt.Sprint(since) + "&token=" + tok)
				if err == nil {
					var page struct{ Messages []json.RawMessage }
					err = json.NewDecoder(resp.Body).Decode(&page)
					resp.Body.Close()
					if err == nil && len(page.Messages) != 1 {
						err = fmt.Errorf("got %d messages", len(page.Messages))
					}
				}
				done <- err
			}()
		}
		waitFor(b, 10*time.Second, func() bool { return srv.poller.open.Load() >= peers }, "every peer's poll open")
		b.StartTimer()
		resp, err := hc.Post(r.URL+"/api/v1/peer/broadcast?token="+sender, "application/json", strings.NewReader(`{"data":{"hello":"everyone"}}`))
		if err != nil {
			b.Fatal(err)
		}
		var sent struct{ ID, Receivers int64 }
		err = json.NewDecoder(resp.Body).Decode(&sent)
		resp.Body.Close()
		if err != nil || sent.Receivers != peers {
			b.Fatalf("broadcast: %v, %d receivers", err, sent.Receivers)
		}
		for range peers {
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		}
		since = sent.ID
	}
	b.StopTimer()
	b.ReportMetric(float64(st.msgReads.Load()-reads)/float64(b.N), "sql-reads/op")
}
