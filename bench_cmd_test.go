// Tests of `c2cvia bench` (internal/bench), run in-process through run()
// with tiny sizes and short measurements: every scenario gives sane
// figures, the in-process relay is serve's and leaves nothing behind, and
// --url loads a relay the test started. No test asserts a speed.

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/c2cvia/c2cvia/internal/bench"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
)

// runBenchCLI runs the program with args and returns stdout and stderr.
func runBenchCLI(t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var stdout bytes.Buffer
	var stderr syncBuffer // the bench's progress bar and its relay's log share it
	err := run(context.Background(), args, func(string) string { return "" }, &stdout, &stderr)
	return stdout.String(), stderr.String(), err
}

// benchLine is one --json line, with the scenario figures the tests look at
// as pointers, to tell a missing field from zero.
type benchLine struct {
	Scenario        string   `json:"scenario"`
	Clients         int      `json:"clients"`
	Relay           string   `json:"relay"`
	Store           string   `json:"store"`
	Ops             int      `json:"ops"`
	OpsPerSec       float64  `json:"ops_per_sec"`
	P50             float64  `json:"p50_ms"`
	P90             float64  `json:"p90_ms"`
	P99             float64  `json:"p99_ms"`
	DirectOps       int      `json:"direct_ops"`
	DirectOpsPerSec float64  `json:"direct_ops_per_sec"`
	DirectP50       float64  `json:"direct_p50_ms"`
	DirectP90       float64  `json:"direct_p90_ms"`
	DirectP99       float64  `json:"direct_p99_ms"`
	Ratio           float64  `json:"ratio"`
	DurationS       float64  `json:"duration_s"`
	Skipped         string   `json:"skipped"`
	Notes           []string `json:"notes"`

	Workers            *int     `json:"workers"`
	CommitsPerExchange *float64 `json:"commits_per_exchange"`
	WritesPerCommit    *float64 `json:"writes_per_commit"`
	Polls              *int     `json:"polls"`
	BytesPerPoll       *int64   `json:"bytes_per_poll"`
	HeapPerPoll        *int64   `json:"heap_per_poll"`
	DirectBytesPerPoll *int64   `json:"direct_bytes_per_poll"`
	OpenPollsHeld      *int64   `json:"open_polls_held"`
	OpenPollsAfter     *int64   `json:"open_polls_after"`
	Backlog            *int     `json:"backlog"`
	ReadyMS            *float64 `json:"ready_ms"`
	DeliveriesPerSec   *float64 `json:"deliveries_per_sec"`
	DeliveryP99MS      *float64 `json:"delivery_p99_ms"`
	Receive            *string  `json:"receive"`
}

// parseBenchLines requires every line of stdout to be one JSON object.
func parseBenchLines(t *testing.T, stdout string) []benchLine {
	t.Helper()
	var lines []benchLine
	for _, text := range strings.Split(strings.TrimRight(stdout, "\n"), "\n") {
		var l benchLine
		require.NoError(t, json.Unmarshal([]byte(text), &l), "stdout line is not JSON: %q", text)
		lines = append(lines, l)
	}
	return lines
}

// assertSaneLine checks what every measured row must hold.
func assertSaneLine(t *testing.T, l benchLine) {
	t.Helper()
	what := fmt.Sprintf("%s with %d clients", l.Scenario, l.Clients)
	assert.Empty(t, l.Skipped, what)
	assert.Positive(t, l.Ops, what)
	assert.Positive(t, l.OpsPerSec, what)
	assert.Positive(t, l.DirectOps, what)
	assert.Positive(t, l.DirectOpsPerSec, what)
	assert.Positive(t, l.P50, what)
	assert.LessOrEqual(t, l.P50, l.P90, what)
	assert.LessOrEqual(t, l.P90, l.P99, what)
	assert.Positive(t, l.DirectP50, what)
	assert.LessOrEqual(t, l.DirectP50, l.DirectP90, what)
	assert.LessOrEqual(t, l.DirectP90, l.DirectP99, what)
	assert.InEpsilon(t, l.OpsPerSec/l.DirectOpsPerSec, l.Ratio, 1e-9, "%s: ratio is ops/direct ops", what)
	assert.InEpsilon(t, float64(l.Ops)/l.DurationS, l.OpsPerSec, 1e-9, "%s: ops/s is ops over the window", what)
	assert.Positive(t, l.DurationS, what)
}

