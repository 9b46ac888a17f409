// Clients that hold the relay's connections or memory: pages bounded in
// bytes, a deadline on every write, a cap on connections per address, and
// no keep-alive after an ambiguously framed request. Memory and descriptors
// are measured on a relay process.

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestPagesBoundedInBytes: a peer page, from the cache or from SQL, and a
// SimServer's page of requests stop before maxPageBytes, with at least one
// item, and the rest comes next.
func TestPagesBoundedInBytes(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", 60<<10) // 4 of them fit in a page, not 5
	for _, tc := range []struct {
		name  string
		cache int // messages the cache holds per net
	}{{"cache", msgCacheMessages}, {"sql", 2}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newTestRelay(t)
			setCacheLimit(r.store.msgs, tc.cache)
			from, to := r.peerLogin("alpha"), r.peerLogin("alpha")
			for range 10 {
				r.fanOut(from, "", big)
			}
			var sizes []int
			since := int64(0)
			for since < 10 {
				rep := r.get("/api/v1/peer/pullsmart", url.Values{"token": {to.tok}, "wait": {"0"}, "since": {strconv.FormatInt(since, 10)}})
				assert.LessOrEqual(t, len(rep.Body), maxPageBytes+1024, "a page over the bound")
				page := decodePage(t, rep)
				require.NotEmpty(t, page.Messages)
				sizes = append(sizes, len(page.Messages))
				since = page.Next
			}
			assert.Equal(t, []int{4, 4, 2}, sizes)
		})
	}

	t.Run("requests", func(t *testing.T) {
		t.Parallel()
		r := newTestRelay(t)
		tok, _ := r.login("alpha")
		huge := strings.Repeat("y", 900<<10)
		r.push(tok, map[string]any{"simEndpoint": "/huge", "simBody": huge})
		for range 5 {
			r.push(tok, map[string]any{"simEndpoint": "/big", "simBody": big})
		}
		var sizes []int
		for range 3 {
			rep, got := r.pullReqsReply("alpha", testKey, url.Values{"max": {"100"}})
			require.Equal(t, http.StatusOK, rep.Status)
			assert.LessOrEqual(t, len(rep.Body), max(maxPageBytes, len(huge))+4096)
			sizes = append(sizes, len(got))
		}
		assert.Equal(t, []int{1, 4, 1}, sizes, "the huge one alone, then four, then the last")
	})
}

// TestClientsThatNeverReadPinLittle: one token, 100 broadcasts of 64 KiB,
// then 150 connections asking for every one of them at once (max=100,
// wait=0) and never reading. Each reply is at most maxPageBytes and its
// writes get --write-timeout, so every handler ends and the relay's peak
// memory grows by a fraction of what 150 whole pages (about 1 GB) took.
func TestClientsThatNeverReadPinLittle(t *testing.T) {
	t.Parallel()
	p := startRelayProcess(t, testDB(t, "relay.db"), "--write-timeout", "1s",
		"--max-conns-per-ip", "0", "--rate-ip", "0", "--rate-token", "0")
	r := &testRelay{t: t, URL: p.URL}
	from, to := r.peerLogin("alpha"), r.peerLogin("alpha")
	data := strings.Repeat("z", 65_000)
	for range 100 {
		r.fanOut(from, "", data)
	}
	before := peakRSS(t, p.cmd.Process.Pid)
	route := series(httpRequests, "route", "GET /api/v1/peer/pullsmart", "code", "200")
	served, _ := scrapeText(t, p.URL)

	const conns = 150
	addr := strings.TrimPrefix(p.URL, "http://")
	for range conns {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		t.Cleanup(func() { c.Close() })
		_, err = fmt.Fprintf(c, "GET /api/v1/peer/pullsmart?since=0&max=100&wait=0&token=%s HTTP/1.1\r\nHost: relay\r\n\r\n", to.tok)
		require.NoError(t, err)
	}
	// Every handler ends: it wrote its page into the socket, or its write
	// ran out of time. Without a write deadline they wait for ever.
	waitFor(t, 60*time.Second, func() bool {
		m, _ := scrapeText(t, p.URL)
		return m[route]-served[route] >= conns
	}, "every pullsmart of the clients that never read to end")
	after := peakRSS(t, p.cmd.Process.Pid)
	t.Logf("peak RSS %d MiB before, %d MiB after %d clients that never read", before>>20, after>>20, conns)
	// 150 pages of 100 messages were about 1 GB; bounded pages, at most
	// 150 x 256 KiB and their reads, stay far under this ceiling (race
	// builds double the heap's footprint).
	ceiling := int64(300 << 20)
	if raceEnabled {
		ceiling *= 2
	}
	assert.Less(t, after-before, ceiling, "peak RSS grew by %d MiB", (after-before)>>20)
	assert.Equal(t, http.StatusOK, r.get("/healthz", nil).Status)
}

