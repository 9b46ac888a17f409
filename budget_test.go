// The storage budget: a write that would take a net past --max-net-store or
// the store past --max-store is 507 with Retry-After and writes nothing,
// whoever sends it (a SimClient, the gateway, a peer); net_usage stays
// exact through answers, messages and purges.

package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func assertFull(t *testing.T, rep reply, code string) {
	t.Helper()
	assertErrorShape(t, rep, http.StatusInsufficientStorage, code)
	assert.Equal(t, "60", rep.Header.Get("Retry-After"))
}

// TestNetStorageBudget: three SimClients and the gateway fill one net to
// its budget; then every write to it that stores payload is refused before
// it writes, other nets are not, its SimServer may still answer, and once
// the janitor removes what expired, the net takes writes again.
func TestNetStorageBudget(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.MaxNetStore = 100 << 10 })
	body := strings.Repeat("b", 30<<10)
	var toks []string
	for range 3 {
		tok, _ := r.login("alpha")
		toks = append(toks, tok)
	}
	var rids []string
	for _, tok := range toks {
		rids = append(rids, r.push(tok, map[string]any{"simEndpoint": "/x", "simBody": body}))
	}
	before := storeRows(t, r)
	assertFull(t, r.postJSON("/api/v1/client/pushreq", toks[0], map[string]any{"sim_req": map[string]any{"simEndpoint": "/x", "simBody": body}}), "net_store_full")
	req, err := http.NewRequest(http.MethodPost, r.URL+"/via/alpha/upload", strings.NewReader(body))
	require.NoError(t, err)
	req.Header.Set("Prefer", "respond-async")
	assertFull(t, r.do(req), "net_store_full")
	assertFull(t, r.postJSON("/api/v1/peer/broadcast", toks[1], map[string]any{"data": body}), "net_store_full")
	assert.Equal(t, before, storeRows(t, r), "a refused write writes nothing")

	beta, _ := r.login("beta")
	r.push(beta, map[string]any{"simEndpoint": "/x", "simBody": body}) // a budget per net

	// The SimServer drains the net: its answers are not refused.
	for _, l := range r.pullReqs("alpha", testKey, map[string][]string{"max": {"10"}}) {
		require.Equal(t, http.StatusOK, r.answer("alpha", testKey, l.RID, map[string]any{"simBody": body}).Status)
	}
	r.advance(10*time.Minute + time.Second) // past --res-ttl
	purgeNow(t, r)
	r.push(toks[0], map[string]any{"simEndpoint": "/x", "simBody": body})
	assertUsageExact(t, r)
}

// TestStoreBudget: past --max-store every write that adds to the store is
// refused, logins too, whichever net it is for.
func TestStoreBudget(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.MaxStore = 1 << 20 })
	a, _ := r.login("alpha")
	b, _ := r.login("beta")
	toks := []string{a, b}
	// Fill it with large requests, then with small ones, to within less
	// than a login of the budget (an empty store is well under 1 MiB).
	for _, size := range []int{100 << 10, 900} {
		body := strings.Repeat("s", size)
		full := false
		for i := range 2000 {
			rep := r.postJSON("/api/v1/client/pushreq", toks[i%2], map[string]any{"sim_req": map[string]any{"simEndpoint": "/x", "simBody": body}})
			if rep.Status != http.StatusCreated {
				assertFull(t, rep, "store_full")
				full = true
				break
			}
		}
		require.True(t, full, "the store never reached its budget")
	}
	before := storeRows(t, r)
	assertFull(t, r.postJSON("/api/v1/client/pushreq", b, map[string]any{"sim_req": map[string]any{"simEndpoint": "/x", "simBody": strings.Repeat("s", 900)}}), "store_full")
	assertFull(t, r.postJSON("/api/v1/peer/broadcast", a, map[string]any{"data": strings.Repeat("d", 2<<10)}), "store_full")
	assertFull(t, r.get("/api/v1/client/login", map[string][]string{"net": {"gamma"}}), "store_full")
	assert.Equal(t, before, storeRows(t, r), "a refused write writes nothing")
}

// assertUsageExact checks net_usage against the payload in the store.
func assertUsageExact(t *testing.T, r *testRelay) {
	t.Helper()
	rows, err := r.store.r.Query(`SELECT u.net, u.bytes, coalesce((SELECT sum(octet_length(sim_req) + coalesce(octet_length(sim_res), 0))
		FROM requests q WHERE q.net = u.net), 0) + coalesce((SELECT sum(octet_length(data)) FROM messages m WHERE m.net = u.net), 0)
		+ coalesce((SELECT sum(octet_length(p.data)) FROM answer_parts p JOIN requests q ON q.seq = p.req_seq WHERE q.net = u.net), 0)
		FROM net_usage u`)
	require.NoError(t, err)
	defer rows.Close()
	n := 0
	for rows.Next() {
		var net string
		var got, want int64
		require.NoError(t, rows.Scan(&net, &got, &want))
		assert.Equal(t, want, got, "net %s", net)
		n++
	}
	require.NoError(t, rows.Err())
	assert.Positive(t, n)
}
