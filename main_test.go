// Test helpers shared by every test file: a relay on a real SQLite file in
// t.TempDir() with an injected clock, HTTP helpers, and the relay as a child
// process (the test binary re-executed) for crash and signal tests.

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/c2cvia/c2cvia/internal/bench"
	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"
)

// TestMain lets the test binary act as the relay: a child started with
// C2CVIA_TEST_AS_RELAY=1, or with a command (`serve`, as the bench's crash
// soak runs its relay; `bench hold-polls`, the bench's poll holder) rather
// than test flags, runs main() with its arguments.
func TestMain(m *testing.M) {
	command := len(os.Args) > 1 && (os.Args[1] == "serve" || os.Args[1] == "bench")
	if command || os.Getenv("C2CVIA_TEST_AS_RELAY") == "1" || os.Getenv(bench.ChildEnv) == "1" {
		main()
		os.Exit(0)
	}
	// Most tests wait on a relay, a child process, a browser or node, not
	// on the CPU: unless -test.parallel is given, run more of them at once
	// than the default of one per CPU. Not under the race detector, which
	// makes them CPU-bound.
	flag.Parse()
	if !flagGiven("test.parallel") && !raceEnabled {
		_ = flag.Set("test.parallel", strconv.Itoa(4*runtime.GOMAXPROCS(0)))
	}
	os.Exit(m.Run())
}

// flagGiven reports whether the flag was set on the command line.
func flagGiven(name string) bool {
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == name })
	return given
}

// testEpoch is where every test relay's clock starts.
var testEpoch = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// testRelay is a relay started as serve starts one (startRelay), on a real
// SQLite file, with a fake clock.
type testRelay struct {
	t      testing.TB
	URL    string
	DBPath string
	store  *store
	srv    *server
	clock  *clockwork.FakeClock
	cfg    config
	rel    *relay
}

// testConfig is serve's defaults on dbPath and a free loopback port, with
// no rate limits (tests send bursts from one address; limits_test.go sets
// them) and a janitor that does not run within a test.
func testConfig(dbPath string) config {
	cfg := defaultConfig()
	cfg.Addr, cfg.DB = "127.0.0.1:0", dbPath
	cfg.RateIP, cfg.RateToken, cfg.RateServer, cfg.RateVia = 0, 0, 0, 0
	cfg.JanitorEvery = time.Hour
	cfg.Listen.MaxConnsPerIP = 0 // every test calls from 127.0.0.1, some with hundreds of connections
	return cfg
}

// testStoreOptions are the store options of serve's defaults, on clock
// (nil: the real one), changed by change.
func testStoreOptions(clock clockwork.Clock, change ...func(*storeOptions)) storeOptions {
	opts := defaultConfig().storeOptions()
	opts.Clock = clock
	for _, c := range change {
		c(&opts)
	}
	return opts
}

// newTestRelay starts a relay with a fake clock; change adjusts its config.
func newTestRelay(t testing.TB, change ...func(*config)) *testRelay {
	t.Helper()
	return newTestRelayLog(t, io.Discard, change...)
}

// newTestRelayLog is newTestRelay logging to stderr.
func newTestRelayLog(t testing.TB, stderr io.Writer, change ...func(*config)) *testRelay {
	t.Helper()
	dbPath := testDB(t, "relay.db")
	cfg := testConfig(dbPath)
	for _, c := range change {
		c(&cfg)
	}
	require.NoError(t, cfg.check(nil))
	clock := clockwork.NewFakeClockAt(testEpoch)
	rel, err := startRelay(context.Background(), cfg, clock, io.Discard, stderr)
	require.NoError(t, err)
	t.Cleanup(func() { require.NoError(t, rel.stop()) })
	return &testRelay{t: t, URL: rel.url(), DBPath: dbPath, store: rel.store, srv: rel.srv, clock: clock, cfg: cfg, rel: rel}
}

// advance moves the relay's one clock on by d: the long polls, leases and
// lifetimes that fall due within d wake.
func (r *testRelay) advance(d time.Duration) { r.clock.Advance(d) }

// afterWait makes call, whose long poll waits d, waits until that poll is
// asleep in the relay, moves the clock on by d and returns call's reply:
// the reply a poll gives when its wait runs out.
func (r *testRelay) afterWait(d time.Duration, call func() reply) reply {
	r.t.Helper()
	asleep := r.srv.poller.asleep.Load()
	ch := async(call)
	r.waitAsleep(asleep + 1)
	r.advance(d)
	return within(r.t, 10*time.Second, ch, "the reply once the wait ran out")
}

// waitSleeps waits until the relay's waits have parked n times in all: a
// wait woken since the count was read has looked at the store and armed its
// next deadline once the count passes that.
func (r *testRelay) waitSleeps(n int64) {
	r.t.Helper()
	waitFor(r.t, 10*time.Second, func() bool { return r.srv.poller.sleeps.Load() >= n },
		fmt.Sprintf("%d parks of the relay's waits", n))
}