// peakRSS reads a process's peak resident memory (VmHWM) in bytes.
func peakRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			require.NoError(t, err, line)
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// TestSlowlorisCappedPerAddress: one address holding far more half-sent
// requests than the relay has descriptors (its open-file limit lowered to
// 256) gets --max-conns-per-ip of them; the others are closed at once, so
// /healthz from another address still answers. Without the cap the relay
// runs out of descriptors and /healthz cannot connect.
func TestSlowlorisCappedPerAddress(t *testing.T) {
	t.Parallel()
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("needs sh to lower the relay's open-file limit")
	}
	dbPath := filepath.Join(t.TempDir(), "relay.db")
	// The test binary as the relay, under sh's ulimit.
	cmd := exec.Command("sh", "-c", `ulimit -n 256 && exec "$0" "$@"`, os.Args[0],
		"serve", "--addr", "127.0.0.1:0", "--db", dbPath, "--max-conns-per-ip", "64")
	cmd.Env = append(os.Environ(), "C2CVIA_TEST_AS_RELAY=1")
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	urls := make(chan string, 1)
	go scanListening(stdout, urls)
	var base string
	select {
	case base = <-urls:
	case <-time.After(30 * time.Second):
		t.Fatal("relay did not start within 30s")
	}
	addr := strings.TrimPrefix(base, "http://")

	// 127.0.0.1 opens 400 connections, each with half a request.
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for range 400 {
		c, err := net.Dial("tcp", addr)
		require.NoError(t, err)
		held = append(held, c)
		_, err = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: relay\r\n")
		require.NoError(t, err)
	}
	// The relay closes what is over the cap: those reads end at once,
	// while the 64 within it stay open.
	ends := make(chan bool, len(held))
	for _, c := range held {
		go func() {
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			_, err := c.Read(make([]byte, 1))
			ends <- err != nil && !isTimeout(err)
		}()
	}
	closed := 0
	for range held {
		if <-ends {
			closed++
		}
	}
	assert.GreaterOrEqual(t, closed, 400-64, "connections over the cap are closed")

	// Another address (127.0.0.2 reaches loopback too) is served.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	require.NoError(t, err, "a second address cannot connect")
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
	require.NoError(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	require.NoError(t, err, "/healthz from another address")
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	resp.Body.Close()
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// TestAmbiguousFramingCloses: a request with both Content-Length and
// Transfer-Encoding is answered, then its connection is closed: a request
// pipelined behind it is never read.
func TestAmbiguousFramingCloses(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	c, err := net.Dial("tcp", strings.TrimPrefix(r.URL, "http://"))
	require.NoError(t, err)
	defer c.Close()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	body := `{"net":"alpha"}`
	_, err = fmt.Fprintf(c, "POST /api/v1/client/login HTTP/1.1\r\nHost: relay\r\nContent-Type: application/json\r\n"+
		"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"+
		"GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n", len(body), body)
	require.NoError(t, err)
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.True(t, resp.Close, "the answer says the connection closes")
	_, err = http.ReadResponse(br, nil)
	assert.Error(t, err, "the pipelined request was answered")
}

// startLimitedRelay runs the test binary as `c2cvia serve` under sh with
// its open-file limit lowered to nofile, and returns the relay's base URL,
// its process id and its stderr.
func startLimitedRelay(t *testing.T, nofile int, args ...string) (base string, pid int, stderr *syncBuffer) {
	t.Helper()
	if _, err := exec.LookPath("sh"); err != nil {
		t.Skip("needs sh to lower the relay's open-file limit")
	}
	dbPath := filepath.Join(t.TempDir(), "relay.db")
	cmd := exec.Command("sh", append([]string{"-c", fmt.Sprintf(`ulimit -n %d && exec "$0" "$@"`, nofile), os.Args[0],
		"serve", "--addr", "127.0.0.1:0", "--db", dbPath}, args...)...)
	cmd.Env = append(os.Environ(), "C2CVIA_TEST_AS_RELAY=1")
	stderr = &syncBuffer{}
	cmd.Stderr = stderr
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	urls := make(chan string, 1)
	go scanListening(stdout, urls)
	select {
	case base = <-urls:
	case <-time.After(30 * time.Second):
		t.Fatalf("relay did not start within 30s\n%s", stderr)
	}
	return base, cmd.Process.Pid, stderr // sh exec'd the relay: same process
}

// openFiles counts the descriptors a process holds.
func openFiles(t *testing.T, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Skipf("no /proc here: %v", err)
	}
	return len(ents)
}