func TestBenchInProcess(t *testing.T) {
	before := goleak.IgnoreCurrent()
	tmp := t.TempDir()
	stdout, stderr, err := runBenchCLI(t, "bench", "--tmp-dir", tmp, "--json", "--progress", "always",
		"--duration", "300ms", "--clients", "1,3", "--polls", "20", "--backlog", "2000")
	require.NoError(t, err, stderr)

	lines := parseBenchLines(t, stdout)
	require.Len(t, lines, 10, stdout)
	for i, want := range []struct {
		scenario string
		clients  int
	}{{"exchange", 1}, {"exchange", 3}, {"idle", 1}, {"idle", 3}, {"backlog", 1}, {"backlog", 3},
		{"via", 1}, {"via", 3}, {"broadcast", 1}, {"broadcast", 3}} {
		l := lines[i]
		require.Equal(t, want.scenario, l.Scenario)
		require.Equal(t, want.clients, l.Clients)
		assert.Equal(t, "in-process", l.Relay)
		assertSaneLine(t, l)
		switch l.Scenario {
		case "exchange":
			require.NotNil(t, l.Workers)
			assert.Equal(t, (l.Clients+3)/4, *l.Workers, "a SimServer worker per 4 clients by default")
			require.NotNil(t, l.CommitsPerExchange)
			assert.Positive(t, *l.CommitsPerExchange)
			require.NotNil(t, l.WritesPerCommit)
			assert.GreaterOrEqual(t, *l.WritesPerCommit, 1.0)
		case "idle":
			require.NotNil(t, l.Polls)
			assert.Equal(t, 20, *l.Polls)
			assert.NotNil(t, l.BytesPerPoll, "the relay's memory per poll")
			assert.NotNil(t, l.HeapPerPoll)
			assert.NotNil(t, l.DirectBytesPerPoll)
			require.NotNil(t, l.OpenPollsHeld)
			assert.EqualValues(t, 20, *l.OpenPollsHeld, "every poll was held through the load")
			require.NotNil(t, l.OpenPollsAfter)
			assert.Zero(t, *l.OpenPollsAfter, "the relay's open-poll gauge is back to 0")
		case "backlog":
			require.NotNil(t, l.Backlog)
			assert.Equal(t, 2000, *l.Backlog)
			require.NotNil(t, l.ReadyMS)
			assert.Positive(t, *l.ReadyMS)
		case "via":
			require.NotNil(t, l.Workers)
			assert.Equal(t, (l.Clients+3)/4, *l.Workers)
		case "broadcast":
			require.NotNil(t, l.DeliveriesPerSec)
			assert.Positive(t, *l.DeliveriesPerSec)
			require.NotNil(t, l.DeliveryP99MS)
			assert.Positive(t, *l.DeliveryP99MS)
		}
	}
	assert.Contains(t, stderr, "exchange relay", "the progress bar is drawn on stderr")

	left, err := os.ReadDir(tmp)
	require.NoError(t, err)
	assert.Empty(t, left, "the in-process relay's temp folder is removed")
	goleak.VerifyNone(t, before) // the relays, direct and every client are gone
}

