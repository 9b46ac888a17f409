// Metrics: GET /metrics on the server's own registry, every metric fed by
// the traffic it names, labels that never carry a net, token or rid, and
// --metrics=false.

package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// scrape reads GET /metrics and returns every sample by its series as the
// text format writes it: name{label="value",...}, labels sorted by name.
func (r *testRelay) scrape() map[string]float64 {
	r.t.Helper()
	samples, _ := scrapeText(r.t, r.URL)
	return samples
}

// scrapeText scrapes base/metrics: the samples and the whole text.
func scrapeText(t testing.TB, base string) (map[string]float64, string) {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode, "%s", b)
	samples := map[string]float64{}
	for line := range strings.SplitSeq(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		require.Positive(t, i, line)
		v, err := strconv.ParseFloat(line[i+1:], 64)
		require.NoError(t, err, line)
		samples[line[:i]] = v
	}
	return samples, string(b)
}

// series names one series: series("c2cvia_requests", "status", "queued").
func series(name string, labels ...string) string {
	if len(labels) == 0 {
		return name
	}
	var pairs []string
	for i := 0; i+1 < len(labels); i += 2 {
		pairs = append(pairs, fmt.Sprintf("%s=%q", labels[i], labels[i+1]))
	}
	sort.Strings(pairs)
	return name + "{" + strings.Join(pairs, ",") + "}"
}

const httpRequests = "c2cvia_http_requests_total"

// exchange runs one whole exchange on net: pushreq, pullreqsmart, pushres,
// pullsmart. It returns the rid.
func (r *testRelay) exchange(net, key, tok string) string {
	r.t.Helper()
	rid := r.push(tok, map[string]any{"simEndpoint": "/x"})
	got := r.pullReqs(net, key, url.Values{"max": {"100"}})
	require.NotEmpty(r.t, got)
	for _, l := range got {
		require.Equal(r.t, http.StatusOK, r.answer(net, key, l.RID, map[string]any{"simBody": "ok"}).Status)
	}
	rep := r.get("/api/v1/client/pullsmart", url.Values{"token": {tok}, "rid": {rid}, "wait": {"5"}})
	require.Equal(r.t, http.StatusOK, rep.Status, string(rep.Body))
	return rid
}

// TestMetricsEndpoint: the text format with the Go and process collectors
// and every c2cvia metric the README lists, on a registry of this server:
// another relay in the same process counts its own calls, and nothing is
// registered globally.
func TestMetricsEndpoint(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, _ := r.login("alpha")
	r.exchange("alpha", testKey, tok)

	resp, err := http.Get(r.URL + "/metrics")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Contains(t, resp.Header.Get("Content-Type"), "text/plain")

	samples, text := scrapeText(t, r.URL)
	assert.Contains(t, samples, "go_goroutines")
	assert.Contains(t, samples, "process_resident_memory_bytes")
	families := regexp.MustCompile(`(?m)^# TYPE (c2cvia_\w+) `).FindAllStringSubmatch(text, -1)
	var exposed []string
	for _, f := range families {
		exposed = append(exposed, f[1])
	}
	readme, err := os.ReadFile("README.md")
	require.NoError(t, err)
	var listed []string
	for _, m := range regexp.MustCompile("(?m)^\\| `(c2cvia_\\w+)` \\|").FindAllStringSubmatch(string(readme), -1) {
		listed = append(listed, m[1])
	}
	sort.Strings(exposed)
	sort.Strings(listed)
	assert.Equal(t, listed, exposed, "the README's metrics table lists what /metrics serves")

	login := series(httpRequests, "route", "GET /api/v1/client/login", "code", "200")
	assert.Equal(t, 1.0, samples[login])
	other := newTestRelay(t)
	assert.NotContains(t, other.scrape(), login, "a new server starts from zero")
	global, err := prometheus.DefaultGatherer.Gather()
	require.NoError(t, err)
	for _, f := range global {
		assert.False(t, strings.HasPrefix(f.GetName(), "c2cvia_"), "%s is registered globally", f.GetName())
	}
}

