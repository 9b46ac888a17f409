// A measurement, not a quick test: one client address floods a relay on
// serve's defaults with 1 MB gateway requests to nets nobody serves, while
// another address pushes 16 KiB orders to a served net; it reports how long until the other
// address's writes are refused, if ever. It writes up to --max-store (2 GiB)
// to a temp dir, so it runs only when asked:
//
//	C2CVIA_FLOOD=60 go test -count=1 -run TestStoreFloodFromOneAddress -v .

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestStoreFloodFromOneAddress: 16 connections of one address post 1 MB
// `Prefer: respond-async` requests to 12 unclaimed nets at 85/s (under
// --rate-ip), for C2CVIA_FLOOD seconds; a SimClient of another address
// pushes a 16 KiB order to its served net every 100 ms. Before the budgets of who sends,
// the store was full after about 25 s and every write of every net got 507
// store_full; now the flood is refused and the other net never is.
func TestStoreFloodFromOneAddress(t *testing.T) {
	// Not in parallel: a measurement, which wants the machine.
	secs, _ := strconv.Atoi(os.Getenv("C2CVIA_FLOOD"))
	if secs <= 0 {
		t.Skip("a measurement that writes up to 2 GiB: set C2CVIA_FLOOD=SECONDS to run it")
	}
	const attacker, victim = "203.0.113.7", "198.51.100.9"
	p := startRelayProcess(t, testDB(t, "relay.db"), "--trust-proxy", "127.0.0.1", "--access-log=false")
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(secs)*time.Second)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	call := func(method, path, from string, body []byte, header map[string]string) (int, string) {
		req, err := http.NewRequestWithContext(ctx, method, p.URL+path, bytes.NewReader(body))
		if err != nil {
			return 0, err.Error()
		}
		req.Header.Set("X-Forwarded-For", from)
		for k, v := range header {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var e struct {
			Error struct{ Code string } `json:"error"`
		}
		_ = json.Unmarshal(b, &e)
		return resp.StatusCode, e.Error.Code
	}

	// The victim: a served net, its SimServer answering, a SimClient pushing.
	status, _ := call(http.MethodGet, "/api/v1/server/pullreqsmart?"+url.Values{"net": {"victim"}, "key": {testKey}, "wait": {"0"}}.Encode(), victim, nil, nil)
	require.Equal(t, http.StatusOK, status)
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/api/v1/server/pullreqsmart?"+
				url.Values{"net": {"victim"}, "key": {testKey}, "wait": {"5"}, "max": {"100"}}.Encode(), nil)
			req.Header.Set("X-Forwarded-For", victim)
			resp, err := client.Do(req)
			if err != nil {
				continue
			}
			var out struct{ Requests []struct{ RID string } }
			_ = json.NewDecoder(resp.Body).Decode(&out)
			resp.Body.Close()
			for _, l := range out.Requests {
				b, _ := json.Marshal(map[string]any{"net": "victim", "rid": l.RID, "sim_res": map[string]any{"simBody": "ok"}})
				call(http.MethodPost, "/api/v1/server/pushres", victim, b, map[string]string{"Content-Type": "application/json", "Authorization": "Bearer " + testKey})
			}
		}
	})
	req, _ := http.NewRequest(http.MethodGet, p.URL+"/api/v1/client/login?net=victim", nil)
	req.Header.Set("X-Forwarded-For", victim)
	resp, err := client.Do(req)
	require.NoError(t, err)
	var login struct{ Token string }
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&login))
	resp.Body.Close()

	start := time.Now()
	var victimOK, victimFull atomic.Int64
	var firstFull atomic.Value // "after X: code"
	wg.Go(func() {
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		order := strings.Repeat("o", 16<<10) // a modest form upload
		body, _ := json.Marshal(map[string]any{"sim_req": map[string]any{"simEndpoint": "/order", "simBody": order}})
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			switch status, code := call(http.MethodPost, "/api/v1/client/pushreq", victim, body,
				map[string]string{"Content-Type": "application/json", "Authorization": "Bearer " + login.Token}); status {
			case http.StatusCreated:
				victimOK.Add(1)
			case http.StatusInsufficientStorage:
				if victimFull.Add(1) == 1 {
					firstFull.Store(fmt.Sprintf("%.1f s: %s", time.Since(start).Seconds(), code))
				}
			}
		}
	})

	// The flood: 16 connections, 85 requests a second, 12 nets nobody serves.
	flood := bytes.Repeat([]byte("f"), 1_000_000)
	tickets := make(chan int)
	wg.Go(func() {
		tick := time.NewTicker(time.Second / 85)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-ctx.Done():
				close(tickets)
				return
			case <-tick.C:
			}
			select {
			case tickets <- i:
			case <-ctx.Done():
			}
		}
	})
	var mu sync.Mutex
	outcomes := map[string]int{}
	firstRefusal := ""
	for range 16 {
		wg.Go(func() {
			for i := range tickets {
				status, code := call(http.MethodPost, fmt.Sprintf("/via/flood-%d/upload", i%12), attacker, flood,
					map[string]string{"Prefer": "respond-async", "Content-Type": "text/plain"})
				if status == 0 {
					continue // the run ended
				}
				mu.Lock()
				k := strconv.Itoa(status) + " " + code
				outcomes[k]++
				if status != http.StatusAccepted && firstRefusal == "" {
					firstRefusal = fmt.Sprintf("%.1f s: %s", time.Since(start).Seconds(), k)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	first, _ := firstFull.Load().(string)
	if first == "" {
		first = "never"
	}
	t.Logf("flood for %d s: attacker %v, first refused at %s", secs, outcomes, firstRefusal)
	t.Logf("victim's pushes: %d created, %d refused 507; first 507 at %s", victimOK.Load(), victimFull.Load(), first)
	assert.Zero(t, victimFull.Load(), "the other address's net is never refused")
	assert.Positive(t, victimOK.Load())
}
