// BenchmarkRoundTrip: what a plain HTTP request costs through the relay's
// gateway to a handler behind Serve, against the same handler served
// directly.

package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/c2cvia/c2cvia/client"
)

// BenchmarkRoundTrip: a GET through /via/ to a small handler behind Serve
// (WithConcurrency 16), from 1 and from 16 callers at once, on a relay of
// its own without rate limits. Each sub-benchmark then makes as many GETs
// to the same handler served by httptest.Server, untimed, and reports
// ops/s (through the relay), direct-ops/s, their ratio via/direct, and
// serve-calls/op, the calls Serve made to the relay per request.
func BenchmarkRoundTrip(b *testing.B) {
	r := newRelayProcess(b, "--rate-via", "0", "--rate-server", "0", "--via-addr-share", "1")
	net := testNet(b)
	hello := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "hello")
	})
	// Serve's calls to the relay, counted: as the default client, with
	// 100 idle connections.
	var calls atomic.Int64
	serveTr := http.DefaultTransport.(*http.Transport).Clone()
	serveTr.MaxIdleConnsPerHost = 100
	defer serveTr.CloseIdleConnections()
	counted := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		calls.Add(1)
		return serveTr.RoundTrip(r)
	})}
	srv := serve(b, r.url, net, testKey, hello, client.WithConcurrency(16), client.WithHTTPClient(counted))
	defer func() {
		if err := srv.stop(); !errors.Is(err, context.Canceled) {
			b.Errorf("Serve returned %v", err)
		}
	}()
	direct := httptest.NewServer(hello)
	defer direct.Close()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 64
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: within}

	via := r.url + "/via/" + net + "/hello"
	// The first request waits in the relay until Serve polls (hc's Timeout
	// bounds it): the runs start with the SimServer serving.
	if err := get(hc, via); err != nil {
		b.Fatal(err)
	}

	for _, callers := range []int{1, 16} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			b.ResetTimer()
			before := calls.Load()
			relayed, err := drive(hc, via, b.N, callers)
			b.StopTimer()
			serverCalls := calls.Load() - before
			if err != nil {
				b.Fatal(err)
			}
			alone, err := drive(hc, direct.URL+"/hello", b.N, callers)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/relayed.Seconds(), "ops/s")
			b.ReportMetric(float64(b.N)/alone.Seconds(), "direct-ops/s")
			b.ReportMetric(alone.Seconds()/relayed.Seconds(), "via/direct")
			b.ReportMetric(float64(serverCalls)/float64(b.N), "serve-calls/op")
		})
	}
}

// drive makes n GETs of url, from callers goroutines at once, and returns
// how long they took, or the first failure.
func drive(hc *http.Client, url string, n, callers int) (time.Duration, error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	began := time.Now()
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(n) {
				if err := get(hc, url); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(began)
	close(errs)
	return took, <-errs
}

// get GETs url and requires 200 "hello".
func get(hc *http.Client, url string) error {
	resp, err := hc.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || string(body) != "hello" {
		return fmt.Errorf("GET %s: %d %q", url, resp.StatusCode, body)
	}
	return nil
}