func TestBenchTable(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	stdout, stderr, err := runBenchCLI(t, "bench", "--tmp-dir", tmp, "--duration", "200ms", "--clients", "2",
		"--polls", "10", "--backlog", "1000")
	require.NoError(t, err, stderr)
	assert.Empty(t, stderr, "no progress bar when stderr is not a terminal")
	assert.Contains(t, stdout, "relay in-process, sync normal; direct: plain net/http in this process")
	assert.Regexp(t, `(?m)^SCENARIO\s+CLIENTS\s+OPS/S\s+P50\s+P90\s+P99\s+DIRECT OPS/S\s+RATIO\s+NOTES$`, stdout)
	row := func(name, notes string) *regexp.Regexp {
		return regexp.MustCompile(`(?m)^` + name + `\s+2\s+\d+\s+[\d.]+ms\s+[\d.]+ms\s+[\d.]+ms\s+\d+\s+\d+\.\d\dx\s+` + notes)
	}
	assert.Regexp(t, row("exchange", `workers 1, max 16, answers by poll; [\d.]+ commits/exchange`), stdout)
	assert.Regexp(t, row("idle", `10 polls: -?[\d.]+ [KM]iB/poll RSS`), stdout) // fmtBytes: MiB from 1 MiB on, either sign
	assert.Regexp(t, row("backlog", `1000 queued; ready in [\d.]+ms`), stdout)
	assert.Regexp(t, row("via", `workers 1, max 16, answers by poll`), stdout)
	assert.Regexp(t, row("broadcast", `peers on pullsmart; \d+ deliveries/s; one delivery p99 [\d.]+ms`), stdout)
	left, err := os.ReadDir(tmp)
	require.NoError(t, err)
	assert.Empty(t, left)
}

// TestBenchAnswersByPushres: --answers pushres runs the workers as they
// answered before pullreqsmart took answers, the figure to compare with.
func TestBenchAnswersByPushres(t *testing.T) {
	t.Parallel()
	stdout, stderr, err := runBenchCLI(t, "bench", "--tmp-dir", t.TempDir(), "--duration", "200ms", "--clients", "2",
		"--scenario", "via,exchange", "--answers", "pushres")
	require.NoError(t, err, stderr)
	assert.Regexp(t, `(?m)^via\s+2\s.*workers 1, max 16, answers by pushres$`, stdout)
	assert.Regexp(t, `(?m)^exchange\s+2\s.*workers 1, max 16, answers by pushres; `, stdout)
}

func TestBenchAgainstURL(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	// One net for every row: the second row finds the first one's leftovers
	// in its queue.
	stdout, stderr, err := runBenchCLI(t, "bench", "--url", r.URL+"/", "--json", "--duration", "300ms",
		"--clients", "2,3", "--polls", "20", "--net", "shared", "--key", testKey)
	require.NoError(t, err, stderr)
	lines := parseBenchLines(t, stdout)
	require.Len(t, lines, 10, stdout)
	for _, l := range append(lines[:4:4], lines[6:]...) {
		assert.Equal(t, r.URL, l.Relay)
		assertSaneLine(t, l)
	}
	for _, l := range lines[:2] {
		assert.Equal(t, "exchange", l.Scenario)
		assert.Nil(t, l.CommitsPerExchange, "the store's counters are not visible through --url")
	}
	for _, l := range lines[2:4] {
		assert.Equal(t, "idle", l.Scenario)
		assert.Nil(t, l.BytesPerPoll, "the relay's memory is not visible through --url")
		assert.NotNil(t, l.DirectBytesPerPoll)
		require.NotNil(t, l.OpenPollsHeld, "the relay's open-poll gauge, from its /metrics")
		assert.EqualValues(t, 20, *l.OpenPollsHeld, "every poll was held through the load")
		require.NotNil(t, l.OpenPollsAfter)
		assert.Zero(t, *l.OpenPollsAfter, "the relay's open-poll gauge is back where it was")
	}
	for _, l := range lines[4:6] {
		assert.Equal(t, "backlog", l.Scenario)
		assert.Contains(t, l.Skipped, "needs the store", "backlog says it is skipped against a URL")
	}

	// The exchanges went through the relay's store, in the net given, and
	// the idle polls are gone.
	assert.Positive(t, r.count("requests WHERE status = 'answered' AND net = 'shared'"))
	waitFor(t, 10*time.Second, func() bool { return r.srv.poller.open.Load() == 0 }, "the idle polls to end")
	// The nets the bench named itself (each row's calibration) are
	// released; the one given with --net stays claimed.
	flushStoreWrites(t, r)
	assert.Positive(t, r.count("requests WHERE net LIKE 'bench-%'"), "the bench ran in nets of its own")
	assert.Zero(t, r.count("nets WHERE name LIKE 'bench-%'"), "no bench-* claim stays behind")
	assert.Equal(t, 1, r.count("nets WHERE name = 'shared'"))
}

