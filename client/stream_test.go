// Streamed answers and cancellation against the relay (docs/API.md,
// "Streamed answers and cancellation"): a handler that flushes reaches its
// caller as it writes, through /via/ and through the HTTPClient; a caller
// that goes away ends the handler's context; streams hold no slot.

package client_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/c2cvia/c2cvia/client"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// recv waits up to within for a value from ch.
func recv[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(within):
		t.Fatalf("waited %s for %s", within, what)
		var zero T
		return zero
	}
}

// sseHandler writes one server-sent event and flushes, waits for release
// (or its context's end), then writes a second and returns. It sends its
// request's context error, once it ends, to ended (if not nil).
func sseHandler(release <-chan struct{}, ended chan<- error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		_, _ = io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
			_, _ = io.WriteString(w, "data: two\n\n")
		case <-r.Context().Done():
			if ended != nil {
				ended <- r.Context().Err()
			}
		}
	}
}

// readEvent reads one server-sent event (its lines up to a blank one) in
// the background and sends it to the returned channel.
func readEvent(br *bufio.Reader) <-chan string {
	got := make(chan string, 1)
	go func() {
		var ev strings.Builder
		for {
			line, err := br.ReadString('\n')
			ev.WriteString(line)
			if err != nil || line == "\n" {
				got <- ev.String()
				return
			}
		}
	}()
	return got
}

// TestServeStreamVia: a handler behind Serve writes an event, flushes and
// waits; an HTTP client reading through /via/ gets the event before the
// handler may write the next, then the rest and the end of the body.
func TestServeStreamVia(t *testing.T) {
	t.Parallel()
	t.Run("Go's client", func(t *testing.T) {
		t.Parallel()
		net := testNet(t)
		release := make(chan struct{})
		unblock := sync.OnceFunc(func() { close(release) })
		t.Cleanup(unblock) // before Serve's stop, should the test fail first
		serve(t, relayURL, net, testKey, sseHandler(release, nil))
		resp, err := http.Get(relayURL + "/via/" + net + "/events")
		require.NoError(t, err)
		defer resp.Body.Close()
		assert.Equal(t, http.StatusOK, resp.StatusCode)
		assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
		assert.Equal(t, int64(-1), resp.ContentLength, "chunked: no length was declared")
		br := bufio.NewReader(resp.Body)
		assert.Equal(t, "data: one\n\n", recv(t, readEvent(br), "the first event, before the second is written"))
		unblock()
		rest, err := io.ReadAll(br)
		require.NoError(t, err)
		assert.Equal(t, "data: two\n\n", string(rest))
	})
	t.Run("curl", func(t *testing.T) {
		t.Parallel()
		curl, err := exec.LookPath("curl")
		if err != nil {
			t.Skip("curl is not on PATH")
		}
		net := testNet(t)
		release := make(chan struct{})
		unblock := sync.OnceFunc(func() { close(release) })
		t.Cleanup(unblock) // before Serve's stop, should the test fail first
		serve(t, relayURL, net, testKey, sseHandler(release, nil))
		ctx, cancel := context.WithTimeout(context.Background(), within)
		defer cancel()
		cmd := exec.CommandContext(ctx, curl, "--silent", "--show-error", "--no-buffer", "--fail", relayURL+"/via/"+net+"/events")
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		var stderr strings.Builder
		cmd.Stderr = &stderr
		require.NoError(t, cmd.Start())
		br := bufio.NewReader(out)
		assert.Equal(t, "data: one\n\n", recv(t, readEvent(br), "curl's first event, before the second is written"))
		unblock()
		rest, err := io.ReadAll(br)
		require.NoError(t, err)
		require.NoError(t, cmd.Wait(), "curl: %s", stderr.String())
		assert.Equal(t, "data: two\n\n", string(rest))
	})
}

