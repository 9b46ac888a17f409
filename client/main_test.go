// The relay that the tests and the runnable examples of this package call:
// TestMain builds the c2cvia binary from this checkout and runs it on a free
// port with its own SQLite file, as a user of the package would run it.

package client_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/c2cvia/c2cvia/client"

	"go.uber.org/goleak"
)

// The go command and the root of the module under test (the directory of
// its go.mod), for TestMain's build and for TestModuleOutside.
var (
	goCmd      string
	moduleRoot string
)

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	r, err := startRelay()
	if err != nil {
		fmt.Fprintf(os.Stderr, "client tests: %v\n", err)
		return 1
	}
	relayURL = r.url // the examples' relay
	code := m.Run()
	if err := r.stop(); err != nil {
		fmt.Fprintf(os.Stderr, "client tests: stopping the relay: %v\n", err)
		code = 1
	}
	if code == 0 {
		// Every Serve, long poll and Messages of the tests has ended; the
		// keep-alive connections are closed with the relay.
		client.CloseIdleConnections()
		http.DefaultClient.CloseIdleConnections()
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "client tests: goroutines left running: %v\n", err)
			code = 1
		}
	}
	if code != 0 {
		fmt.Fprintf(os.Stderr, "client tests: the relay's log:\n%s", r.log.tail(60))
	}
	r.remove()
	return code
}

// relayProcess is the relay binary running in a temporary directory.
type relayProcess struct {
	url     string
	dir     string
	cmd     *exec.Cmd
	log     *logBuffer
	exited  chan struct{} // closed when the process has ended; then waitErr is set
	waitErr error
}

// startRelay builds the relay and starts it on 127.0.0.1:0, without rate
// limits (the tests make many calls from one address at once), and waits
// until it answers GET /healthz.
func startRelay() (*relayProcess, error) {
	var err error
	if goCmd, err = exec.LookPath("go"); err != nil {
		return nil, fmt.Errorf("the go command is not on PATH (%v): these tests build the relay from this checkout with `go build`", err)
	}
	gomod, err := exec.Command(goCmd, "env", "GOMOD").Output()
	if err != nil {
		return nil, fmt.Errorf("go env GOMOD: %w", err)
	}
	gomodPath := strings.TrimSpace(string(gomod))
	if gomodPath == "" || gomodPath == os.DevNull {
		return nil, errors.New("go env GOMOD names no go.mod: run the tests inside the c2cvia module")
	}
	moduleRoot = filepath.Dir(gomodPath)

	dir, err := os.MkdirTemp("", "c2cvia-client-test-")
	if err != nil {
		return nil, err
	}
	r := &relayProcess{dir: dir, log: &logBuffer{}, exited: make(chan struct{})}
	bin := filepath.Join(dir, "c2cvia")
	// With the test binary's own -race, the build reuses every package the
	// test build compiled: modernc.org/sqlite is compiled once, not twice.
	// No VCS stamp: the relay under test needs none, and it would need git.
	args := []string{"build", "-buildvcs=false", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	build := exec.CommandContext(ctx, goCmd, append(args, ".")...)
	build.Dir = moduleRoot
	if out, err := build.CombinedOutput(); err != nil {
		r.remove()
		return nil, fmt.Errorf("building the relay (go %s in %s): %w\n%s", strings.Join(args, " "), moduleRoot, err, out)
	}

	relayBin = bin
	return r.start()
}

// relayBin is the relay that startRelay built, for tests that run one of
// their own (newRelayProcess).
var relayBin string

// newRelayProcess runs a relay of the test's own, from the binary TestMain
// built, with extra flags, until the test ends.
func newRelayProcess(t testing.TB, extra ...string) *relayProcess {
	t.Helper()
	dir := t.TempDir()
	r := &relayProcess{dir: dir, log: &logBuffer{}, exited: make(chan struct{})}
	r, err := r.start(extra...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("stopping the test's relay: %v; its log:\n%s", err, r.log.tail(60))
		}
	})
	return r
}

// start runs relayBin in r.dir on 127.0.0.1:0 with its own SQLite file,
// without rate limits (the tests make many calls from one address at
// once), and waits until it answers GET /healthz.
func (r *relayProcess) start(extra ...string) (*relayProcess, error) {
	listening := make(chan string, 1)
	r.cmd = exec.Command(relayBin, append([]string{"serve", "--addr", "127.0.0.1:0", "--db", filepath.Join(r.dir, "relay.db"),
		"--rate-ip", "0", "--rate-token", "0", "--log-level", "warn"}, extra...)...)
	r.cmd.Env = relayEnv()
	r.cmd.Stdout = &listenWatch{w: r.log, url: listening}
	r.cmd.Stderr = r.log
	endWithTests(r.cmd)
	if err := r.cmd.Start(); err != nil {
		r.remove()
		return nil, fmt.Errorf("starting the relay: %w", err)
	}
	go func() {
		r.waitErr = r.cmd.Wait()
		close(r.exited)
	}()
	fail := func(err error) (*relayProcess, error) {
		_ = r.stop()
		r.remove()
		return nil, fmt.Errorf("%w; its output:\n%s", err, r.log.tail(60))
	}

	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	select {
	case r.url = <-listening:
	case <-r.exited:
		return fail(fmt.Errorf("the relay ended (%v) before it listened", r.waitErr))
	case <-deadline.C:
		return fail(errors.New("the relay did not print its address within 30s"))
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := http.Get(r.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r, nil
			}
		}
		select {
		case <-tick.C:
		case <-r.exited:
			return fail(fmt.Errorf("the relay ended (%v) before /healthz answered 200", r.waitErr))
		case <-deadline.C:
			return fail(fmt.Errorf("GET /healthz did not answer 200 within 30s (last: %v)", err))
		}
	}
}

// relayEnv is this process's environment without the relay's C2CVIA_*
// settings, so that none from the shell changes the relay under test.
func relayEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "C2CVIA_") {
			env = append(env, kv)
		}
	}
	return env
}

// stop sends SIGTERM and waits for the relay to end (killing it after 15 s):
// an error unless it ended cleanly.
func (r *relayProcess) stop() error {
	if r.cmd == nil || r.cmd.Process == nil {
		return nil
	}
	select {
	case <-r.exited:
		return fmt.Errorf("the relay had already ended: %v", r.waitErr)
	default:
	}
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return err
	}
	select {
	case <-r.exited:
		return r.waitErr
	case <-time.After(15 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.exited
		return errors.New("the relay did not end within 15s of SIGTERM; killed")
	}
}

func (r *relayProcess) remove() { _ = os.RemoveAll(r.dir) }

// listenRE is the line the relay prints once it listens.
var listenRE = regexp.MustCompile(`(?m)^c2cvia listening on (http://\S+) \(store `)

// listenWatch passes the relay's stdout on to w and sends the relay's URL
// to url once the relay has printed it.
type listenWatch struct {
	w    io.Writer
	seen []byte
	url  chan<- string
}

func (l *listenWatch) Write(p []byte) (int, error) {
	if l.url != nil {
		l.seen = append(l.seen, p...)
		if m := listenRE.FindSubmatch(l.seen); m != nil {
			l.url <- string(m[1])
			l.url, l.seen = nil, nil
		}
	}
	return l.w.Write(p)
}

// logBuffer keeps what the relay writes, for a failure's report.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// tail is the last n lines written.
func (b *logBuffer) tail(n int) string {
	b.mu.Lock()
	defer b.mu.Unlock()
	lines := strings.SplitAfter(b.buf.String(), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "")
}