func TestBenchBadFlags(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--scenario", "exchange,nope"}, `no scenario "nope"; there are exchange, idle, backlog`},
		{[]string{"--clients", "0"}, "--clients must be 1 or more"},
		{[]string{"--duration", "0s"}, "--duration must be positive"},
		{[]string{"--max", "101"}, "--max must be from 1 to 100"},
		{[]string{"--workers", "-1"}, "--workers must be 0"},
		{[]string{"--answers", "batch"}, "--answers must be poll or pushres"},
		{[]string{"--polls", "0"}, "--backlog and --polls must be 1 or more"},
		{[]string{"--progress", "sometimes"}, "--progress must be auto, always or never"},
		{[]string{"--key", "short"}, "--key must be at least 16 characters"},
		{[]string{"--net", "no spaces"}, "net must be 1-64 characters"},
		{[]string{"--sync", "off"}, "--sync must be normal or full"},
		{[]string{"--url", "ftp://example.com"}, "--url must be an http or https URL"},
		{[]string{"--url", "http://127.0.0.1:1"}, "--url: the relay does not answer"},
		{[]string{"--postgres", "mysql://localhost/db"}, "--postgres must be a postgres:// URL"},
		{[]string{"--postgres", "postgres://localhost/db", "--url", "http://127.0.0.1:1"}, "--postgres starts relays of its own: --url cannot be used"},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, _, err := runBenchCLI(t, append([]string{"bench", "--tmp-dir", tmp}, tc.args...)...)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
	left, err := os.ReadDir(tmp)
	require.NoError(t, err)
	assert.Empty(t, left, "a refused run makes no store")
}

