// Every prepared statement is answered through an index: no full scan of a
// table, so the hot paths stay O(log n) however many rows are queued.

package main

import (
	"context"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestQueryPlansUseIndexes(t *testing.T) {
	t.Parallel()
	st, err := openStore(context.Background(), filepath.Join(t.TempDir(), "plans.db"), testStoreOptions(nil))
	require.NoError(t, err)
	defer st.Close()
	fullScan := regexp.MustCompile(`^SCAN (requests|tokens|nets|messages|subscriptions)( |$)`)
	numbered := regexp.MustCompile(`\?(\d+)`)
	for _, s := range st.q.list(st.w, st.r) {
		n := strings.Count(s.sql, "?") // plain ? placeholders, or the highest ?N
		if all := numbered.FindAllStringSubmatch(s.sql, -1); len(all) > 0 {
			n = 0
			for _, m := range all {
				k, _ := strconv.Atoi(m[1])
				n = max(n, k)
			}
		}
		args := make([]any, n)
		for i := range args {
			args[i] = 1
		}
		rows, err := st.w.Query("EXPLAIN QUERY PLAN "+s.sql, args...)
		require.NoError(t, err, s.sql)
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			require.NoError(t, rows.Scan(&id, &parent, &unused, &detail))
			plan = append(plan, detail)
			assert.NotRegexp(t, fullScan, detail, "full scan in %s", s.sql)
		}
		require.NoError(t, rows.Close())
		if strings.Contains(s.sql, "status = 'queued'") && strings.Contains(s.sql, "ORDER BY seq") {
			assert.NotContains(t, strings.Join(plan, "\n"), "TEMP B-TREE", "the queue is read in index order: %s", s.sql)
		}
		if strings.Contains(s.sql, "UNION ALL") { // a peer's page of messages
			assert.Contains(t, strings.Join(plan, "\n"), "MERGE (UNION ALL)", "a page merges its sources: %s", s.sql)
			assert.NotContains(t, strings.Join(plan, "\n"), "TEMP B-TREE", "a page is read in index order, never sorted: %s", s.sql)
		}
	}
}