// dialFrom connects to addr from the local address ip (127.0.0.x all
// reach loopback).
func dialFrom(t *testing.T, ip, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}
	c, err := d.Dial("tcp", addr)
	require.NoError(t, err, "dial from %s", ip)
	t.Cleanup(func() { c.Close() })
	return c
}

// getHealthz asks for /healthz on c and reads the answer.
func getHealthz(t *testing.T, c net.Conn, br *bufio.Reader) int {
	t.Helper()
	require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Second)))
	_, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\n")
	require.NoError(t, err)
	resp, err := http.ReadResponse(br, nil)
	require.NoError(t, err, "/healthz")
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// TestConnectionsCappedRelayWide: many addresses, each within
// --max-conns-per-ip, together open more half-sent requests than the
// relay has descriptors (its open-file limit lowered to 256; 160 addresses
// x 128 used to take all 20,000 and make accept fail). The relay holds at
// most --max-conns' derived default (128 here) and closes the rest at
// once, so it never runs out: accept never fails, a monitor's keep-alive
// connection still answers, and a new connection from the host itself
// (127.0.0.1, which has a reserve) gets /healthz.
func TestConnectionsCappedRelayWide(t *testing.T) {
	t.Parallel()
	base, pid, stderr := startLimitedRelay(t, 256, "--max-conns-per-ip", "32", "--read-header-timeout", "60s")
	addr := strings.TrimPrefix(base, "http://")
	monitor := dialFrom(t, "127.0.0.250", addr)
	mr := bufio.NewReader(monitor)
	require.Equal(t, http.StatusOK, getHealthz(t, monitor, mr))

	var held []net.Conn
	for i := range 12 {
		for range 32 {
			c := dialFrom(t, fmt.Sprintf("127.0.0.%d", 2+i), addr)
			_, err := io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: relay\r\n")
			require.NoError(t, err)
			held = append(held, c)
		}
	}
	ends := make(chan bool, len(held))
	for _, c := range held {
		go func() {
			_ = c.SetReadDeadline(time.Now().Add(3 * time.Second))
			_, err := c.Read(make([]byte, 1))
			ends <- err != nil && !isTimeout(err)
		}()
	}
	closed := 0
	for range held {
		if <-ends {
			closed++
		}
	}
	fds := openFiles(t, pid)
	t.Logf("%d of %d connections closed at once; the relay holds %d descriptors of 256", closed, len(held), fds)
	assert.GreaterOrEqual(t, closed, len(held)-(128-1), "the relay holds at most 128 connections, the monitor's among them")
	assert.Less(t, fds, 256-loopbackReserve, "descriptors to spare")
	assert.NotContains(t, stderr.String(), "too many open files", "accept never failed")

	assert.Equal(t, http.StatusOK, getHealthz(t, monitor, mr), "the monitor's keep-alive connection")
	local := dialFrom(t, "127.0.0.1", addr)
	assert.Equal(t, http.StatusOK, getHealthz(t, local, bufio.NewReader(local)), "a new connection from the host itself")
}