// TestBenchStartsServesRelay: every relay `c2cvia bench` starts in-process is
// serve's, started by serve's code from serve's flags: its config is
// serve's defaults but for the listener, the file, its sync setting, the
// rate limits (every bench client shares one address), the peers per net
// (idle holds 10,000 polls of 10,000 logins in one net) and the log
// level; and it has serve's front, which answers a header over serve's
// --max-header-bytes (64 KiB) with 431. So does direct's front.
func TestBenchStartsServesRelay(t *testing.T) {
	t.Parallel()
	tooBig := func(t *testing.T, base string) int {
		req, err := http.NewRequest(http.MethodGet, base+"/healthz", nil)
		require.NoError(t, err)
		// net/http allows 4 KiB over MaxHeaderBytes before it answers 431.
		req.Header.Set("X-Padding", strings.Repeat("x", 72<<10))
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	var mu sync.Mutex
	var relays []*relay
	var relayStatus, frontStatus []int
	harness := benchRelays()
	start, front := harness.Start, harness.Front
	harness.Start = func(ctx context.Context, args []string, stderr io.Writer) (bench.Server, error) {
		s, err := start(ctx, args, stderr)
		if err != nil {
			return nil, err
		}
		status := tooBig(t, s.URL())
		mu.Lock()
		defer mu.Unlock()
		relays = append(relays, s.(relayServer).relay)
		relayStatus = append(relayStatus, status)
		return s, nil
	}
	harness.Front = func(args []string, h http.Handler, stderr io.Writer) (bench.Server, error) {
		s, err := front(args, h, stderr)
		if err != nil {
			return nil, err
		}
		status := tooBig(t, s.URL())
		mu.Lock()
		defer mu.Unlock()
		frontStatus = append(frontStatus, status)
		return s, nil
	}
	var stdout bytes.Buffer
	var stderr syncBuffer
	cmd := bench.NewCommand(harness, &stdout, &stderr)
	cmd.SetArgs([]string{"--tmp-dir", t.TempDir(), "--scenario", "exchange,backlog", "--sync", "full",
		"--duration", "300ms", "--clients", "1", "--backlog", "100"})
	require.NoError(t, cmd.ExecuteContext(context.Background()), stderr.String())

	require.Len(t, relays, 2, "the run's relay and the backlog's")
	assert.Equal(t, []int{431, 431}, relayStatus, "serve's header limit")
	assert.Equal(t, []int{431, 431}, frontStatus, "direct, exchange's and backlog's, behind serve's front")
	def := defaultConfig()
	assert.Equal(t, 5, def.MaxAttempts, "defaultConfig reads serve's flag defaults")
	assert.Equal(t, int64(64<<10), def.Listen.MaxHeaderBytes)
	assert.Equal(t, 30*time.Second, def.Listen.ReadBodyTimeout)
	assert.Positive(t, def.RateIP)
	for i, r := range relays {
		want := def
		want.Addr, want.DB, want.Sync, want.LogLevel = "127.0.0.1:0", r.cfg.DB, "full", "warn"
		want.RateIP, want.RateToken, want.RateServer, want.RateVia, want.MaxPeers = 0, 0, 0, 0, 0
		want.Listen.MaxConnsPerIP = 0
		assert.Equal(t, want, r.cfg, "relay %d", i)
	}
	assert.Equal(t, "relay.db", filepath.Base(relays[0].cfg.DB))
	assert.Equal(t, "backlog.db", filepath.Base(relays[1].cfg.DB))
}

// TestBenchCrash: `bench --scenario crash` kills its relay (this test
// binary, as the relay) and reports "lost: 0"; it refuses other scenarios
// beside it and --url.
func TestBenchCrash(t *testing.T) {
	t.Parallel()
	tmp := t.TempDir()
	stdout, stderr, err := runBenchCLI(t, "bench", "--scenario", "crash", "--kills", "2", "--kill-every", "300ms",
		"--clients", "2", "--tmp-dir", tmp)
	require.NoError(t, err, stderr)
	assert.Regexp(t, `(?m)^crash soak: 2 kills in `, stdout)
	assert.Regexp(t, `(?m)^requests: (\d+) acknowledged, (\d+) answered exactly once as sent$`, stdout)
	assert.Regexp(t, `(?m)^gateway, synchronous: \d+ calls, \d+ answered as sent, `, stdout)
	if m := regexp.MustCompile(`(?m)^gateway, store-and-forward: .*, (\d+) acknowledged with 202, (\d+) answered as sent at their Location`).FindStringSubmatch(stdout); assert.NotNil(t, m, stdout) {
		assert.Equal(t, m[1], m[2], "every 202 ends with its answer at its Location")
	}
	assert.True(t, strings.HasSuffix(stdout, "lost: 0\n"), stdout)
	assert.Contains(t, stderr, "kill 2/2: back in")
	left, err := os.ReadDir(tmp)
	require.NoError(t, err)
	assert.Empty(t, left, "the soak's store is removed")

	_, _, err = runBenchCLI(t, "bench", "--scenario", "crash,via")
	assert.ErrorContains(t, err, "runs alone")
	_, _, err = runBenchCLI(t, "bench", "--scenario", "crash", "--url", "http://127.0.0.1:1")
	assert.ErrorContains(t, err, "--url cannot be used")
}

// TestBenchBroadcastStream: with --stream the broadcast peers read the event
// stream, on the relay and on direct.
func TestBenchBroadcastStream(t *testing.T) {
	t.Parallel()
	stdout, stderr, err := runBenchCLI(t, "bench", "--tmp-dir", t.TempDir(), "--json", "--scenario", "broadcast",
		"--stream", "--duration", "300ms", "--clients", "3")
	require.NoError(t, err, stderr)
	lines := parseBenchLines(t, stdout)
	require.Len(t, lines, 1, stdout)
	assertSaneLine(t, lines[0])
	require.NotNil(t, lines[0].Receive)
	assert.Equal(t, "stream", *lines[0].Receive)
}

// benchPostgres is the PostgreSQL server of the bench's PostgreSQL tests
// (C2CVIA_TEST_POSTGRES). Without it they are skipped, but under CI
// (CI=true), where the server is part of the run, its absence fails them.
func benchPostgres(t *testing.T) string {
	t.Helper()
	return needPostgres(t)
}

// TestBenchPostgres: with --postgres each scenario and client count gives
// three rows, SQLite, PostgreSQL with one node and with two, each measured
// with its own direct and ratio; the table says which is which.
func TestBenchPostgres(t *testing.T) {
	t.Parallel()
	pg := benchPostgres(t)
	stdout, stderr, err := runBenchCLI(t, "bench", "--tmp-dir", t.TempDir(), "--json", "--postgres", pg,
		"--scenario", "exchange,via", "--duration", "300ms", "--clients", "2")
	require.NoError(t, err, stderr)
	lines := parseBenchLines(t, stdout)
	require.Len(t, lines, 6, stdout)
	i := 0
	for _, scenario := range []string{"exchange", "via"} {
		for _, store := range []string{"sqlite", "postgres 1 node", "postgres 2 nodes"} {
			l := lines[i]
			i++
			require.Equal(t, scenario, l.Scenario)
			require.Equal(t, store, l.Store)
			assert.Equal(t, 2, l.Clients)
			assertSaneLine(t, l)
			if scenario == "exchange" {
				require.NotNil(t, l.CommitsPerExchange, "%s: counted on every node", store)
				assert.Positive(t, *l.CommitsPerExchange)
			}
		}
	}

	stdout, stderr, err = runBenchCLI(t, "bench", "--tmp-dir", t.TempDir(), "--postgres", pg,
		"--scenario", "backlog,idle", "--duration", "200ms", "--clients", "1", "--backlog", "100", "--polls", "5")
	require.NoError(t, err, stderr)
	assert.Regexp(t, `(?m)^SCENARIO\s+CLIENTS\s+STORE\s+OPS/S\s+P50\s+P90\s+P99\s+DIRECT OPS/S\s+RATIO\s+NOTES$`, stdout)
	assert.Regexp(t, `(?m)^backlog\s+1\s+sqlite\s+\d+\s`, stdout)
	assert.Regexp(t, `(?m)^backlog\s+1\s+postgres 1 node\s+-.*skipped: SQLite only`, stdout)
	assert.Regexp(t, `(?m)^idle\s+1\s+postgres 1 node\s+\d+\s.*5 polls`, stdout)
	assert.Regexp(t, `(?m)^idle\s+1\s+postgres 2 nodes\s+-.*skipped: one node's memory`, stdout)
}

// TestBenchCrashPostgres: the crash soak on two relay nodes (this test
// binary, as the relay) on one PostgreSQL database, the first killed three
// times and left down for a second each time: nothing acknowledged is
// lost, and the other node answers every call, in every kill window. (A
// second is longer than PostgreSQL's default deadlock_timeout, which a
// writer caught in a lock wait with the killed node's can spend.)
func TestBenchCrashPostgres(t *testing.T) {
	t.Parallel()
	pg := benchPostgres(t)
	stdout, stderr, err := runBenchCLI(t, "bench", "--scenario", "crash", "--postgres", pg, "--kills", "3", "--kill-every", "2s",
		"--clients", "2")
	require.NoError(t, err, stderr+stdout)
	assert.Regexp(t, `(?m)^crash soak: 3 kills in `, stdout)
	m := regexp.MustCompile(`(?m)^requests: (\d+) acknowledged, (\d+) answered exactly once as sent$`).FindStringSubmatch(stdout)
	if assert.NotNil(t, m, stdout) {
		assert.Equal(t, m[1], m[2])
		assert.NotEqual(t, "0", m[1], "requests were acknowledged")
	}
	assert.Regexp(t, `(?m)^node 2 of 2, never killed: \d+ calls answered during the other's kill windows \(at least [1-9]\d* in each\), 0 failed without an answer`, stdout)
	assert.True(t, strings.HasSuffix(stdout, "lost: 0\n"), stdout)
	assert.Contains(t, stderr, "kill 3/3: back in")
}
