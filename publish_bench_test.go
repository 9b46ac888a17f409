// Benchmarks of what a publish and the janitor cost the single writer.

package main

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/stretchr/testify/require"
)

// BenchmarkPublishTopic: one publish, a write of its own, to a topic of 10
// and of 10,000 subscribers. The writer's time per publish should not
// depend on the topic's size.
func BenchmarkPublishTopic(b *testing.B) {
	for _, subs := range []int{10, 10_000} {
		b.Run(fmt.Sprintf("subs=%d", subs), func(b *testing.B) {
			ctx := context.Background()
			st, err := openStore(ctx, filepath.Join(b.TempDir(), "bench.db"), testStoreOptions(nil))
			require.NoError(b, err)
			defer st.Close()
			_, sender, err := st.createToken(ctx, "big", "")
			require.NoError(b, err)
			now := st.nowMS()
			require.NoError(b, st.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
				_, err := tx.ExecContext(ctx, `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
					INSERT INTO tokens (token_hash, peer_id, net, created_at, expires_at) SELECT randomblob(32), 'p' || i, 'big', ?2, ?3 FROM n`,
					subs, now, now+time.Hour.Milliseconds())
				if err == nil {
					_, err = tx.ExecContext(ctx, `INSERT INTO subscriptions (net, topic, peer_id, from_id) SELECT 'big', 't', peer_id, 0 FROM tokens WHERE net = 'big' AND peer_id <> ?`, sender.PeerID)
				}
				return err
			}))
			st.counts.stale.Store(true)
			require.NoError(b, st.syncCounts(ctx))
			b.ResetTimer()
			for b.Loop() {
				_, n, err := st.sendMessage(ctx, sender, message{Kind: kindMulticast, Topic: "t"}, []byte(`"hello"`), "")
				if err != nil || n != subs {
					b.Fatal(n, err)
				}
			}
		})
	}
}

// BenchmarkJanitorExpire: the janitor expiring 45,000 requests at once;
// max-write-ms is the longest single write it holds the writer for.
func BenchmarkJanitorExpire(b *testing.B) {
	const n = 45_000
	ctx := context.Background()
	for b.Loop() {
		b.StopTimer()
		clock := clockwork.NewFakeClock()
		opts := testStoreOptions(clock)
		st, err := openStore(ctx, filepath.Join(b.TempDir(), "bench.db"), opts)
		require.NoError(b, err)
		_, tok, err := st.createToken(ctx, "alpha", "")
		require.NoError(b, err)
		now := st.nowMS()
		require.NoError(b, st.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
				INSERT INTO requests (rid, net, token_hash, from_peer, status, sim_req, created_at, expires_at)
				SELECT lower(hex(randomblob(16))), 'alpha', ?, ?, 'queued', '{}', ?, ? FROM n`,
				n, tok.Hash, tok.PeerID, now, now+opts.ReqTTL.Milliseconds())
			return err
		}))
		clock.Advance(opts.ReqTTL)
		b.StartTimer()
		longest, last := time.Duration(0), time.Now()
		_, err = st.purgeBatches(ctx, janitorBatch, func(purgeReport) {
			longest = max(longest, time.Since(last))
			last = time.Now()
		})
		require.NoError(b, err)
		b.ReportMetric(float64(longest.Microseconds())/1000, "max-write-ms")
		b.StopTimer()
		require.NoError(b, st.Close())
		b.StartTimer()
	}
}