// TestMetricsHTTPRequests: calls by route pattern and status, also the
// ones no handler answers: a preflight, a 404, a 405, a client gone.
func TestMetricsHTTPRequests(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, _ := r.login("alpha")
	r.login("alpha")
	r.get("/nope", nil)
	r.postJSON("/healthz", "", map[string]any{})
	r.get("/api/v1/client/check", url.Values{"token": {"bogus"}, "rid": {"x"}})
	preflight(t, r.URL, "/api/v1/client/pushreq", "https://app.example")
	rid := r.push(tok, map[string]any{"simEndpoint": "/x"})

	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		r.URL+"/api/v1/client/pullsmart?"+url.Values{"token": {tok}, "rid": {rid}, "wait": {longWait}}.Encode(), nil)
	require.NoError(t, err)
	gone := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		gone <- err
	}()
	r.waitPolling(1)
	cancel()
	<-gone
	closed := series(httpRequests, "route", "GET /api/v1/client/pullsmart", "code", "499")
	waitFor(t, 10*time.Second, func() bool { return r.scrape()[closed] == 1 }, "the abandoned poll counted as 499")

	m := r.scrape()
	for s, want := range map[string]float64{
		series(httpRequests, "route", "GET /api/v1/client/login", "code", "200"):    2,
		series(httpRequests, "route", "GET /api/v1/client/check", "code", "401"):    1,
		series(httpRequests, "route", "POST /api/v1/client/pushreq", "code", "201"): 1,
		series(httpRequests, "route", "unmatched", "code", "404"):                   1,
		series(httpRequests, "route", "unmatched", "code", "405"):                   1,
		series(httpRequests, "route", "preflight", "code", "204"):                   1,
	} {
		assert.Equal(t, want, m[s], s)
	}
}

// TestMetricsLongPolls: open long polls by kind, back to zero when they end.
func TestMetricsLongPolls(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, _ := r.login("alpha")
	rid := r.push(tok, map[string]any{"simEndpoint": "/x"})
	require.Len(t, r.pullReqs("alpha", testKey, nil), 1)
	r.pullReqs("beta", betaKey, nil) // claim

	polls := func(kind string) float64 { return r.scrape()[series("c2cvia_long_polls_open", "kind", kind)] }
	assert.Equal(t, 0.0, polls("client_pullsmart"), "known kinds show before their first poll")
	assert.Contains(t, r.scrape(), series("c2cvia_long_polls_open", "kind", "server_pullreqsmart"))

	client := async(func() reply {
		return r.get("/api/v1/client/pullsmart", url.Values{"token": {tok}, "rid": {rid}, "wait": {longWait}})
	})
	server := async(func() reply {
		return r.get("/api/v1/server/pullreqsmart", url.Values{"net": {"beta"}, "key": {betaKey}, "wait": {longWait}})
	})
	r.waitPolling(2)
	assert.Equal(t, 1.0, polls("client_pullsmart"))
	assert.Equal(t, 1.0, polls("server_pullreqsmart"))

	require.Equal(t, http.StatusOK, r.answer("alpha", testKey, rid, map[string]any{}).Status)
	within(t, 10*time.Second, client, "pullsmart")
	betaTok, _ := r.login("beta")
	r.push(betaTok, map[string]any{"simEndpoint": "/y"})
	within(t, 10*time.Second, server, "pullreqsmart")
	waitFor(t, 10*time.Second, func() bool { return polls("client_pullsmart") == 0 && polls("server_pullreqsmart") == 0 },
		"the gauges back to zero")
}

// TestMetricsRequestsByStatus: the gauge follows every change of status
// (pushreq, lease, pushres on a delivered and on a queued request, the
// janitor writing down failed and expired, purge deleting) and always
// equals a count of the file.
func TestMetricsRequestsByStatus(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.MaxAttempts = 1 })
	tok, _ := r.login("alpha")
	check := func(step string, want map[string]int64) {
		t.Helper()
		flushStoreWrites(t, r)
		m := r.scrape()
		got := map[string]int64{}
		for _, status := range []string{statusQueued, statusDelivered, statusAnswered, statusExpired, statusFailed} {
			got[status] = int64(m[series("c2cvia_requests", "status", status)])
		}
		assert.Equal(t, want, got, step)
		assert.Equal(t, storeStatuses(t, r), got, "%s: the gauge is a count of the file", step)
	}
	type counts = map[string]int64
	check("empty", counts{"queued": 0, "delivered": 0, "answered": 0, "expired": 0, "failed": 0})
	var rids []string
	for i := range 5 {
		rids = append(rids, r.push(tok, map[string]any{"simEndpoint": fmt.Sprint("/", i)}))
	}
	check("pushed", counts{"queued": 5, "delivered": 0, "answered": 0, "expired": 0, "failed": 0})
	got := r.pullReqs("alpha", testKey, url.Values{"max": {"2"}, "lease": {"10"}})
	require.Len(t, got, 2)
	check("leased", counts{"queued": 3, "delivered": 2, "answered": 0, "expired": 0, "failed": 0})
	require.Equal(t, http.StatusOK, r.answer("alpha", testKey, rids[0], map[string]any{}).Status)
	require.Equal(t, http.StatusOK, r.answer("alpha", testKey, rids[2], map[string]any{}).Status)
	check("answered one delivered, one queued", counts{"queued": 2, "delivered": 1, "answered": 2, "expired": 0, "failed": 0})
	r.clock.Advance(11 * time.Second) // rids[1]'s one allowed lease ran out
	purgeNow(t, r)
	check("failed", counts{"queued": 2, "delivered": 0, "answered": 2, "expired": 0, "failed": 1})
	r.clock.Advance(5 * time.Minute)
	purgeNow(t, r)
	check("expired", counts{"queued": 0, "delivered": 0, "answered": 2, "expired": 2, "failed": 1})
	r.clock.Advance(10 * time.Minute)
	purgeNow(t, r)
	check("purged", counts{"queued": 0, "delivered": 0, "answered": 0, "expired": 0, "failed": 0})
}