// TestServeResponseController: http.ResponseController's Flush reaches
// the writer (FlushError) and sends what was written so far; its error is
// nil while the caller reads.
func TestServeResponseController(t *testing.T) {
	t.Parallel()
	net := testNet(t)
	flushed := make(chan error, 1)
	release := make(chan struct{})
	unblock := sync.OnceFunc(func() { close(release) })
	t.Cleanup(unblock) // before Serve's stop, should the test fail first
	serve(t, relayURL, net, testKey, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "first|")
		flushed <- http.NewResponseController(w).Flush()
		<-release
		_, _ = io.WriteString(w, "second")
	}))
	resp, err := http.Get(relayURL + "/via/" + net + "/")
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.NoError(t, recv(t, flushed, "the handler's flush"))
	first := make(chan string, 1)
	go func() {
		b, _ := bufio.NewReader(resp.Body).ReadString('|')
		first <- b
	}()
	assert.Equal(t, "first|", recv(t, first, "the flushed bytes, before the rest is written"))
	unblock()
	rest, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	assert.Equal(t, "second", string(rest))
	assert.Equal(t, "text/plain; charset=utf-8", resp.Header.Get("Content-Type"), "sniffed from the first part")
}

// TestHTTPClientStream: the HTTPClient's resp.Body reads a streamed answer
// as it comes: the first part before the handler writes the second; and a
// body of many parts, larger than one pullsmart gives, arrives whole.
func TestHTTPClientStream(t *testing.T) {
	t.Parallel()
	net := testNet(t)
	release := make(chan struct{})
	unblock := sync.OnceFunc(func() { close(release) })
	t.Cleanup(unblock) // before Serve's stop, should the test fail first
	big := make([]byte, 3<<20+12345)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range big {
		big[i] = byte(rng.Uint32())
	}
	mux := http.NewServeMux()
	mux.Handle("GET /events", sseHandler(release, nil))
	mux.HandleFunc("GET /big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(big) // more than a part: it goes out as a stream, unflushed
	})
	serve(t, relayURL, net, testKey, mux)
	s := login(t, relayURL, net)

	resp, err := s.HTTPClient().Get("http://c2cvia/events")
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, "text/event-stream", resp.Header.Get("Content-Type"))
	assert.Equal(t, int64(-1), resp.ContentLength)
	br := bufio.NewReader(resp.Body)
	assert.Equal(t, "data: one\n\n", recv(t, readEvent(br), "the first event, before the second is written"))
	unblock()
	rest, err := io.ReadAll(br)
	require.NoError(t, err)
	assert.Equal(t, "data: two\n\n", string(rest))

	resp, err = s.HTTPClient().Get("http://c2cvia/big")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, len(big), len(body))
	assert.True(t, string(big) == string(body), "byte for byte")
}

// TestServeParts: an answer under the part size that is never flushed goes
// out whole, as one pushres; one past it goes out as a head and parts of
// at most 512 KiB, each starting where the last ended, the last one last.
func TestServeParts(t *testing.T) {
	t.Parallel()
	net := testNet(t)
	f := newFront(t)
	big := strings.Repeat("0123456789abcdef", (1<<20+1000)/16)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /small", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("s", 500<<10))
	})
	mux.HandleFunc("GET /big", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, big) })
	serve(t, f.URL, net, testKey, mux)
	s := login(t, relayURL, net)

	resp, err := s.HTTPClient().Get("http://c2cvia/small")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Len(t, body, 500<<10)
	assert.Equal(t, int64(500<<10), resp.ContentLength, "a whole answer has its length")
	assert.Equal(t, 0, f.count(pathPushPart))
	require.Equal(t, 1, f.count(pathPushRes))
	assert.NotContains(t, f.body(t, pathPushRes, 0), "more")

	resp, err = s.HTTPClient().Get("http://c2cvia/big")
	require.NoError(t, err)
	body, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, big, string(body))
	head := f.body(t, pathPushRes, 1)
	assert.Equal(t, true, head["more"])
	offset := 512 << 10 // the head's bytes
	n := f.count(pathPushPart)
	require.Equal(t, 2, n, "1 MiB + 1000 bytes: the head's 512 KiB, 512 KiB, 1000")
	for i := range n {
		q, part := f.call(t, pathPushPart, i)
		assert.Equal(t, strconv.Itoa(offset), q.Get("offset"), "part %d", i)
		assert.LessOrEqual(t, len(part), 512<<10)
		assert.Equal(t, i == n-1, q.Get("last") == "true", "part %d", i)
		assert.Equal(t, net, q.Get("net"))
		offset += len(part)
	}
	assert.Equal(t, len(big), offset)
}

