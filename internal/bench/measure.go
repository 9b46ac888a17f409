// How the bench measures: clients looping over an operation for a warm-up
// and a window, the latencies of what ended inside it, the progress bars,
// and this process's memory.

package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/schollz/progressbar/v3"
)

// opFunc is one operation of one client: an exchange, a poll, ...
type opFunc func(ctx context.Context) error

// errDrained ends a client that has nothing left to do (an empty backlog).
var errDrained = errors.New("nothing left to do")

// loadStats is what one measurement gave: the latencies of the operations
// that ended inside the window, sorted, and the window.
type loadStats struct {
	lat    []time.Duration
	window time.Duration
}

// perSec is operations per second over the window; 0 for no window.
func (s loadStats) perSec() float64 {
	if s.window <= 0 {
		return 0
	}
	return float64(len(s.lat)) / s.window.Seconds()
}

// pct is the p-th percentile in milliseconds (nearest rank); 0 with no
// latencies.
func (s loadStats) pct(p float64) float64 {
	if len(s.lat) == 0 {
		return 0
	}
	i := int(math.Ceil(p/100*float64(len(s.lat)))) - 1
	return float64(s.lat[max(i, 0)]) / float64(time.Millisecond)
}

// measure runs clients goroutines, each calling its op in a loop, for a
// warm-up (a tenth of --duration, at most 1 s) and then --duration; only
// operations that end after the warm-up count. An op error other than the
// end of the time stops the measurement and is returned; so is ctx's
// cause when ctx ends first (a SimServer worker that failed, say).
func (b *bench) measure(ctx context.Context, label string, clients int, newOp func(i int) opFunc) (loadStats, error) {
	warmup := min(b.opts.Duration/10, time.Second)
	total := warmup + b.opts.Duration
	runtime.GC() // not the previous phase's garbage
	failCtx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	runCtx, stop := context.WithTimeout(failCtx, total)
	defer stop()
	start := time.Now()
	from, until := start.Add(warmup), start.Add(total)

	type sample struct {
		end time.Time
		lat time.Duration
	}
	samples := make([][]sample, clients)
	drained := make([]time.Time, clients)
	var wg sync.WaitGroup
	for i := range clients {
		op := newOp(i)
		wg.Go(func() {
			for runCtx.Err() == nil {
				t0 := time.Now()
				err := op(runCtx)
				end := time.Now()
				switch {
				case runCtx.Err() != nil:
					return // the time is up, or another client failed
				case errors.Is(err, errDrained):
					drained[i] = end
					return
				case err != nil:
					fail(err)
					return
				}
				samples[i] = append(samples[i], sample{end, end.Sub(t0)})
			}
		})
	}
	b.showTime(label, total, &wg)
	if err := context.Cause(failCtx); err != nil {
		return loadStats{}, err
	}
	// If every client ran dry before the time was up, the window ends with
	// the last of them; if that was inside the warm-up, everything counts.
	if dry := slices.MaxFunc(drained, time.Time.Compare); !slices.ContainsFunc(drained, time.Time.IsZero) && dry.Before(until) {
		until = dry
		if !until.After(from) {
			from = start
		}
	}
	var stats loadStats
	for _, list := range samples {
		for _, s := range list {
			if !s.end.Before(from) && !s.end.After(until) {
				stats.lat = append(stats.lat, s.lat)
			}
		}
	}
	slices.Sort(stats.lat)
	stats.window = until.Sub(from)
	if len(stats.lat) == 0 {
		return stats, fmt.Errorf("%s: no operation finished within %s", label, total)
	}
	return stats, nil
}

// showTime shows a bar of elapsed time until wg is done.
func (b *bench) showTime(label string, total time.Duration, wg *sync.WaitGroup) {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	bar := b.bar(label, total.Milliseconds())
	start := time.Now()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-done:
			_ = bar.Finish()
			return
		case <-tick.C:
			_ = bar.Set64(min(time.Since(start), total).Milliseconds())
		}
	}
}

// bar is a progress bar on stderr, invisible unless progress is on.
func (b *bench) bar(label string, total int64) *progressbar.ProgressBar {
	return progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(b.stderr),
		progressbar.OptionSetVisibility(b.progress),
		progressbar.OptionSetDescription(fmt.Sprintf("%-28s", label)),
		progressbar.OptionSetWidth(30),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionClearOnFinish(),
	)
}

// parallel runs fn(i) for i in [0, n) on up to conc goroutines, with a
// progress bar; the first error stops it.
func (b *bench) parallel(ctx context.Context, label string, n, conc int, fn func(ctx context.Context, i int) error) error {
	ctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	bar := b.bar(label, int64(n))
	defer bar.Finish()
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(conc, n) {
		wg.Go(func() {
			for i := range next {
				if err := fn(ctx, i); err != nil {
					fail(err)
				}
				_ = bar.Add(1)
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	return context.Cause(ctx)
}

// memSample is the process's memory after a full collection: resident set
// (VmRSS of /proc/self/status, 0 where there is none) and the Go heap and
// stacks in use, in bytes. The in-process relay's memory is this
// process's: nothing else reads it.
type memSample struct {
	rss  int64
	heap int64
}

func readMem() memSample {
	debug.FreeOSMemory() // a full collection, and free pages go back to the OS
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m := memSample{heap: int64(ms.HeapInuse + ms.StackInuse)}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return m
	}
	for line := range strings.Lines(string(status)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			m.rss = kb << 10
		}
	}
	return m
}