// waitAsleep waits until at least n long polls or streams are parked in
// the relay's waiting loop, their deadlines armed on its clock: moving the
// clock then wakes them.
func (r *testRelay) waitAsleep(n int64) {
	r.t.Helper()
	waitFor(r.t, 10*time.Second, func() bool { return r.srv.poller.asleep.Load() >= n },
		fmt.Sprintf("%d waits asleep", n))
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// reply is a decoded relay response.
type reply struct {
	Status int
	Header http.Header
	Body   []byte
	JSON   map[string]any // nil when the body is not a JSON object
}

// errorCode returns the code of a JSON error reply, or "".
func (r reply) errorCode() string {
	if e, ok := r.JSON["error"].(map[string]any); ok {
		code, _ := e["code"].(string)
		return code
	}
	return ""
}

func (r reply) str(name string) string {
	s, _ := r.JSON[name].(string)
	return s
}

// do sends one request to the relay and decodes the reply.
func (r *testRelay) do(req *http.Request) reply {
	r.t.Helper()
	return doRequest(r.t, req)
}

func doRequest(t testing.TB, req *http.Request) reply {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	rep, err := readReply(resp)
	require.NoError(t, err)
	return rep
}

// readReply reads and decodes a response; JSON numbers stay json.Number.
func readReply(resp *http.Response) (reply, error) {
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{}, err
	}
	rep := reply{Status: resp.StatusCode, Header: resp.Header, Body: b}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	_ = dec.Decode(&rep.JSON)
	return rep, nil
}

// get calls GET path with query parameters.
func (r *testRelay) get(path string, q url.Values) reply {
	r.t.Helper()
	req, err := http.NewRequest(http.MethodGet, r.URL+path+"?"+q.Encode(), nil)
	require.NoError(r.t, err)
	return r.do(req)
}

// postJSON calls POST path with a JSON body; bearer, if set, goes in
// Authorization.
func (r *testRelay) postJSON(path, bearer string, body any) reply {
	r.t.Helper()
	b, err := json.Marshal(body)
	require.NoError(r.t, err)
	req, err := http.NewRequest(http.MethodPost, r.URL+path, bytes.NewReader(b))
	require.NoError(r.t, err)
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	return r.do(req)
}

// postForm calls POST path with a form body.
func (r *testRelay) postForm(path string, form url.Values) reply {
	r.t.Helper()
	req, err := http.NewRequest(http.MethodPost, r.URL+path, strings.NewReader(form.Encode()))
	require.NoError(r.t, err)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return r.do(req)
}

// login logs a SimClient into net and returns its token and peer_id.
func (r *testRelay) login(net string) (tok, peer string) {
	r.t.Helper()
	rep := r.get("/api/v1/client/login", url.Values{"net": {net}})
	require.Equal(r.t, http.StatusOK, rep.Status, string(rep.Body))
	return rep.str("token"), rep.str("peer_id")
}

// push sends a sim_req and returns its rid.
func (r *testRelay) push(tok string, simReq any) string {
	r.t.Helper()
	rep := r.postJSON("/api/v1/client/pushreq", tok, map[string]any{"sim_req": simReq})
	require.Equal(r.t, http.StatusCreated, rep.Status, string(rep.Body))
	return rep.str("rid")
}

// leased is one request from pullreqsmart.
type leased struct {
	RID            string          `json:"rid"`
	SimReq         json.RawMessage `json:"sim_req"`
	From           string          `json:"from"`
	RemoteAddr     string          `json:"remote_addr"`
	Attempt        int             `json:"attempt"`
	LeaseExpiresAt string          `json:"lease_expires_at"`
}

// pullReqs calls pullreqsmart for net with key and extra parameters.
func (r *testRelay) pullReqs(net, key string, extra url.Values) []leased {
	r.t.Helper()
	rep, list := r.pullReqsReply(net, key, extra)
	require.Equal(r.t, http.StatusOK, rep.Status, string(rep.Body))
	return list
}

func (r *testRelay) pullReqsReply(net, key string, extra url.Values) (reply, []leased) {
	r.t.Helper()
	q := url.Values{"net": {net}, "key": {key}, "wait": {"0"}}
	for k, v := range extra {
		q[k] = v
	}
	rep := r.get("/api/v1/server/pullreqsmart", q)
	var out struct {
		Requests []leased `json:"requests"`
	}
	if rep.Status == http.StatusOK {
		require.NoError(r.t, json.Unmarshal(rep.Body, &out))
	}
	return rep, out.Requests
}

// answer posts a sim_res for rid and returns the reply.
func (r *testRelay) answer(net, key, rid string, simRes any) reply {
	r.t.Helper()
	return r.postJSON("/api/v1/server/pushres", key, map[string]any{"net": net, "rid": rid, "sim_res": simRes})
}

// count returns SELECT count(*) FROM table [WHERE ...] straight from the file.
func (r *testRelay) count(table string) int {
	r.t.Helper()
	var n int
	require.NoError(r.t, r.store.r.QueryRow(`SELECT count(*) FROM `+table).Scan(&n))
	return n
}