// TestServePartRetry: a part that meets a failure that may pass is posted
// again with the same offset, and the caller gets every byte once.
func TestServePartRetry(t *testing.T) {
	t.Parallel()
	net := testNet(t)
	f := newFront(t)
	f.failNext(pathPushPart, 1, reply{status: http.StatusServiceUnavailable, body: "try again"})
	f.failNext(pathPushPart, 1, reply{drop: true})
	serve(t, f.URL, net, testKey, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := range 3 {
			fmt.Fprintf(w, "part %d;", i)
			w.(http.Flusher).Flush()
		}
	}))
	resp, err := http.Get(relayURL + "/via/" + net + "/")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	assert.Equal(t, "part 0;part 1;part 2;", string(body))
	q0, _ := f.call(t, pathPushPart, 0)
	q1, _ := f.call(t, pathPushPart, 1)
	q2, _ := f.call(t, pathPushPart, 2)
	assert.Equal(t, "7", q0.Get("offset"), "after the head's 7 bytes")
	assert.Equal(t, q0.Get("offset"), q1.Get("offset"), "tried again at the same offset")
	assert.Equal(t, q0.Get("offset"), q2.Get("offset"), "tried again at the same offset")
}

// TestServeStreamsFreeSlots: a handler whose answer is a stream holds no
// slot: with more streams open than WithConcurrency, Serve still takes and
// answers new requests.
func TestServeStreamsFreeSlots(t *testing.T) {
	t.Parallel()
	const n, streams = 2, 5
	net := testNet(t)
	release := make(chan struct{})
	started := make(chan struct{}, streams)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "open;")
		w.(http.Flusher).Flush()
		started <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	mux.HandleFunc("GET /quick", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "quick") })
	serve(t, relayURL, net, testKey, mux, client.WithConcurrency(n))
	unblock := sync.OnceFunc(func() { close(release) })
	t.Cleanup(unblock)
	s := login(t, relayURL, net)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	get := func(path string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://c2cvia"+path, nil)
		require.NoError(t, err)
		return s.HTTPClient().Do(req)
	}
	var bodies []io.ReadCloser
	for range streams {
		resp, err := get("/stream")
		require.NoError(t, err, "a stream's head, with %d streams open and %d slots", len(bodies), n)
		bodies = append(bodies, resp.Body)
		recv(t, started, "a stream")
	}
	resp, err := get("/quick")
	require.NoError(t, err, "answered with %d streams open and %d slots", streams, n)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, "quick", string(b))
	unblock()
	for _, body := range bodies {
		b, err := io.ReadAll(body)
		assert.NoError(t, err)
		assert.Equal(t, "open;", string(b))
		body.Close()
	}
}

// TestServeWithdrawnVia: a /via/ caller that goes away, while it waits for
// the answer or while it reads a stream, ends the handler's context (the
// watch: the lease is long, so no renewal tells first), and a write after
// that fails with the relay's 410.
func TestServeWithdrawnVia(t *testing.T) {
	t.Parallel()
	for _, streamed := range []bool{false, true} {
		t.Run(map[bool]string{false: "waiting", true: "reading a stream"}[streamed], func(t *testing.T) {
			t.Parallel()
			net := testNet(t)
			entered := make(chan struct{}, 1)
			ended := make(chan time.Time, 1)
			writeErr := make(chan error, 1)
			serve(t, relayURL, net, testKey, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if streamed {
					_, _ = io.WriteString(w, "begun;")
					w.(http.Flusher).Flush()
				}
				entered <- struct{}{}
				<-r.Context().Done()
				ended <- time.Now()
				_, _ = io.WriteString(w, "too late")
				writeErr <- http.NewResponseController(w).Flush()
			}), client.WithLease(time.Minute))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, relayURL+"/via/"+net+"/slow", nil)
			require.NoError(t, err)
			got := make(chan error, 1)
			go func() {
				resp, err := http.DefaultClient.Do(req)
				if err == nil {
					_, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				got <- err
			}()
			recv(t, entered, "the handler")
			left := time.Now()
			cancel()
			assert.ErrorIs(t, recv(t, got, "the caller's end"), context.Canceled)
			delay := recv(t, ended, "the handler's context to end").Sub(left)
			t.Logf("the handler's context ended %v after its /via/ caller left", delay.Round(time.Millisecond))
			err = recv(t, writeErr, "the handler's flush")
			var e *client.Error
			require.ErrorAs(t, err, &e)
			assert.Equal(t, http.StatusGone, e.Status)
		})
	}
}