// TestMetricsExchangeTimes: queue wait is pushreq to first hand-out; server
// time is first hand-out to the answer, redeliveries included. Times are the
// store's clock.
func TestMetricsExchangeTimes(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, _ := r.login("alpha")
	r.pullReqs("alpha", testKey, nil) // claim

	rid := r.push(tok, map[string]any{"simEndpoint": "/x"})
	r.clock.Advance(3 * time.Second)
	leaseOne(t, r, "alpha", rid, nil)
	r.clock.Advance(5 * time.Second)
	require.Equal(t, http.StatusOK, r.answer("alpha", testKey, rid, map[string]any{}).Status)

	rid = r.push(tok, map[string]any{"simEndpoint": "/y"})
	r.clock.Advance(time.Second)
	leaseOne(t, r, "alpha", rid, url.Values{"lease": {"2"}})
	r.clock.Advance(3 * time.Second) // the lease ran out: handed out again
	assert.Equal(t, 2, leaseOne(t, r, "alpha", rid, nil).Attempt)
	r.clock.Advance(2 * time.Second)
	require.Equal(t, http.StatusOK, r.answer("alpha", testKey, rid, map[string]any{}).Status)

	m := r.scrape()
	assert.Equal(t, 2.0, m["c2cvia_exchange_queue_wait_seconds_count"], "one per request: its first hand-out")
	assert.Equal(t, 3.0+1.0, m["c2cvia_exchange_queue_wait_seconds_sum"])
	assert.Equal(t, 2.0, m["c2cvia_exchange_server_seconds_count"])
	assert.Equal(t, 5.0+5.0, m["c2cvia_exchange_server_seconds_sum"], "from the first hand-out")
	assert.Equal(t, 2.0, m[series("c2cvia_exchange_server_seconds_bucket", "le", "5")], "both within 5 s")
	assert.Equal(t, 0.0, m[series("c2cvia_exchange_server_seconds_bucket", "le", "2.5")], "neither within 2.5 s")
}

// TestMetricsRelayOverhead: a long poll's overhead leaves out the time it
// was parked; a poll held parked for a real 300 ms costs far less.
func TestMetricsRelayOverhead(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, _ := r.login("alpha")
	rid := r.push(tok, map[string]any{"simEndpoint": "/x"})
	start := time.Now()
	poll := async(func() reply {
		return r.get("/api/v1/client/pullsmart", url.Values{"token": {tok}, "rid": {rid}, "wait": {"1"}})
	})
	r.waitAsleep(1)
	// Overhead is measured in real time: the poll stays parked for a real
	// 300 ms (the event waited for here is that much time passing), then
	// the relay's clock runs its wait out.
	<-time.After(300 * time.Millisecond)
	r.advance(time.Second)
	rep := within(t, 10*time.Second, poll, "pullsmart after its wait")
	require.Equal(t, http.StatusAccepted, rep.Status, "nobody answered: the poll waited its second")
	require.GreaterOrEqual(t, time.Since(start), 300*time.Millisecond)

	m := r.scrape()
	pull := func(suffix string) float64 {
		return m[series("c2cvia_relay_overhead_seconds"+suffix, "route", "GET /api/v1/client/pullsmart")]
	}
	assert.Equal(t, 1.0, pull("_count"))
	assert.Less(t, pull("_sum"), 0.3, "the 300 ms parked are not overhead")
	assert.Equal(t, 1.0, m[series("c2cvia_relay_overhead_seconds_count", "route", "POST /api/v1/client/pushreq")])
	assert.NotContains(t, m, series("c2cvia_relay_overhead_seconds_count", "route", "GET /metrics"),
		"observed after the scrape answered")
}

