// Tests of `c2cvia inspect`, run in-process through run() against the
// store of a relay that is still serving it, and the clock helpers that the
// purge tests share.
//
// inspect and purge use the real clock, the relay a fake one. The tests that
// go through the CLI first move the relay's clock to the real time, minus
// whatever age each request should have, so both agree on what has expired.

package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// moveClockTo sets the relay's fake clock to at, forwards or backwards.
func moveClockTo(r *testRelay, at time.Time) {
	r.clock.Advance(at.Sub(r.clock.Now()))
}

// realNowMS is the real time at the store's resolution (milliseconds).
func realNowMS() time.Time {
	return time.Now().UTC().Truncate(time.Millisecond)
}

// flushStoreWrites returns once every write the relay queued so far (also
// the fire-and-forget ones: last poll, pulled mark) is committed: the writer
// applies writes in order.
func flushStoreWrites(t *testing.T, r *testRelay) {
	t.Helper()
	require.NoError(t, r.store.write(context.Background(), func(context.Context, *sql.Tx) error { return nil }))
	// PostgreSQL's writers commit at once: the earlier writes may still be
	// on their way.
	waitFor(t, 10*time.Second, func() bool { return r.store.queued.Load() == 0 }, "the store's writes to commit")
}

// ridStatus is what check tells tok about rid, or "gone" for a 404.
func ridStatus(t *testing.T, r *testRelay, tok, rid string) string {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, r.URL+"/api/v1/client/check?"+url.Values{"token": {tok}, "rid": {rid}}.Encode(), nil)
	require.NoError(t, err)
	rep := doRequest(t, req)
	if rep.Status == http.StatusNotFound {
		require.Equal(t, "not_found", rep.errorCode(), string(rep.Body))
		return "gone"
	}
	require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	return rep.str("status")
}

// leaseOne pulls one request of net and requires it to be rid.
func leaseOne(t *testing.T, r *testRelay, net, rid string, extra url.Values) leased {
	t.Helper()
	got := r.pullReqs(net, testKey, extra)
	require.Len(t, got, 1)
	require.Equal(t, rid, got[0].RID)
	return got[0]
}

// inspectNet is one net of `inspect --json`. Claimed is a pointer to tell a
// missing field from false.
type inspectNet struct {
	Net            string         `json:"net"`
	Requests       map[string]int `json:"requests"`
	OldestQueuedAt string         `json:"oldest_queued_at"`
	Claimed        *bool          `json:"claimed"`
	LastPollAt     string         `json:"last_poll_at"`
	Tokens         *int           `json:"tokens"`
}