// TestHTTPClientWithdraws: an HTTPClient request whose context ends while
// it waits, or whose streamed body is closed before its end, is withdrawn:
// the handler's context ends.
func TestHTTPClientWithdraws(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		streamed bool
		leave    func(cancel context.CancelFunc, resp *http.Response)
	}{
		{"the context ends while it waits", false, func(cancel context.CancelFunc, _ *http.Response) { cancel() }},
		{"the context ends while it reads", true, func(cancel context.CancelFunc, _ *http.Response) { cancel() }},
		{"the body is closed before its end", true, func(_ context.CancelFunc, resp *http.Response) { resp.Body.Close() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			net := testNet(t)
			entered := make(chan struct{}, 1)
			ended := make(chan time.Time, 1)
			serve(t, relayURL, net, testKey, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.streamed {
					_, _ = io.WriteString(w, "begun;")
					w.(http.Flusher).Flush()
				}
				entered <- struct{}{}
				<-r.Context().Done()
				ended <- time.Now()
			}), client.WithLease(time.Minute))
			s := login(t, relayURL, net)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://c2cvia/slow", nil)
			require.NoError(t, err)
			type result struct {
				resp *http.Response
				err  error
			}
			done := make(chan result, 1)
			go func() {
				resp, err := s.HTTPClient().Do(req)
				done <- result{resp, err}
			}()
			recv(t, entered, "the handler")
			var resp *http.Response
			if tc.streamed {
				r := recv(t, done, "the stream's head")
				require.NoError(t, r.err)
				resp = r.resp
				defer resp.Body.Close()
				b := make([]byte, 6)
				_, err := io.ReadFull(resp.Body, b)
				require.NoError(t, err)
				assert.Equal(t, "begun;", string(b))
			}
			left := time.Now()
			tc.leave(cancel, resp)
			if !tc.streamed {
				assert.ErrorIs(t, recv(t, done, "Do's return").err, context.Canceled)
			}
			delay := recv(t, ended, "the handler's context to end").Sub(left)
			t.Logf("the handler's context ended %v after its caller left", delay.Round(time.Millisecond))
			if tc.streamed {
				_, err := resp.Body.Read(make([]byte, 1))
				assert.Error(t, err)
				assert.NotErrorIs(t, err, io.EOF, "no clean end: the body was cut short")
			}
		})
	}
}

// TestHTTPClientWithdrawsUnacknowledged: a request whose context ends
// while pushreq's reply is on its way was stored by the relay all the
// same, and its handler runs: Do returns at once, and once the reply names
// the request's rid, it is withdrawn.
func TestHTTPClientWithdrawsUnacknowledged(t *testing.T) {
	t.Parallel()
	net := testNet(t)
	entered := make(chan struct{}, 1)
	ended := make(chan struct{}, 1)
	serve(t, relayURL, net, testKey, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- struct{}{}
		<-r.Context().Done()
		ended <- struct{}{}
	}), client.WithLease(time.Minute))
	f := newFront(t)
	s := login(t, f.URL, net)
	release := f.holdReplies(pathPushReq)
	t.Cleanup(release)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://c2cvia/slow", nil)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() {
		resp, err := s.HTTPClient().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	recv(t, entered, "the handler, while pushreq's reply is held")
	cancel()
	assert.ErrorIs(t, recv(t, done, "Do's return"), context.Canceled)
	release()
	recv(t, ended, "the handler's context to end")
	f.awaitCalls(t, pathCancel, 1)
}