// TestConnCaps: the caps per address (an IPv6 /64), per IPv6 /48 and in
// all; trusted proxies count in the total only; 127.0.0.1 and ::1 have
// loopbackReserve past the total; a release gives every slot back, once.
func TestConnCaps(t *testing.T) {
	t.Parallel()
	admit := func(k *connCaps, a string) (func(), bool) {
		return k.admit(netip.MustParseAddr(a), true)
	}
	t.Run("per /64 and /48", func(t *testing.T) {
		k := newConnCaps(0, 2, 5, nil)
		var release []func()
		for i, a := range []string{"2001:db8:1:1::1", "2001:db8:1:1::2", "2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:3::1"} {
			r, ok := admit(k, a)
			require.True(t, ok, "connection %d", i)
			release = append(release, r)
		}
		_, ok := admit(k, "2001:db8:1:3::2")
		assert.False(t, ok, "the /48 holds 5")
		_, ok = admit(k, "2001:db8:2:1::1")
		assert.True(t, ok, "another /48")
		release[4]()
		release[4]() // once
		_, ok = admit(k, "2001:db8:1:1::3")
		assert.False(t, ok, "the /64 holds 2")
		r, ok := admit(k, "2001:db8:1:4::1")
		assert.True(t, ok)
		r()
		_, ok = admit(k, "192.0.2.1")
		assert.True(t, ok, "IPv4 has no /48")
		assert.Equal(t, int64(1), k.refusedSite.Load())
		assert.Equal(t, int64(1), k.refusedAddr.Load())
	})
	t.Run("total", func(t *testing.T) {
		trusted := newConnCaps(0, 1, 1, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("2001:db8::/32")})
		for _, a := range []string{"10.0.0.1", "10.0.0.1", "2001:db8::1", "2001:db8::1"} {
			_, ok := admit(trusted, a)
			assert.True(t, ok, "a trusted proxy has no cap of its own")
		}
		k := newConnCaps(3, loopbackReserve+1, 0, []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")})
		_, ok1 := admit(k, "10.0.0.1")
		_, ok2 := admit(k, "10.0.0.1")
		assert.True(t, ok1 && ok2)
		r, ok := admit(k, "192.0.2.1")
		require.True(t, ok)
		_, ok = admit(k, "192.0.2.2")
		assert.False(t, ok, "3 in all")
		var local []func()
		for range loopbackReserve {
			rl, ok := admit(k, "127.0.0.1")
			require.True(t, ok, "the host itself has a reserve")
			local = append(local, rl)
		}
		_, ok = admit(k, "127.0.0.1")
		assert.False(t, ok)
		_, ok = admit(k, "::1")
		assert.False(t, ok)
		_, ok = admit(k, "127.0.0.2")
		assert.False(t, ok, "only 127.0.0.1 and ::1")
		assert.Equal(t, 3+loopbackReserve, k.openConns())
		r()
		_, ok = admit(k, "192.0.2.2")
		assert.False(t, ok, "the host's connections count in the total")
		for _, rl := range local {
			rl()
		}
		_, ok = admit(k, "192.0.2.2")
		assert.True(t, ok)
		assert.Equal(t, 3, k.openConns())
		assert.Equal(t, int64(5), k.refusedTotal.Load())
	})
	t.Run("report", func(t *testing.T) {
		var log syncBuffer
		logger := newLogger(&log, "json", "info")
		k := newConnCaps(1, 0, 0, nil)
		_, ok := admit(k, "192.0.2.1")
		require.True(t, ok)
		t0 := time.Now()
		k.report(logger, t0)
		assert.Empty(t, log.String(), "nothing refused: no line")
		for range 3 {
			_, ok = admit(k, "192.0.2.2")
			require.False(t, ok)
		}
		k.report(logger, t0.Add(time.Second))
		lines := linesWith(t, &log, "connections refused")
		require.Len(t, lines, 1)
		assert.Equal(t, 3.0, lines[0]["total"])
		assert.Equal(t, 1.0, lines[0]["open"])
		_, _ = admit(k, "192.0.2.2")
		k.report(logger, t0.Add(30*time.Second))
		assert.Len(t, linesWith(t, &log, "connections refused"), 1, "at most a line a minute")
		k.report(logger, t0.Add(62*time.Second))
		lines = linesWith(t, &log, "connections refused")
		require.Len(t, lines, 2)
		assert.Equal(t, 1.0, lines[1]["total"], "the refusals since the last line")
	})
	t.Run("derived", func(t *testing.T) {
		if openFileLimit() == 0 {
			t.Skip("no open-file limit here")
		}
		n := defaultMaxConns()
		assert.Positive(t, n)
		assert.LessOrEqual(t, n, openFileLimit()-128)
	})
}