func TestInspectSummary(t *testing.T) {
	t.Parallel()
	// A one-hour TTL, so the requests made in the last hour are still
	// pending to the real clock that inspect reads.
	r := newTestRelay(t, func(c *config) { c.ReqTTL = time.Hour })
	now := realNowMS()
	ago := func(d time.Duration) time.Time { return now.Add(-d) }

	moveClockTo(r, ago(25*time.Hour))
	r.login("alpha") // its token ran out an hour ago: not counted

	moveClockTo(r, ago(3*time.Hour))
	tok, _ := r.login("alpha")
	expired := r.push(tok, map[string]any{"simEndpoint": "/expired"}) // TTL over 2 h ago

	moveClockTo(r, ago(90*time.Minute))
	failed := r.push(tok, map[string]any{"simEndpoint": "/failed"})
	for i := 1; i <= 5; i++ { // --max-attempts 5 leases of 1 s, none answered
		got := leaseOne(t, r, "alpha", failed, url.Values{"lease": {"1"}})
		require.Equal(t, i, got.Attempt)
		r.clock.Advance(2 * time.Second)
	}
	answered := r.push(tok, map[string]any{"simEndpoint": "/answered"})
	leaseOne(t, r, "alpha", answered, nil)
	require.Equal(t, http.StatusOK, r.answer("alpha", testKey, answered, map[string]any{"simBody": "ok"}).Status)

	moveClockTo(r, ago(20*time.Minute)) // the SimServer's last poll
	delivered := r.push(tok, map[string]any{"simEndpoint": "/delivered"})
	leaseOne(t, r, "alpha", delivered, nil)

	moveClockTo(r, ago(10*time.Minute))
	queued1 := r.push(tok, map[string]any{"simEndpoint": "/queued/1"})
	moveClockTo(r, ago(8*time.Minute))
	queued2 := r.push(tok, map[string]any{"simEndpoint": "/queued/2"})
	betaTok, _ := r.login("beta") // beta has no SimServer
	queued3 := r.push(betaTok, map[string]any{"simEndpoint": "/queued/3"})
	// gamma's SimServer claims it by answering, without ever polling.
	gammaTok, _ := r.login("gamma")
	gammaRID := r.push(gammaTok, map[string]any{"simEndpoint": "/gamma"})
	require.Equal(t, http.StatusOK, r.answer("gamma", testKey, gammaRID, map[string]any{"simBody": "ok"}).Status)
	flushStoreWrites(t, r)

	// The relay itself agrees on each status.
	for _, c := range []struct{ tok, rid, want string }{
		{tok, expired, statusExpired}, {tok, failed, statusFailed}, {tok, answered, statusAnswered},
		{tok, delivered, statusDelivered}, {tok, queued1, statusQueued}, {tok, queued2, statusQueued},
		{betaTok, queued3, statusQueued}, {gammaTok, gammaRID, statusAnswered},
	} {
		require.Equal(t, c.want, ridStatus(t, r, c.tok, c.rid), c.rid)
	}

	t.Run("json", func(t *testing.T) {
		out, err := runCLI(t, nil, "inspect", "--db", r.DBPath, "--json")
		require.NoError(t, err)
		var got struct {
			Nets []inspectNet `json:"nets"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &got), out)
		require.Len(t, got.Nets, 3, out)

		alpha, beta, gamma := got.Nets[0], got.Nets[1], got.Nets[2]
		assert.Equal(t, "alpha", alpha.Net)
		assert.Equal(t, map[string]int{"queued": 2, "delivered": 1, "answered": 1, "expired": 1, "failed": 1}, alpha.Requests)
		assert.Equal(t, formatMS(ago(10*time.Minute).UnixMilli()), alpha.OldestQueuedAt)
		if assert.NotNil(t, alpha.Claimed) {
			assert.True(t, *alpha.Claimed)
		}
		assert.Equal(t, formatMS(ago(20*time.Minute).UnixMilli()), alpha.LastPollAt)
		if assert.NotNil(t, alpha.Tokens) {
			assert.Equal(t, 1, *alpha.Tokens, "the expired login is not counted")
		}

		assert.Equal(t, "beta", beta.Net)
		assert.Equal(t, map[string]int{"queued": 1}, beta.Requests)
		assert.Equal(t, formatMS(ago(8*time.Minute).UnixMilli()), beta.OldestQueuedAt)
		if assert.NotNil(t, beta.Claimed) {
			assert.False(t, *beta.Claimed)
		}
		assert.Empty(t, beta.LastPollAt, "no SimServer ever polled beta")
		if assert.NotNil(t, beta.Tokens) {
			assert.Equal(t, 1, *beta.Tokens)
		}

		assert.Equal(t, "gamma", gamma.Net)
		assert.Equal(t, map[string]int{"answered": 1}, gamma.Requests)
		assert.Empty(t, gamma.OldestQueuedAt, "nothing queued")
		if assert.NotNil(t, gamma.Claimed) {
			assert.True(t, *gamma.Claimed)
		}
		assert.Empty(t, gamma.LastPollAt, "claimed by pushres, never polled")
	})

	t.Run("table", func(t *testing.T) {
		// The store named by $C2CVIA_DB instead of --db.
		out, err := runCLI(t, map[string]string{"C2CVIA_DB": r.DBPath}, "inspect")
		require.NoError(t, err)
		lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
		require.Len(t, lines, 4, out)
		assert.Regexp(t, `^NET\s+QUEUED\s+DELIVERED\s+ANSWERED\s+EXPIRED\s+FAILED\s+OLDEST QUEUED\s+SERVER LAST POLLED\s+TOKENS\s+MESSAGES\s*$`, lines[0])
		assert.Regexp(t, `^alpha\s+2\s+1\s+1\s+1\s+1\s+10m\d+s ago\s+20m\d+s ago\s+1\s+0\s*$`, lines[1])
		assert.Regexp(t, `^beta\s+1\s+0\s+0\s+0\s+0\s+8m\d+s ago\s+never \(unclaimed\)\s+1\s+0\s*$`, lines[2])
		assert.Regexp(t, `^gamma\s+0\s+0\s+1\s+0\s+0\s+-\s+-\s+1\s+0\s*$`, lines[3])
	})
}

func TestInspectEmptyStore(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	out, err := runCLI(t, nil, "inspect", "--db", r.DBPath)
	require.NoError(t, err)
	assert.Equal(t, "no nets yet\n", out)

	out, err = runCLI(t, nil, "inspect", "--db", r.DBPath, "--json")
	require.NoError(t, err)
	assert.JSONEq(t, `{"nets": []}`, out)
}

func TestInspectNet(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	moveClockTo(r, realNowMS()) // so the default 5 min TTL has not run out for inspect
	tokA, peerA := r.login("alpha")
	tokB, peerB := r.login("alpha")
	betaTok, _ := r.login("beta")

	first := r.push(tokA, map[string]any{"simEndpoint": "/items/7", "simMethod": "GET"})
	r.clock.Advance(time.Second)
	second := r.push(tokB, map[string]any{"simEndpoint": "/orders"})
	r.clock.Advance(time.Second)
	third := r.push(tokA, map[string]any{"simEndpoint": "/items/7", "simMethod": "DELETE"})
	r.push(betaTok, map[string]any{"simEndpoint": "/beta"}) // another net: not listed

	got := r.pullReqs("alpha", testKey, url.Values{"max": {"2"}})
	require.Len(t, got, 2)
	require.Equal(t, http.StatusOK, r.answer("alpha", testKey, first, map[string]any{"simStatus": 204}).Status)

	type row struct {
		RID      string `json:"rid"`
		Net      string `json:"net"`
		Status   string `json:"status"`
		Attempt  int    `json:"attempt"`
		From     string `json:"from"`
		Method   string `json:"method"`
		Endpoint string `json:"endpoint"`
	}
	want := []row{ // newest first
		{third, "alpha", statusQueued, 0, peerA, "DELETE", "/items/7"},
		{second, "alpha", statusDelivered, 1, peerB, "POST", "/orders"},
		{first, "alpha", statusAnswered, 1, peerA, "GET", "/items/7"},
	}

	t.Run("json", func(t *testing.T) {
		out, err := runCLI(t, nil, "inspect", "--db", r.DBPath, "--json", "alpha")
		require.NoError(t, err)
		var list struct {
			Net      string `json:"net"`
			Requests []struct {
				row
				CreatedAt string `json:"created_at"`
			} `json:"requests"`
		}
		require.NoError(t, json.Unmarshal([]byte(out), &list), out)
		assert.Equal(t, "alpha", list.Net)
		require.Len(t, list.Requests, len(want), out)
		for i, w := range want {
			assert.Equal(t, w, list.Requests[i].row)
			_, err := time.Parse(time.RFC3339, list.Requests[i].CreatedAt)
			assert.NoError(t, err, "created_at %q", list.Requests[i].CreatedAt)
		}

		out, err = runCLI(t, nil, "inspect", "--db", r.DBPath, "--json", "--limit", "1", "alpha")
		require.NoError(t, err)
		require.NoError(t, json.Unmarshal([]byte(out), &list), out)
		require.Len(t, list.Requests, 1, "--limit 1 keeps the newest")
		assert.Equal(t, third, list.Requests[0].RID)
	})

	t.Run("table", func(t *testing.T) {
		out, err := runCLI(t, nil, "inspect", "--db", r.DBPath, "alpha")
		require.NoError(t, err)
		lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
		require.Len(t, lines, 1+len(want), out)
		assert.Regexp(t, `^RID\s+STATUS\s+ATTEMPT\s+FROM\s+METHOD\s+ENDPOINT\s+CREATED\s*$`, lines[0])
		for i, w := range want {
			f := strings.Fields(lines[i+1])
			require.Len(t, f, 7, lines[i+1])
			assert.Equal(t, []string{w.RID, w.Status, strconv.Itoa(w.Attempt), w.From, w.Method, w.Endpoint}, f[:6])
		}
	})

	t.Run("unknown net", func(t *testing.T) {
		out, err := runCLI(t, nil, "inspect", "--db", r.DBPath, "zeta")
		require.NoError(t, err)
		assert.Equal(t, "no requests in net zeta\n", out)
		out, err = runCLI(t, nil, "inspect", "--db", r.DBPath, "--json", "zeta")
		require.NoError(t, err)
		assert.JSONEq(t, `{"net": "zeta", "requests": []}`, out)
	})
}

func TestInspectRID(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	moveClockTo(r, realNowMS()) // so the pending request is still queued for inspect
	tok, peer := r.login("alpha")

	// Every field set, with values whose JSON meaning must survive: a
	// 20-digit integer, a decimal, unicode, HTML characters, nesting.
	const simReq = `{"simEndpoint": "/items/7", "simMethod": "PUT",
		"simHeaders": {"X-One": "1", "X-List": ["a", "b"]},
		"simBody": {"big": 12345678901234567890, "dec": 1.50, "s": "ü \u00e9 <b>&</b>", "nested": [1, {"x": null}, true]},
		"simQueryParams": {"q": "x y", "tags": ["a", "b"]},
		"simRouteParams": {"id": "7"}}`
	const simRes = `{"simStatus": 201, "simHeaders": {"Content-Type": "text/plain; charset=utf-8"}, "simBody": "done ✓ 12345678901234567890"}`

	rep := badCall{method: http.MethodPost, path: "/api/v1/client/pushreq", contentType: "application/json", bearer: tok,
		body: `{"sim_req": ` + simReq + `}`}.send(t, r.URL)
	require.Equal(t, http.StatusCreated, rep.Status, string(rep.Body))
	rid := rep.str("rid")

	leaseOne(t, r, "alpha", rid, nil)
	rep = badCall{method: http.MethodPost, path: "/api/v1/server/pushres", contentType: "application/json", bearer: testKey,
		body: `{"net": "alpha", "rid": "` + rid + `", "sim_res": ` + simRes + `}`}.send(t, r.URL)
	require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))

	pending := r.push(tok, map[string]any{"simEndpoint": "/pending"})

	type detail struct {
		RID      string          `json:"rid"`
		Net      string          `json:"net"`
		Status   string          `json:"status"`
		From     string          `json:"from"`
		Method   string          `json:"method"`
		Endpoint string          `json:"endpoint"`
		SimReq   json.RawMessage `json:"sim_req"`
		SimRes   json.RawMessage `json:"sim_res"`
	}
	// inspectJSON is `inspect --rid id --json`, decoded.
	inspectJSON := func(t *testing.T, id string) detail {
		t.Helper()
		out, err := runCLI(t, nil, "inspect", "--db", r.DBPath, "--rid", id, "--json")
		require.NoError(t, err)
		var d detail
		require.NoError(t, json.Unmarshal([]byte(out), &d), out)
		return d
	}

	t.Run("answered json", func(t *testing.T) {
		d := inspectJSON(t, rid)
		assert.Equal(t, rid, d.RID)
		assert.Equal(t, "alpha", d.Net)
		assert.Equal(t, statusAnswered, d.Status)
		assert.Equal(t, peer, d.From)
		assert.Equal(t, "PUT", d.Method)
		assert.Equal(t, "/items/7", d.Endpoint)
		assert.JSONEq(t, simReq, string(d.SimReq))
		assert.JSONEq(t, simRes, string(d.SimRes))
		// JSONEq compares numbers as float64: check the digits themselves.
		assert.Contains(t, string(d.SimReq), "12345678901234567890")
	})

	t.Run("pending json", func(t *testing.T) {
		d := inspectJSON(t, pending)
		assert.Equal(t, statusQueued, d.Status)
		// What was sent, with the defaults filled in.
		assert.JSONEq(t, `{"simEndpoint": "/pending", "simMethod": "POST", "simHeaders": {},
			"simBody": null, "simQueryParams": {}, "simRouteParams": {}}`, string(d.SimReq))
		assert.Empty(t, d.SimRes, "no sim_res before an answer")
	})

	t.Run("table", func(t *testing.T) {
		out, err := runCLI(t, nil, "inspect", "--db", r.DBPath, "--rid", rid)
		require.NoError(t, err)
		assert.Regexp(t, `(?m)^rid:\s+`+rid+`$`, out)
		assert.Regexp(t, `(?m)^status:\s+answered$`, out)
		assert.Regexp(t, `(?m)^from:\s+`+peer+`$`, out)
		assert.Contains(t, out, "sim_req:\n")
		assert.Contains(t, out, `"simEndpoint": "/items/7"`)
		assert.Contains(t, out, "sim_res:\n")
		assert.Contains(t, out, `"simStatus": 201`)

		out, err = runCLI(t, nil, "inspect", "--db", r.DBPath, "--rid", pending)
		require.NoError(t, err)
		assert.Contains(t, out, "sim_res: none yet")
	})

	t.Run("unknown rid", func(t *testing.T) {
		for _, args := range [][]string{{}, {"--json"}} {
			out, err := runCLI(t, nil, append([]string{"inspect", "--db", r.DBPath, "--rid", "no-such-rid"}, args...)...)
			require.Error(t, err, args)
			assert.Contains(t, err.Error(), "no request no-such-rid")
			assert.Contains(t, err.Error(), "a request is kept for the res-ttl after it ends", "it says why a request may be gone")
			if isPostgresURL(r.DBPath) {
				assert.NotContains(t, err.Error(), "held in the relay's memory", "on PostgreSQL nothing is held")
			} else {
				assert.Contains(t, err.Error(), "a synchronous /via/ request is held in the relay's memory while its caller waits")
			}
			assert.Empty(t, out)
		}
	})
}

// TestInspectMissingStore: inspect reads a store; it never makes one.
func TestInspectMissingStore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "missing.db")
	for _, args := range [][]string{
		{"inspect", "--db", path},
		{"inspect", "--db", path, "--json"},
		{"inspect", "--db", path, "alpha"},
		{"inspect", "--db", path, "--rid", "abc"},
	} {
		_, err := runCLI(t, nil, args...)
		if assert.Error(t, err, args) {
			assert.Contains(t, err.Error(), "no store at "+path)
		}
		assertDirEmpty(t, dir)
	}

	// A file that is not a c2cvia store is refused and left as it is.
	other := filepath.Join(t.TempDir(), "notes.txt")
	require.NoError(t, os.WriteFile(other, []byte("not a database"), 0o600))
	_, err := runCLI(t, nil, "inspect", "--db", other)
	assert.Error(t, err)
	b, err := os.ReadFile(other)
	require.NoError(t, err)
	assert.Equal(t, "not a database", string(b))
}
