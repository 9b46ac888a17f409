// Limits and quotas: the flags and their checks. The per-net quotas
// (--max-queue, --max-peers) are counted by the store, in counts.go.

package main

import (
	"errors"

	"github.com/spf13/pflag"
)

// addOpsFlags are serve's flags for the metrics and the limits.
func addOpsFlags(fs *pflag.FlagSet, c *config) {
	fs.BoolVar(&c.Metrics, "metrics", true, "serve Prometheus metrics at GET /metrics")
	fs.IntVar(&c.MaxQueue, "max-queue", 10_000, "queued requests per net; a pushreq over it is 429 queue_full (0: no limit)")
	fs.IntVar(&c.MaxPeers, "max-peers", 10_000, "logins per net; a login over it is 429 net_full (0: no limit)")
}

// checkOps refuses limits that make no sense.
func (c config) checkOps() error {
	if c.MaxQueue < 0 || c.MaxPeers < 0 {
		return errors.New("--max-queue and --max-peers must be 0 (no limit) or more")
	}
	return nil
}
