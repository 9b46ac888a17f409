// What the bench reads from a relay's GET /metrics, in the Prometheus text
// format: the long polls open (the idle scenario's gauge) and the store's
// group commits and their writes (the exchange scenario's
// commits_per_exchange and writes_per_commit).

package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// The relay's metrics the bench reads (metrics.go in package main).
const (
	// metricPollsOpen is a gauge of long polls and event streams in
	// progress, one series per kind.
	metricPollsOpen = "c2cvia_long_polls_open"
	// metricCommitWrites is a histogram with one observation per group
	// commit, of the writes in it: its count is the commits, its sum the
	// writes.
	metricCommitWrites = "c2cvia_store_commit_writes"
)

// errNoMetrics: the relay serves no /metrics (serve --metrics=false), or
// not the series the bench reads.
var errNoMetrics = errors.New("the relay serves no metrics the bench reads")

// scrape is one reading of /metrics: the metric families by name.
type scrape map[string]*dto.MetricFamily

// scrapeMetrics reads GET /metrics from t. A 404 is errNoMetrics.
func scrapeMetrics(ctx context.Context, t *target) (scrape, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4") // the text format, whatever the server prefers
	resp, err := t.hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNotFound:
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil, errNoMetrics
	default:
		_, _ = io.Copy(io.Discard, resp.Body)
		return nil, fmt.Errorf("%s: GET /metrics: %d", t.name, resp.StatusCode)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics parses the Prometheus text format.
func parseMetrics(r io.Reader) (scrape, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, fmt.Errorf("/metrics: %w", err)
	}
	return fams, nil
}

// openPolls is the sum of c2cvia_long_polls_open over its kinds: the
// relay's long polls and streams in progress. ok is false when the family
// is missing or not a gauge.
func (s scrape) openPolls() (n int64, ok bool) {
	f := s[metricPollsOpen]
	if f == nil || f.GetType() != dto.MetricType_GAUGE {
		return 0, false
	}
	var sum float64
	for _, m := range f.GetMetric() {
		sum += m.GetGauge().GetValue()
	}
	return int64(sum), true
}

// commits are the store's group commits so far and the writes in them:
// the count and the sum of c2cvia_store_commit_writes. ok is false when
// the family is missing or not a histogram.
func (s scrape) commits() (c storeCounters, ok bool) {
	f := s[metricCommitWrites]
	if f == nil || f.GetType() != dto.MetricType_HISTOGRAM || len(f.GetMetric()) != 1 {
		return c, false
	}
	h := f.GetMetric()[0].GetHistogram()
	return storeCounters{commits: int64(h.GetSampleCount()), writes: int64(h.GetSampleSum())}, true
}

// storeCounters are a relay's group commits and the writes in them.
type storeCounters struct{ commits, writes int64 }

func (c storeCounters) minus(o storeCounters) storeCounters {
	return storeCounters{c.commits - o.commits, c.writes - o.writes}
}

// readCommits reads the relay's commit counters from its /metrics.
func readCommits(ctx context.Context, t *target) (storeCounters, error) {
	s, err := scrapeMetrics(ctx, t)
	if err != nil {
		return storeCounters{}, err
	}
	c, ok := s.commits()
	if !ok {
		return c, fmt.Errorf("%s: %w: no histogram %s", t.name, errNoMetrics, metricCommitWrites)
	}
	return c, nil
}

// readAllCommits is the sum of readCommits over several nodes' /metrics.
func readAllCommits(ctx context.Context, nodes []*target) (storeCounters, error) {
	var sum storeCounters
	for _, t := range nodes {
		c, err := readCommits(ctx, t)
		if err != nil {
			return sum, err
		}
		sum.commits += c.commits
		sum.writes += c.writes
	}
	return sum, nil
}

// gauge reads a number of long polls open.
type gauge func(ctx context.Context) (int64, error)

// pollGauge is the relay's long polls open, read through t from its
// /metrics at each call. It is errNoMetrics when the relay exports no
// c2cvia_long_polls_open.
func pollGauge(ctx context.Context, t *target) (gauge, error) {
	read := func(ctx context.Context) (int64, error) {
		s, err := scrapeMetrics(ctx, t)
		if err != nil {
			return 0, err
		}
		n, ok := s.openPolls()
		if !ok {
			return 0, fmt.Errorf("%s: %w: no gauge %s", t.name, errNoMetrics, metricPollsOpen)
		}
		return n, nil
	}
	if _, err := read(ctx); err != nil {
		return nil, err
	}
	return read, nil
}

// rise is g less what it reads now: the polls opened from now on, on a
// relay where others may hold long polls of their own.
func (g gauge) rise(ctx context.Context) (gauge, error) {
	base, err := g(ctx)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) (int64, error) {
		n, err := g(ctx)
		return n - base, err
	}, nil
}
