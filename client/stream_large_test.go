// A large download through a stream, and the time to a streamed answer's
// first byte: the figures of docs/API.md's "Streamed answers".

package client_test

import (
	"bytes"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestServeLargeFile: a 200 MiB file that http.FileServer serves behind
// Serve reaches a /via/ caller byte for byte, though the relay's --max-body
// is 1 MiB: it goes out as a stream of parts. The relay runs as a process
// of its own, so that its peak RSS (Linux) is this transfer's alone; it
// stays far under the file's size, as the answer passes in bounded memory.
func TestServeLargeFile(t *testing.T) {
	if testing.Short() {
		t.Skip("a 200 MiB transfer; skipped with -short")
	}
	t.Parallel()
	const size = 200 << 20
	dir := t.TempDir()
	file, err := os.Create(filepath.Join(dir, "big.bin"))
	require.NoError(t, err)
	want := sha256.New()
	_, err = io.CopyN(io.MultiWriter(file, want), rand.NewChaCha8([32]byte{1}), size)
	require.NoError(t, err)
	require.NoError(t, file.Close())

	r := newRelayProcess(t)
	net := testNet(t)
	serve(t, r.url, net, testKey, http.FileServer(http.Dir(dir)))
	before, _ := peakRSS(r.cmd.Process.Pid)

	start := time.Now()
	resp, err := http.Get(r.url + "/via/" + net + "/big.bin")
	require.NoError(t, err)
	defer resp.Body.Close()
	require.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, int64(size), resp.ContentLength, "the length http.FileServer declared")
	got := sha256.New()
	n, err := io.Copy(got, resp.Body)
	require.NoError(t, err)
	elapsed := time.Since(start)
	assert.Equal(t, int64(size), n)
	assert.True(t, bytes.Equal(want.Sum(nil), got.Sum(nil)), "sha256 differs")

	peak, ok := peakRSS(r.cmd.Process.Pid)
	t.Logf("%d MiB through /via/ in %v: %.0f MiB/s; the relay's peak RSS %d MiB before, %d MiB after",
		size>>20, elapsed.Round(time.Millisecond), float64(size>>20)/elapsed.Seconds(), before>>20, peak>>20)
	if ok && !raceEnabled { // the race detector's shadow memory has its own size
		assert.Less(t, peak, int64(size/2), "the relay's peak RSS: the answer should pass in bounded memory")
	}
}

// peakRSS is the peak resident set size (VmHWM) of the process pid in
// bytes, where /proc tells (Linux).
func peakRSS(pid int) (int64, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, false
	}
	for line := range bytes.Lines(b) {
		if v, ok := bytes.CutPrefix(line, []byte("VmHWM:")); ok {
			kb, err := strconv.ParseInt(string(bytes.TrimSpace(bytes.TrimSuffix(bytes.TrimSpace(v), []byte("kB")))), 10, 64)
			return kb << 10, err == nil
		}
	}
	return 0, false
}

// BenchmarkFirstByte: the time from a GET to the first byte of a streamed
// answer (one server-sent event, flushed) through Serve and /via/, and from
// the same handler served directly (httptest), for comparison. It reports
// the median; run it with -benchtime=100x for the median of 100.
func BenchmarkFirstByte(b *testing.B) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		_, _ = io.WriteString(w, "data: one\n\n")
		w.(http.Flusher).Flush()
	})
	direct := httptest.NewServer(h)
	defer direct.Close()
	net := testNet(b)
	serve(b, relayURL, net, testKey, h)
	for _, tc := range []struct{ name, url string }{
		{"via", relayURL + "/via/" + net + "/events"},
		{"direct", direct.URL + "/events"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var times []time.Duration
			one := make([]byte, 1)
			for b.Loop() {
				start := time.Now()
				resp, err := http.Get(tc.url)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(resp.Body, one); err != nil {
					b.Fatal(err)
				}
				times = append(times, time.Since(start))
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			slices.Sort(times)
			b.ReportMetric(float64(times[len(times)/2].Microseconds())/1000, "ms-first-byte-median")
		})
	}
}