const testKey = "test-key-0123456789"

// waitFor checks cond every 5 ms until it holds, failing the test after
// within. For state with no event of its own to wait on (a gauge returning
// to zero, a port answering).
func waitFor(t testing.TB, within time.Duration, cond func() bool, msg string) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			t.Fatalf("timed out after %s waiting for: %s", within, msg)
		case <-tick.C:
		}
	}
}

// syncBuffer is a bytes.Buffer that a writer and a reader share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// relayProcess is the relay as a child process (the test binary re-run).
type relayProcess struct {
	cmd    *exec.Cmd
	URL    string
	stderr *syncBuffer // read while the child still writes
	exited chan error
}

// startRelayProcess runs `c2cvia serve` in a child on dbPath and waits until
// it answers /healthz.
func startRelayProcess(t *testing.T, dbPath string, args ...string) *relayProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"serve", "--addr", "127.0.0.1:0", "--db", dbPath}, args...)...)
	cmd.Env = append(os.Environ(), "C2CVIA_TEST_AS_RELAY=1")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	p := &relayProcess{cmd: cmd, stderr: &syncBuffer{}, exited: make(chan error, 1)}
	gone := make(chan struct{}) // closed once the child has been waited for
	cmd.Stderr = p.stderr
	require.NoError(t, cmd.Start())
	urls := make(chan string, 1)
	go func() {
		scanListening(stdout, urls)
		p.exited <- cmd.Wait()
		close(gone)
	}()
	t.Cleanup(func() {
		select {
		case <-gone:
		default:
			_ = cmd.Process.Kill()
			<-gone
		}
	})
	select {
	case p.URL = <-urls:
	case err := <-p.exited:
		t.Fatalf("relay exited before listening: %v\n%s", err, p.stderr)
	case <-time.After(30 * time.Second):
		t.Fatalf("relay did not start within 30s\n%s", p.stderr)
	}
	waitHealthy(t, p.URL)
	return p
}

// waitHealthy waits until url answers GET /healthz with 200.
func waitHealthy(t *testing.T, base string) {
	t.Helper()
	waitFor(t, 30*time.Second, func() bool {
		resp, err := http.Get(base + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, base+"/healthz answering 200")
}

// kill stops the child with SIGKILL and waits for it to be gone.
func (p *relayProcess) kill(t *testing.T) {
	t.Helper()
	require.NoError(t, p.cmd.Process.Kill())
	<-p.exited
}

// runCLI runs the program in-process with args and env, and returns stdout.
func runCLI(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), args, func(k string) string { return env[k] }, &stdout, &stderr)
	return stdout.String(), err
}

// startRun runs `serve` (args[0]) through run() in-process; stop cancels
// it (as SIGTERM does) and returns run's error.
func startRun(t *testing.T, env map[string]string, args ...string) (base string, stop func() error) {
	t.Helper()
	require.Equal(t, "serve", args[0])
	s := startServe(t, http.DefaultClient, env, args[1:]...)
	return s.URL, s.stop
}

// served is `serve` running in-process through run().
type served struct {
	URL       string // the main listener: http:// or https://
	HTTPURL   string // the ACME challenge and redirect listener, if any
	stop      func() error
	challenge chan string
}

// startServe runs `serve` with args through run() and waits until client
// gets 200 from /healthz. stop cancels it, as SIGTERM does.
func startServe(t *testing.T, client *http.Client, env map[string]string, args ...string) *served {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"serve"}, args...), func(k string) string { return env[k] }, pw, io.Discard)
		pw.Close()
	}()
	lines := make(chan string, 4)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default: // nobody reads past the listening line
			}
		}
	}()
	s := &served{}
	for s.URL == "" {
		select {
		case line := <-lines:
			if _, rest, ok := strings.Cut(line, "redirecting to HTTPS on "); ok {
				s.HTTPURL = strings.Fields(rest)[0]
			}
			if _, rest, ok := strings.Cut(line, "listening on "); ok {
				s.URL = strings.Fields(rest)[0]
			}
		case err := <-done:
			cancel()
			t.Fatalf("serve exited before listening: %v", err)
		case <-time.After(30 * time.Second):
			cancel()
			t.Fatal("serve did not start within 30s")
		}
	}
	var once sync.Once
	var runErr error
	s.stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case runErr = <-done:
			case <-time.After(30 * time.Second):
				runErr = fmt.Errorf("serve did not stop within 30s")
			}
		})
		return runErr
	}
	t.Cleanup(func() { _ = s.stop() })
	waitFor(t, 30*time.Second, func() bool {
		resp, err := client.Get(s.URL + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, s.URL+"/healthz answering 200")
	return s
}

// scanListening reads serve's output to its end and sends the URL of its
// "listening on" line.
func scanListening(r io.Reader, urls chan<- string) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if _, rest, ok := strings.Cut(sc.Text(), "listening on "); ok {
			urls <- strings.Fields(rest)[0]
		}
	}
}