// TestServeStreamAborted: a handler that panics after its first part
// cannot answer 500 any more; its stream is aborted, and its callers see
// the body end early: through /via/ as a chunked body without its end,
// through the HTTPClient as io.ErrUnexpectedEOF.
func TestServeStreamAborted(t *testing.T) {
	t.Parallel()
	net := testNet(t)
	errs := newErrorLog()
	serve(t, relayURL, net, testKey, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "begun;")
		w.(http.Flusher).Flush()
		panic("mid-stream")
	}), errs.option(), client.WithLease(2*time.Second))

	resp, err := http.Get(relayURL + "/via/" + net + "/")
	require.NoError(t, err)
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode, "the head was sent")
	assert.Equal(t, "begun;", string(body))
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	assert.ErrorContains(t, errs.next(t), "mid-stream")

	s := login(t, relayURL, net)
	resp, err = s.HTTPClient().Get("http://c2cvia/")
	require.NoError(t, err)
	body, err = io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, "begun;", string(body))
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	assert.ErrorContains(t, errs.next(t), "mid-stream")
}

// TestServeWatchRestarts: one watch is open for the handlers that run;
// when another handler's request joins, the watch starts again with both,
// and each withdrawal ends only its own handler's context.
func TestServeWatchRestarts(t *testing.T) {
	t.Parallel()
	net := testNet(t)
	f := newFront(t)
	entered := make(chan string, 2) // the rids
	ended := make(chan string, 2)
	serve(t, f.URL, net, testKey, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entered <- r.Header.Get("C2cvia-Rid")
		<-r.Context().Done()
		ended <- r.Header.Get("C2cvia-Rid")
	}), client.WithLease(time.Minute))
	s := login(t, relayURL, net)
	start := func() context.CancelFunc {
		ctx, cancel := context.WithCancel(context.Background())
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://c2cvia/", nil)
		require.NoError(t, err)
		go func() {
			if resp, err := s.HTTPClient().Do(req); err == nil {
				resp.Body.Close()
			}
		}()
		t.Cleanup(cancel)
		return cancel
	}
	cancelA := start()
	a := recv(t, entered, "handler a")
	f.awaitOpen(t, pathWatch, 1)
	assert.Equal(t, []any{a}, f.body(t, pathWatch, 0)["rids"], "the watch holds a's request")

	cancelB := start()
	b := recv(t, entered, "handler b")
	f.awaitCalls(t, pathWatch, 2)
	f.awaitOpen(t, pathWatch, 1)
	assert.ElementsMatch(t, []any{a, b}, f.body(t, pathWatch, f.count(pathWatch)-1)["rids"], "started again with both")

	cancelB()
	assert.Equal(t, b, recv(t, ended, "handler b's context to end"))
	cancelA()
	assert.Equal(t, a, recv(t, ended, "handler a's context to end"))
}

// TestServeSmallMaxBody: a relay whose --max-body is under the part size
// refuses a part as too large (413); Serve posts it again in smaller parts,
// so an answer under 512 KiB but over the limit, and one over both, still
// arrive byte for byte.
func TestServeSmallMaxBody(t *testing.T) {
	t.Parallel()
	r := newRelayProcess(t, "--max-body", "64KiB")
	net := testNet(t)
	blob := make([]byte, 700<<10)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range blob {
		blob[i] = byte(rng.Uint32())
	}
	text := strings.Repeat("0123456789abcdef", 200<<10/16)
	mux := http.NewServeMux()
	mux.HandleFunc("GET /blob", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write(blob) })
	mux.HandleFunc("GET /text", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, text) })
	errs := newErrorLog()
	serve(t, r.url, net, testKey, mux, errs.option())
	for path, want := range map[string]string{"/blob": string(blob), "/text": text} {
		resp, err := http.Get(r.url + "/via/" + net + path)
		require.NoError(t, err)
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, resp.StatusCode, path)
		assert.Equal(t, len(want), len(body), path)
		assert.True(t, want == string(body), "%s: byte for byte", path)
	}
	errs.empty(t)
}