// TestMetricsStreamOverhead: an event stream held open for a real 300 ms,
// through a keep-alive, costs no more overhead than a call: its waits are
// parked time, counted once (never below zero).
func TestMetricsStreamOverhead(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, _ := r.login("alpha")
	ctx, cancel := context.WithCancel(context.Background())
	s := openStream(t, ctx, r.URL+"/api/v1/peer/stream?token="+url.QueryEscape(tok), nil)
	r.waitAsleep(1)
	<-time.After(300 * time.Millisecond) // real time parked, as above
	r.advance(keepAlive)
	s.next(t, true)
	cancel()
	r.waitPolling(0)
	waitFor(t, 10*time.Second, func() bool {
		return r.scrape()[series("c2cvia_relay_overhead_seconds_count", "route", "GET /api/v1/peer/stream")] == 1
	}, "the stream's overhead observed")
	sum := r.scrape()[series("c2cvia_relay_overhead_seconds_sum", "route", "GET /api/v1/peer/stream")]
	assert.GreaterOrEqual(t, sum, 0.0, "overhead is never negative")
	assert.Less(t, sum, 0.3, "the 300 ms parked are not overhead")
}

// TestMetricsStoreCommits: one observation per group commit, of as many
// writes as it held.
func TestMetricsStoreCommits(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	tok, _ := r.login("alpha")
	for range 5 {
		r.push(tok, map[string]any{"simEndpoint": "/x"})
	}
	flushStoreWrites(t, r)
	m := r.scrape()
	commits, writes := float64(r.store.commits.Load()), float64(r.store.writes.Load())
	require.GreaterOrEqual(t, writes, 7.0) // login, 5 pushes, the flush
	assert.Equal(t, commits, m["c2cvia_store_commit_seconds_count"])
	assert.Equal(t, commits, m["c2cvia_store_commit_writes_count"])
	assert.Equal(t, writes, m["c2cvia_store_commit_writes_sum"])
	assert.Positive(t, m["c2cvia_store_commit_seconds_sum"])
}

// TestMetricsLabelsBounded: after traffic on several nets, no net name,
// rid, token, peer_id or key appears anywhere in /metrics, and the c2cvia
// metrics use only the bounded labels.
func TestMetricsLabelsBounded(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	var secrets []string
	for i := range 3 {
		net, key := fmt.Sprintf("zebranet%d", i), fmt.Sprintf("zebrakey-%d-0123456789", i)
		tok, peer := r.login(net)
		rid := r.exchange(net, key, tok)
		r.get("/api/v1/client/check", url.Values{"token": {tok}, "rid": {rid}})
		r.get("/api/v1/client/pullres", url.Values{"token": {tok}, "rid": {"no-such-rid-" + net}})
		secrets = append(secrets, net, key, tok, peer, rid)
	}
	_, text := scrapeText(t, r.URL)
	for _, s := range secrets {
		assert.NotContains(t, text, s)
	}
	assert.NotContains(t, text, "zebra")
	allowed := []string{"route", "code", "kind", "status", "limit", "limiter", "le", "version", "revision", "goversion"}
	for _, m := range regexp.MustCompile(`(?m)^c2cvia_\w+\{(.*)\} `).FindAllStringSubmatch(text, -1) {
		for _, pair := range regexp.MustCompile(`(\w+)="`).FindAllStringSubmatch(m[1], -1) {
			assert.True(t, slices.Contains(allowed, pair[1]), "label %s in %s", pair[1], m[0])
		}
	}
}

// TestMetricsDisabled: --metrics=false (C2CVIA_METRICS=false) turns the
// endpoint into an unknown route.
func TestMetricsDisabled(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.Metrics = false })
	rep := r.get("/metrics", nil)
	assertErrorShape(t, rep, http.StatusNotFound, "no_route")

	base, _ := startRun(t, map[string]string{"C2CVIA_METRICS": "false"},
		"serve", "--addr", "127.0.0.1:0", "--db", testDB(t, "relay2.db"))
	resp, err := http.Get(base + "/metrics")
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusNotFound, resp.StatusCode)
	base, _ = startRun(t, nil, "serve", "--addr", "127.0.0.1:0", "--db", testDB(t, "relay3.db"))
	samples, _ := scrapeText(t, base)
	assert.Contains(t, samples, "go_goroutines", "on by default")
}
