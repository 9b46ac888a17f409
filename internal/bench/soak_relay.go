// The crash soak's relay: a child process on one store, SIGKILLed and
// started again, and the two ways the soak calls it: API calls repeated
// until an answer comes, and gateway calls sent once.

package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"time"
)

// soakRelay is the relay child process, restarted after each kill.
type soakRelay struct {
	opts    SoakOptions
	cmd     *exec.Cmd
	base    atomic.Pointer[string] // the current base URL
	up      atomic.Pointer[chan struct{}]
	client  *http.Client
	retries atomic.Int64 // calls repeated because the relay was down

	answered  atomic.Int64 // calls it answered
	failed    atomic.Int64 // calls that ended without an answer, but for their ctx ending
	status5xx atomic.Int64 // calls it answered with a 5xx status
	busy      atomic.Int64 // API calls refused with 503 store_busy, and repeated
}

func newSoakRelay(o SoakOptions) *soakRelay {
	// Every caller of the soak shares one pool: with net/http's default of 2
	// idle connections per host, most calls would open a connection of
	// their own.
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 1024
	r := &soakRelay{opts: o, client: &http.Client{Transport: tr}}
	down := make(chan struct{})
	r.up.Store(&down)
	return r
}

// start runs the relay and waits until it answers /healthz. Rates, the
// queue's bound and the storage budgets are off: every caller of the soak
// has one address, and a refusal for a budget says nothing of durability
// (after a restart a net counts as unserved until its SimServer polls
// again, so its smaller budget would refuse requests for a moment).
func (r *soakRelay) start(ctx context.Context) error {
	cmd := exec.CommandContext(ctx, r.opts.Exe, "serve", "--addr", "127.0.0.1:0", "--db", r.opts.DB,
		"--rate-ip", "0", "--rate-token", "0", "--rate-server", "0", "--rate-via", "0", "--max-conns-per-ip", "0", "--max-queue", "0",
		"--max-net-store", "0", "--max-addr-store", "0", "--max-unserved-store", "0",
		"--lease", "2s", "--log-level", "error")
	cmd.Env = r.opts.Env
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return err
	}
	r.cmd = cmd
	urls := make(chan string, 1)
	go func() { // the first line names the address; the rest is drained
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if u, ok := strings.CutPrefix(sc.Text(), "c2cvia listening on "); ok {
				select {
				case urls <- strings.Fields(u)[0]:
				default:
				}
			}
		}
	}()
	select {
	case base := <-urls:
		r.base.Store(&base)
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		return errors.New("the relay did not start within 30 s")
	case <-ctx.Done():
		return ctx.Err()
	}
	close(*r.up.Load())
	return nil
}

// kill SIGKILLs the relay and waits for it to be gone.
func (r *soakRelay) kill() {
	down := make(chan struct{})
	r.up.Store(&down)
	_ = r.cmd.Process.Kill()
	_ = r.cmd.Wait()
	r.client.CloseIdleConnections() // the next relay listens on another port
}

// soakReply is one answer of the relay.
type soakReply struct {
	status int
	header http.Header
	body   []byte
}

// send sends one request once the relay is up, and does not repeat it:
// an error is a call cut by a kill (or ctx ending), which only its caller
// can judge. path is absolute on the relay (it may carry a query).
func (r *soakRelay) send(ctx context.Context, method, path string, h http.Header, body string) (soakReply, error) {
	select {
	case <-*r.up.Load():
	case <-ctx.Done():
		return soakReply{}, ctx.Err()
	}
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, *r.base.Load()+path, rd)
	if err != nil {
		return soakReply{}, err
	}
	for name, vals := range h {
		req.Header[name] = vals
	}
	resp, err := r.client.Do(req)
	if err != nil {
		r.count(ctx, 0)
		return soakReply{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		r.count(ctx, 0)
		return soakReply{}, err
	}
	r.count(ctx, resp.StatusCode)
	return soakReply{resp.StatusCode, resp.Header, b}, nil
}

// fetch sends one request, repeating it while the relay is down or
// restarting, and returns the first answer: for calls that may be
// repeated (reads, and writes whose repeat the relay refuses).
func (r *soakRelay) fetch(ctx context.Context, method, path string, h http.Header, body string) (soakReply, error) {
	for {
		rep, err := r.send(ctx, method, path, h, body)
		if err == nil || ctx.Err() != nil {
			return rep, err
		}
		r.retries.Add(1) // killed mid-call: the answer is lost, the call is repeated
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
		}
	}
}

// call is fetch for an API call with its parameters as a form (nil: none).
// A 503 store_busy (the store refused the write, nothing was written) is
// counted and the call repeated, as a client does after Retry-After.
func (r *soakRelay) call(ctx context.Context, method, path string, form url.Values) (int, []byte, error) {
	var h http.Header
	var body string
	if form != nil {
		h, body = http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, form.Encode()
	}
	for {
		rep, err := r.fetch(ctx, method, path, h, body)
		if err != nil || rep.status != http.StatusServiceUnavailable || !bytes.Contains(rep.body, []byte(`"store_busy"`)) {
			return rep.status, rep.body, err
		}
		r.busy.Add(1)
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return 0, nil, ctx.Err()
		}
	}
}

// count counts one call's end: answered with status, or not answered (0)
// though ctx had not ended.
func (r *soakRelay) count(ctx context.Context, status int) {
	switch {
	case status == 0 && ctx.Err() == nil:
		r.failed.Add(1)
	case status >= 500:
		r.answered.Add(1)
		r.status5xx.Add(1)
	case status != 0:
		r.answered.Add(1)
	}
}