// sendHalfBody sends a pushreq with a Content-Length of size and all of its
// body but the last byte on c, writing in the background (a refused call's
// body is never read), and returns the status of the answer, or 0 when
// none comes within wait.
func sendHalfBody(c net.Conn, tok string, size int, wait time.Duration) <-chan int {
	status := make(chan int, 1)
	go func() {
		_, _ = fmt.Fprintf(c, "POST /api/v1/client/pushreq HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer %s\r\n"+
			"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n", tok, size)
		_, _ = c.Write(bytes.Repeat([]byte{' '}, size-1))
	}()
	go func() {
		_ = c.SetReadDeadline(time.Now().Add(wait))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			status <- 0
			return
		}
		resp.Body.Close()
		if resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "1" {
			status <- -1
			return
		}
		status <- resp.StatusCode
	}()
	return status
}

// TestBodiesHeldRelayWide: 200 connections from 20 addresses each send
// all but the last byte of a body of about 1 MiB (600 of them took the relay from
// 20 MiB to 711 MiB). With --max-inflight-body 16MiB the relay holds at
// most 16 MiB of them, at most a sixteenth (but at least the largest
// body) per address; the others get 503 server_busy with Retry-After, and
// the relay's peak memory grows by a fraction of what the bodies sent. A
// call with a small body (64 KiB or less) still gets through: it is not
// held.
func TestBodiesHeldRelayWide(t *testing.T) {
	t.Parallel()
	p := startRelayProcess(t, testDB(t, "relay.db"), "--max-inflight-body", "16MiB",
		"--max-conns-per-ip", "0", "--rate-ip", "0", "--rate-token", "0", "--read-body-timeout", "60s")
	r := &testRelay{t: t, URL: p.URL}
	tok, _ := r.login("alpha")
	addr := strings.TrimPrefix(p.URL, "http://")
	before := peakRSS(t, p.cmd.Process.Pid)

	var answers []<-chan int
	for i := range 20 {
		for range 10 {
			c := dialFrom(t, fmt.Sprintf("127.0.1.%d", 1+i), addr)
			answers = append(answers, sendHalfBody(c, tok, 1<<20-4<<10, 5*time.Second))
		}
	}
	codes := map[int]int{}
	for _, a := range answers {
		codes[<-a]++
	}
	after := peakRSS(t, p.cmd.Process.Pid)
	t.Logf("answers (0: none, the body still held): %v; peak RSS %d MiB before, %d MiB after", codes, before>>20, after>>20)
	// Bodies are held as they arrive, 64 KiB at a time: the calls still
	// reading hold at most the 16 MiB between them; the others are 503.
	assert.Positive(t, codes[http.StatusServiceUnavailable], "the budget refused some")
	assert.Equal(t, len(answers), codes[0]+codes[http.StatusServiceUnavailable], "the others are 503 with Retry-After: 1")
	ceiling := int64(80 << 20) // 200 MiB of bodies were sent
	if raceEnabled {
		ceiling *= 2
	}
	assert.Less(t, after-before, ceiling, "peak RSS grew by %d MiB", (after-before)>>20)
	rep := r.postJSON("/api/v1/client/pushreq", tok, map[string]any{"sim_req": map[string]any{"simEndpoint": "/small"}})
	assert.Equal(t, http.StatusCreated, rep.Status, "a small body fits beside them: %s", rep.Body)
}

