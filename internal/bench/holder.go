// The idle scenario's poll holder: a child process (this binary as the
// hidden `bench hold-polls`) that holds the long polls' client side, so the
// bench process measures the relay's memory alone and needs one descriptor
// per poll, not two.

package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/spf13/cobra"
)

// ChildEnv is the environment variable, set to "1", that marks a process
// as the bench's poll holder: this binary run again as `c2cvia bench
// hold-polls`. The binary needs nothing of it; a test binary that runs
// main() when it is set (as package main's TestMain does) can then play
// the binary.
const ChildEnv = "C2CVIA_BENCH_CHILD"

// pollHolder is the child process holding the idle polls: this binary run
// as `c2cvia bench hold-polls`.
type pollHolder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	once  sync.Once
	err   error
}

// holdPolls starts the holder, hands it base and the polls' tokens, and
// returns once it has sent every poll.
func (b *bench) holdPolls(ctx context.Context, label, base string, tokens []string) (*pollHolder, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe, "bench", "hold-polls")
	cmd.Env = append(os.Environ(), ChildEnv+"=1")
	cmd.Stderr = b.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	h := &pollHolder{cmd: cmd, stdin: stdin}
	go func() {
		w := bufio.NewWriter(stdin)
		fmt.Fprintln(w, base)
		for _, tok := range tokens {
			fmt.Fprintln(w, tok)
		}
		fmt.Fprintln(w) // the end of the list
		_ = w.Flush()
	}()
	bar := b.bar(label, int64(len(tokens)))
	defer bar.Finish()
	stop := context.AfterFunc(ctx, func() { h.release() })
	defer stop()
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		line := sc.Text()
		if n, ok := strings.CutPrefix(line, "opened "); ok {
			k, _ := strconv.Atoi(n)
			_ = bar.Set(k)
		}
		if line == "held" {
			go func() { _, _ = io.Copy(io.Discard, stdout) }()
			return h, nil
		}
	}
	return nil, errors.Join(fmt.Errorf("the process holding the polls ended before it held them all"), h.release())
}

// release has the holder close its polls and waits for it to end.
func (h *pollHolder) release() error {
	h.once.Do(func() {
		h.stdin.Close()
		h.err = h.cmd.Wait()
	})
	return h.err
}

// newHoldCommand is the poll holder. It reads a base URL and one token a
// line up to a blank line from stdin, opens a long poll per token, prints
// "held", and closes them all when stdin ends.
func newHoldCommand(stdout io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:    "hold-polls",
		Short:  "Hold idle long polls for the idle scenario (used by bench itself)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return holdPollsChild(cmd.Context(), cmd.InOrStdin(), stdout)
		},
	}
}

func holdPollsChild(ctx context.Context, in io.Reader, out io.Writer) error {
	sc := bufio.NewScanner(in)
	var base string
	var tokens []string
	for sc.Scan() && sc.Text() != "" {
		if base == "" {
			base = sc.Text()
			continue
		}
		tokens = append(tokens, sc.Text())
	}
	if err := raiseFDLimit(uint64(len(tokens) + 64)); err != nil {
		return err
	}
	conns := make([]net.Conn, len(tokens))
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var opened atomic.Int64
	var mu sync.Mutex
	b := &bench{stderr: io.Discard}
	err := b.parallel(ctx, "", len(tokens), 32, func(ctx context.Context, i int) error {
		c, err := dialPoll(ctx, base, tokens[i])
		conns[i] = c
		if n := opened.Add(1); n%500 == 0 {
			mu.Lock()
			fmt.Fprintf(out, "opened %d\n", n)
			mu.Unlock()
		}
		return err
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "held")
	_, _ = io.Copy(io.Discard, in) // until the bench closes stdin
	return nil
}

// dialPoll opens a connection to base and sends a pullsmart with a long
// wait on it (the relay clamps it to its --max-wait), and reads nothing.
func dialPoll(ctx context.Context, base, token string) (net.Conn, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), map[string]string{"http": "80", "https": "443"}[u.Scheme])
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", host)
	if err != nil {
		return nil, err
	}
	if u.Scheme == "https" {
		tc := tls.Client(c, &tls.Config{ServerName: u.Hostname()})
		if err := tc.HandshakeContext(ctx); err != nil {
			c.Close()
			return nil, err
		}
		c = tc
	}
	_, err = io.WriteString(c, "GET "+u.Path+"/api/v1/client/pullsmart?wait=3600 HTTP/1.1\r\nHost: "+u.Host+
		"\r\nAuthorization: Bearer "+token+"\r\nUser-Agent: c2cvia-bench\r\n\r\n")
	if err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}
