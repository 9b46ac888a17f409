// The status rule: its SQL and its Go agree on every kind of row, the
// moment a status changes by itself is the moment the rule changes it, and
// no other file writes the rule again.

package main

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// statusGrid is every kind of row the rule meets around now, with
// --max-attempts 5: each stored status, attempts below, at and past the
// limit, a TTL passed, due now or ahead, and no lease or one that ran out,
// runs out now, or ends before, at or after the TTL; withdrawn by its
// caller or not.
func statusGrid(now int64) []requestTimes {
	var grid []requestTimes
	for _, stored := range []string{statusQueued, statusDelivered, statusAnswered, statusExpired, statusFailed} {
		for _, attempt := range []int{0, 1, 4, 5, 6} {
			for _, exp := range []int64{now - 1000, now, now + 1000} {
				for _, lease := range []int64{0, now - 500, now, now + 500, exp, exp + 100} {
					for _, cancelled := range []bool{false, true} {
						grid = append(grid, requestTimes{stored: stored, attempt: attempt, expiresAt: exp, leaseExp: lease, cancelled: cancelled})
					}
				}
			}
		}
	}
	return grid
}

// sqlStatus evaluates statusSQL on one row with SQLite.
func sqlStatus(t *testing.T, db *sql.DB, r requestTimes, now int64, maxAttempts int) string {
	t.Helper()
	var lease any
	if r.leaseExp != 0 {
		lease = r.leaseExp
	}
	var cancelledAt any
	if r.cancelled {
		cancelledAt = now - 100
	}
	var got string
	err := db.QueryRowContext(context.Background(), `SELECT `+statusSQL("?1", "?2")+` FROM
		(SELECT ?3 AS status, ?4 AS attempt, ?5 AS expires_at, ?6 AS lease_expires_at, ?7 AS cancelled_at)`,
		now, maxAttempts, r.stored, r.attempt, r.expiresAt, lease, cancelledAt).Scan(&got)
	require.NoError(t, err)
	return got
}

func TestStatusRule(t *testing.T) {
	t.Parallel()
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "rule.db"))
	require.NoError(t, err)
	defer db.Close()
	const now, maxAttempts = int64(1_000_000), 5
	seen := map[string]int{}
	for _, r := range statusGrid(now) {
		name := fmt.Sprintf("%+v", r)
		status, changesAt := statusAt(r, now, maxAttempts)
		seen[status]++
		assert.Equal(t, sqlStatus(t, db, r, now, maxAttempts), status, "SQL and Go disagree on %s", name)
		if changesAt == 0 {
			later, _ := statusAt(r, now+1e9, maxAttempts)
			assert.Equal(t, status, later, "%s: no change is due, yet it changes", name)
			continue
		}
		require.Greater(t, changesAt, now, name)
		before, _ := statusAt(r, changesAt-1, maxAttempts)
		after, _ := statusAt(r, changesAt, maxAttempts)
		assert.Equal(t, status, before, "%s: changed before changesAt", name)
		assert.NotEqual(t, status, after, "%s: did not change at changesAt", name)
		assert.Equal(t, after, sqlStatus(t, db, r, changesAt, maxAttempts), "%s at changesAt", name)
	}
	for _, s := range []string{statusQueued, statusDelivered, statusAnswered, statusExpired, statusFailed, statusCancelled} {
		assert.Positive(t, seen[s], "the grid reaches %s", s)
	}
}

// TestStatusRuleInOnePlace: no file but status.go spells out when a request
// fails or expires; every other query takes statusSQL.
func TestStatusRuleInOnePlace(t *testing.T) {
	t.Parallel()
	// How many deliveries a request has had decides failed; a lease that
	// ends before the TTL decides whether its end is the last one.
	rule := regexp.MustCompile(`\battempt\s*(>=|<)|\.attempt\s*(>=|<)|lease_expires_at\s*<\s*expires_at|leaseExp\s*<\s*\w*\.?expiresAt`)
	files, err := filepath.Glob("*.go")
	require.NoError(t, err)
	for _, f := range files {
		if f == "status.go" || strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		require.NoError(t, err)
		for i, line := range strings.Split(string(src), "\n") {
			assert.False(t, rule.MatchString(line), "%s:%d writes the status rule again: %s", f, i+1, strings.TrimSpace(line))
		}
	}
}