// TestBodyBudgetServerBusy: a call whose body finds no room in
// --max-inflight-body within its wait is 503 server_busy with Retry-After
// and the JSON error shape, and writes nothing; one from the address that
// holds its share is refused at once. Calls without a body, or with one of
// 64 KiB or less, pass, and the room comes back when the held body's call
// ends. A sender holds only what it has sent: one that stalls after its
// headers holds nothing.
func TestBodyBudgetServerBusy(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) {
		c.MaxInflight = simEnvelope(c.MaxBody) // the least allowed: one largest body
		c.TrustProxy = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	r.srv.bodies.wait = 50 * time.Millisecond
	tok, _ := r.login("alpha")
	before := storeRows(t, r)

	holder := dialFrom(t, "127.0.0.1", strings.TrimPrefix(r.URL, "http://"))
	held := sendHalfBody(holder, tok, int(simEnvelope(r.cfg.MaxBody)), time.Minute)
	waitFor(t, 10*time.Second, func() bool { return r.srv.bodies.held() >= simEnvelope(r.cfg.MaxBody)-holdStep }, "the body held")

	push := func(xff string) reply {
		// Over 64 KiB: a smaller body is not held, and never refused.
		b := `{"sim_req":{"simEndpoint":"/x","simBody":"` + strings.Repeat("b", 200<<10) + `"}}`
		req, err := http.NewRequest(http.MethodPost, r.URL+"/api/v1/client/pushreq", strings.NewReader(b))
		require.NoError(t, err)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+tok)
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		return r.do(req)
	}
	for _, from := range []string{"", "192.0.2.9"} { // the holder's address, another
		rep := push(from)
		assertErrorShape(t, rep, http.StatusServiceUnavailable, "server_busy")
		assert.Equal(t, "1", rep.Header.Get("Retry-After"))
	}
	assert.Equal(t, http.StatusOK, r.get("/healthz", nil).Status)
	assert.Equal(t, "not_found", r.get("/api/v1/client/check", url.Values{"token": {tok}, "rid": {"x"}}).errorCode(),
		"a call without a body holds nothing")
	assert.Equal(t, before, storeRows(t, r), "a refused call writes nothing")
	assert.Equal(t, 2.0, refusals(r, "inflight_body"))
	small := r.postJSON("/api/v1/client/pushreq", tok, map[string]any{"sim_req": map[string]any{"simEndpoint": "/small"}})
	assert.Equal(t, http.StatusCreated, small.Status, "a small body passes beside them: %s", small.Body)
	before = storeRows(t, r)

	holder.Close()
	assert.Equal(t, 0, <-held)
	waitFor(t, 10*time.Second, func() bool { return r.srv.bodies.held() == 0 }, "the held body given back")
	assert.Equal(t, http.StatusCreated, push("192.0.2.9").Status)
}

// TestStalledSendersHoldNothing: connections that send their headers with
// a large Content-Length and then one byte hold only that byte of
// --max-inflight-body, so they cannot keep anyone's bodies out: a
// SimClient's 200 KiB pushreq and the SimServer's answer go through beside
// 256 of them from 16 addresses.
func TestStalledSendersHoldNothing(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.MaxInflight = 16 << 20 })
	r.srv.bodies.wait = 50 * time.Millisecond
	tok, _ := r.login("alpha")
	addr := strings.TrimPrefix(r.URL, "http://")
	for i := range 16 {
		for range 16 {
			c := dialFrom(t, fmt.Sprintf("127.0.1.%d", 1+i), addr)
			_, err := fmt.Fprintf(c, "POST /api/v1/client/pushreq HTTP/1.1\r\nHost: relay\r\nAuthorization: Bearer %s\r\n"+
				"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n{", tok, 1<<20)
			require.NoError(t, err)
		}
	}
	waitFor(t, 10*time.Second, func() bool { return r.srv.bodies.reading.Load() >= 256 }, "the stalled senders' bodies being read")
	assert.Less(t, r.srv.bodies.held(), int64(holdStep), "they hold what they sent, not their Content-Length")
	rid := r.push(tok, map[string]any{"simEndpoint": "/big", "simBody": strings.Repeat("b", 200<<10)})
	got := r.pullReqs("alpha", testKey, nil)
	require.Len(t, got, 1)
	assert.Equal(t, http.StatusOK, r.answer("alpha", testKey, rid, map[string]any{"simBody": "ok"}).Status)
}
