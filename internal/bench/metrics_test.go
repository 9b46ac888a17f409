// Tests of what the bench reads from a relay's /metrics: the sum of the
// open-poll gauge over its kinds, the commit histogram's count and sum, and
// what happens when a relay serves no metrics.

package bench

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// relayMetricsText is the relay's /metrics as serve writes it (a part of
// it), with polls open of three kinds and 41 commits of 97 writes.
func relayMetricsText(pollsOpen int) string {
	return fmt.Sprintf(`# HELP c2cvia_long_polls_open Long polls in progress, by kind.
# TYPE c2cvia_long_polls_open gauge
c2cvia_long_polls_open{kind="client_pullsmart"} %d
c2cvia_long_polls_open{kind="peer_pullsmart"} 0
c2cvia_long_polls_open{kind="peer_stream"} 2
c2cvia_long_polls_open{kind="server_pullreqsmart"} 1
c2cvia_long_polls_open{kind="via"} 0
# HELP c2cvia_store_commit_writes Writes in one group commit.
# TYPE c2cvia_store_commit_writes histogram
c2cvia_store_commit_writes_bucket{le="1"} 12
c2cvia_store_commit_writes_bucket{le="2"} 30
c2cvia_store_commit_writes_bucket{le="4"} 41
c2cvia_store_commit_writes_bucket{le="+Inf"} 41
c2cvia_store_commit_writes_sum 97
c2cvia_store_commit_writes_count 41
# HELP go_gc_duration_seconds A summary of the wall-time pause (stop-the-world) duration in garbage collection cycles.
# TYPE go_gc_duration_seconds summary
go_gc_duration_seconds{quantile="0"} 2.1e-05
go_gc_duration_seconds{quantile="1"} 0.000123
go_gc_duration_seconds_sum 0.0004
go_gc_duration_seconds_count 5
`, pollsOpen)
}

// metricsServer serves body at /metrics, or 404 when body is empty; it
// records the Accept header of the last scrape.
func metricsServer(t *testing.T, body func() string) (*target, *atomic.Value) {
	t.Helper()
	var accept atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		accept.Store(r.Header.Get("Accept"))
		b := body()
		if r.URL.Path != "/metrics" || b == "" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		_, _ = w.Write([]byte(b))
	}))
	t.Cleanup(srv.Close)
	tg := newTarget("relay", srv.URL, 1)
	t.Cleanup(tg.close)
	return tg, &accept
}

func TestScrapeRelayMetrics(t *testing.T) {
	ctx := context.Background()
	tg, accept := metricsServer(t, func() string { return relayMetricsText(3) })
	s, err := scrapeMetrics(ctx, tg)
	require.NoError(t, err)
	assert.Contains(t, accept.Load(), "text/plain", "asks for the text format")

	polls, ok := s.openPolls()
	require.True(t, ok)
	assert.EqualValues(t, 3+0+2+1+0, polls, "the sum over every kind")

	c, ok := s.commits()
	require.True(t, ok)
	assert.Equal(t, storeCounters{commits: 41, writes: 97}, c, "the histogram's count and sum")
	c, err = readCommits(ctx, tg)
	require.NoError(t, err)
	assert.Equal(t, storeCounters{commits: 41, writes: 97}, c)
	assert.Equal(t, storeCounters{commits: 1, writes: 2}, storeCounters{commits: 42, writes: 99}.minus(c),
		"what a measurement did is the difference of two readings")
}

func TestScrapeWithoutTheSeries(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		body string
	}{
		{"no /metrics", ""},
		{"other metrics only", "# TYPE up gauge\nup 1\n"},
		{"the names with other types", "# TYPE c2cvia_long_polls_open counter\nc2cvia_long_polls_open 3\n" +
			"# TYPE c2cvia_store_commit_writes gauge\nc2cvia_store_commit_writes 1\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tg, _ := metricsServer(t, func() string { return tc.body })
			_, err := pollGauge(ctx, tg)
			assert.ErrorIs(t, err, errNoMetrics)
			_, err = readCommits(ctx, tg)
			assert.ErrorIs(t, err, errNoMetrics)
		})
	}

	tg, _ := metricsServer(t, func() string { return "c2cvia_long_polls_open{kind=\"via\" 1\n" })
	_, err := scrapeMetrics(ctx, tg)
	require.Error(t, err, "a malformed page")
	assert.NotErrorIs(t, err, errNoMetrics)
}

// TestRelayPollGauge: in-process the gauge counts every open poll and a
// relay without metrics is an error; at --url it counts the rise over the
// polls open when it was made, and is absent when the relay serves no
// metrics.
func TestRelayPollGauge(t *testing.T) {
	ctx := context.Background()
	var open atomic.Int64
	open.Store(4) // someone else's polls (3 more of other kinds are in the text)
	tg, _ := metricsServer(t, func() string { return relayMetricsText(int(open.Load())) })

	inProcess := &bench{rowNodes: rowNodes{relay: fakeServer{}}}
	g, err := inProcess.relayPolls(ctx, tg)
	require.NoError(t, err)
	n, err := g(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 7, n)

	atURL := &bench{}
	g, err = atURL.relayPolls(ctx, tg)
	require.NoError(t, err)
	n, err = g(ctx)
	require.NoError(t, err)
	assert.Zero(t, n)
	open.Add(20)
	n, err = g(ctx)
	require.NoError(t, err)
	assert.EqualValues(t, 20, n, "the polls opened since")

	none, _ := metricsServer(t, func() string { return "" })
	g, err = atURL.relayPolls(ctx, none)
	require.NoError(t, err)
	assert.Nil(t, g, "no gauge at --url without metrics")
	_, err = inProcess.relayPolls(ctx, none)
	assert.ErrorIs(t, err, errNoMetrics, "the in-process relay always serves them")
}

type fakeServer struct{}

func (fakeServer) URL() string { return "http://127.0.0.1:1" }
func (fakeServer) Stop() error { return nil }

func TestValidNet(t *testing.T) {
	for _, ok := range []string{"a", "bench-AZ_09.x", strings.Repeat("n", 64)} {
		assert.True(t, validNet(ok), ok)
	}
	for _, bad := range []string{"", "no spaces", "slash/", strings.Repeat("n", 65), "é"} {
		assert.False(t, validNet(bad), bad)
	}
}
