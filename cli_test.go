// Tests of `c2cvia inspect` and `c2cvia purge`, run in-process through run()
// against the store of a relay that is still serving it.
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

	req, err := http.NewRequest(http.MethodPost, r.URL+"/api/v1/client/pushreq",
		strings.NewReader(`{"sim_req": `+simReq+`}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+tok)
	rep := r.do(req)
	require.Equal(t, http.StatusCreated, rep.Status, string(rep.Body))
	rid := rep.str("rid")

	leaseOne(t, r, "alpha", rid, nil)
	req, err = http.NewRequest(http.MethodPost, r.URL+"/api/v1/server/pushres",
		strings.NewReader(`{"net": "alpha", "rid": "`+rid+`", "sim_res": `+simRes+`}`))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+testKey)
	rep = r.do(req)
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

	t.Run("answered json", func(t *testing.T) {
		out, err := runCLI(t, nil, "inspect", "--db", r.DBPath, "--rid", rid, "--json")
		require.NoError(t, err)
		var d detail
		require.NoError(t, json.Unmarshal([]byte(out), &d), out)
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
		out, err := runCLI(t, nil, "inspect", "--db", r.DBPath, "--rid", pending, "--json")
		require.NoError(t, err)
		var d detail
		require.NoError(t, json.Unmarshal([]byte(out), &d), out)
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

func TestPurgeMissingStore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "missing.db")
	for _, args := range [][]string{
		{"purge", "--db", path},
		{"purge", "--db", path, "--dry-run"},
		{"purge", "--db", path, "--all", "--json"},
	} {
		out, err := runCLI(t, nil, args...)
		if assert.Error(t, err, args) {
			assert.Contains(t, err.Error(), "no store at "+path)
		}
		assert.Empty(t, out)
		assertDirEmpty(t, dir)
	}
}

// TestPurgeRefusesOtherFiles: purge does not turn an empty or foreign file
// into a store.
func TestPurgeRefusesOtherFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for name, content := range map[string]string{"empty.db": "", "notes.txt": "not a database"} {
		path := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(path, []byte(content), 0o600))
		_, err := runCLI(t, nil, "purge", "--db", path)
		assert.Error(t, err, name)
		b, err := os.ReadFile(path)
		require.NoError(t, err)
		assert.Equal(t, content, string(b), name)
	}
}

func assertDirEmpty(t *testing.T, dir string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	assert.Empty(t, names, "files made in %s", dir)
}

// TestPurgeLifetimes drives the store's purge (the janitor's and the CLI's)
// with the relay's fake clock: each request goes exactly when its retention
// runs out, not a millisecond before, and stays readable until then.
func TestPurgeLifetimes(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.MaxAttempts = 2 })
	ctx := context.Background()
	t0 := r.clock.Now()
	const reqTTL, resTTL, tokenTTL = 5 * time.Minute, 10 * time.Minute, 24 * time.Hour

	tokA, _ := r.login("alpha")
	tokB, _ := r.login("beta")
	tokC, _ := r.login("gamma")

	answered := r.push(tokA, map[string]any{"simEndpoint": "/a"})
	leaseOne(t, r, "alpha", answered, nil)
	require.Equal(t, http.StatusOK, r.answer("alpha", testKey, answered, map[string]any{"simBody": "a"}).Status)

	queued := r.push(tokB, map[string]any{"simEndpoint": "/b"}) // never answered: expired at t0+5m

	failed := r.push(tokC, map[string]any{"simEndpoint": "/c"})
	leaseOne(t, r, "gamma", failed, url.Values{"lease": {"60"}})
	r.clock.Advance(61 * time.Second)
	leaseOne(t, r, "gamma", failed, url.Values{"lease": {"60"}}) // attempt 2 of 2
	leaseEnd := t0.Add(61*time.Second + 60*time.Second)

	purgeAt := func(at time.Time, o purgeOptions) purgeReport {
		t.Helper()
		moveClockTo(r, at)
		rep, err := r.store.purge(ctx, o)
		require.NoError(t, err)
		return rep
	}
	none := purgeReport{Requests: map[string]map[string]int{}}
	pull := func(tok, rid string) reply {
		return r.get("/api/v1/client/pullres", url.Values{"token": {tok}, "rid": {rid}})
	}

	// Before any retention ends nothing goes, though all three are done.
	assert.Equal(t, none, purgeAt(t0.Add(resTTL-time.Millisecond), purgeOptions{}))
	assert.Equal(t, 3, r.count("requests"))
	assert.Equal(t, statusAnswered, ridStatus(t, r, tokA, answered))
	assert.Equal(t, statusExpired, ridStatus(t, r, tokB, queued))
	assert.Equal(t, statusFailed, ridStatus(t, r, tokC, failed))
	assert.Equal(t, http.StatusOK, pull(tokA, answered).Status, "readable until its retention ends")

	// The answered response: a dry run counts it and keeps it.
	want := purgeReport{Requests: map[string]map[string]int{"alpha": {statusAnswered: 1}}}
	assert.Equal(t, want, purgeAt(t0.Add(resTTL), purgeOptions{DryRun: true}))
	assert.Equal(t, 3, r.count("requests"))
	assert.Equal(t, http.StatusOK, pull(tokA, answered).Status)
	assert.Equal(t, want, purgeAt(t0.Add(resTTL), purgeOptions{}))
	assert.Equal(t, 2, r.count("requests"))
	assert.Equal(t, "gone", ridStatus(t, r, tokA, answered))

	// The failed request: retention counts from the end of its last lease.
	assert.Equal(t, none, purgeAt(leaseEnd.Add(resTTL-time.Millisecond), purgeOptions{}))
	assert.Equal(t, statusFailed, ridStatus(t, r, tokC, failed))
	if rep := pull(tokC, failed); assert.Equal(t, http.StatusGone, rep.Status) {
		assert.Equal(t, "failed", rep.errorCode())
	}
	assert.Equal(t, purgeReport{Requests: map[string]map[string]int{"gamma": {statusFailed: 1}}},
		purgeAt(leaseEnd.Add(resTTL), purgeOptions{}))
	assert.Equal(t, "gone", ridStatus(t, r, tokC, failed))

	// The expired request: retention counts from the end of its TTL.
	assert.Equal(t, none, purgeAt(t0.Add(reqTTL+resTTL-time.Millisecond), purgeOptions{}))
	assert.Equal(t, statusExpired, ridStatus(t, r, tokB, queued))
	if rep := pull(tokB, queued); assert.Equal(t, http.StatusGone, rep.Status) {
		assert.Equal(t, "expired", rep.errorCode())
	}
	assert.Equal(t, purgeReport{Requests: map[string]map[string]int{"beta": {statusExpired: 1}}},
		purgeAt(t0.Add(reqTTL+resTTL), purgeOptions{}))
	assert.Equal(t, "gone", ridStatus(t, r, tokB, queued))
	assert.Zero(t, r.count("requests"))

	// Tokens go when they expire; the relay then no longer knows them.
	assert.Equal(t, none, purgeAt(t0.Add(tokenTTL-time.Millisecond), purgeOptions{}))
	assert.Equal(t, 3, r.count("tokens"))
	assert.Equal(t, purgeReport{Requests: map[string]map[string]int{}, Tokens: 3},
		purgeAt(t0.Add(tokenTTL), purgeOptions{}))
	assert.Zero(t, r.count("tokens"))
	rep := r.postJSON("/api/v1/client/pushreq", tokA, map[string]any{"simEndpoint": "/late"})
	assert.Equal(t, http.StatusUnauthorized, rep.Status)
	assert.Equal(t, "unknown_token", rep.errorCode())
}

// TestPurgeCLI runs `c2cvia purge` against the file of a running relay.
func TestPurgeCLI(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t) // --req-ttl 5m, --res-ttl 10m, --token-ttl 24h
	now := realNowMS()
	ago := func(d time.Duration) time.Time { return now.Add(-d) }

	moveClockTo(r, ago(25*time.Hour))
	r.login("alpha") // expired an hour ago
	r.login("beta")  // likewise

	moveClockTo(r, ago(3*time.Hour))
	tokA, _ := r.login("alpha")
	tokB, _ := r.login("beta")
	failed := r.push(tokA, map[string]any{"simEndpoint": "/failed"})
	for range 5 {
		leaseOne(t, r, "alpha", failed, url.Values{"lease": {"1"}})
		r.clock.Advance(2 * time.Second)
	}
	oldAnswered := r.push(tokA, map[string]any{"simEndpoint": "/old-answered"})
	leaseOne(t, r, "alpha", oldAnswered, nil)
	require.Equal(t, http.StatusOK, r.answer("alpha", testKey, oldAnswered, map[string]any{"simBody": 1}).Status)
	oldExpired := r.push(tokA, map[string]any{"simEndpoint": "/old-expired"})
	betaExpired := r.push(tokB, map[string]any{"simEndpoint": "/beta-expired"})

	moveClockTo(r, ago(12*time.Minute))
	recentExpired := r.push(tokA, map[string]any{"simEndpoint": "/recent-expired"}) // expired 7 min ago: kept 3 more

	moveClockTo(r, ago(time.Minute))
	recentAnswered := r.push(tokA, map[string]any{"simEndpoint": "/recent-answered"})
	leaseOne(t, r, "alpha", recentAnswered, nil)
	require.Equal(t, http.StatusOK, r.answer("alpha", testKey, recentAnswered, map[string]any{"simBody": 2}).Status)
	alphaQueued := r.push(tokA, map[string]any{"simEndpoint": "/alpha-queued"})
	betaQueued := r.push(tokB, map[string]any{"simEndpoint": "/beta-queued"})
	moveClockTo(r, now)
	flushStoreWrites(t, r)
	require.Equal(t, 8, r.count("requests"))
	require.Equal(t, 4, r.count("tokens"))

	purge := func(args ...string) string {
		t.Helper()
		out, err := runCLI(t, nil, append([]string{"purge", "--db", r.DBPath}, args...)...)
		require.NoError(t, err, args)
		return out
	}

	t.Run("dry run", func(t *testing.T) {
		before := storeRows(t, r)
		assert.Equal(t, "would remove 4 requests and 2 expired tokens\n"+
			"  alpha: 1 answered, 1 expired, 1 failed\n"+
			"  beta: 1 expired\n", purge("--dry-run"))
		assert.Equal(t, before, storeRows(t, r), "a dry run changes nothing")
		assert.Equal(t, 8, r.count("requests"))
		assert.Equal(t, 4, r.count("tokens"))

		// A longer --res-ttl keeps the old answers; expired tokens still go.
		assert.JSONEq(t, `{"dry_run": true, "requests": {}, "messages": {}, "tokens": 2}`, purge("--dry-run", "--json", "--res-ttl", "4h"))
		assert.Equal(t, before, storeRows(t, r))
	})

	t.Run("one net", func(t *testing.T) {
		assert.Equal(t, "removed 1 requests and 1 expired tokens\n  beta: 1 expired\n", purge("--net", "beta"))
		assert.Equal(t, 7, r.count("requests"))
		assert.Equal(t, 3, r.count("tokens"))
		assert.Equal(t, "gone", ridStatus(t, r, tokB, betaExpired))
		assert.Equal(t, statusExpired, ridStatus(t, r, tokA, oldExpired), "alpha is left alone")
		assert.Equal(t, statusQueued, ridStatus(t, r, tokB, betaQueued))
	})

	t.Run("expired", func(t *testing.T) {
		assert.JSONEq(t, `{"dry_run": false, "tokens": 1, "messages": {},
			"requests": {"alpha": {"answered": 1, "expired": 1, "failed": 1}}}`, purge("--json"))
		assert.Equal(t, 4, r.count("requests"))
		assert.Equal(t, 2, r.count("tokens"))
		for _, rid := range []string{oldAnswered, oldExpired, failed} {
			assert.Equal(t, "gone", ridStatus(t, r, tokA, rid))
		}
		// Kept: within retention, or still pending.
		assert.Equal(t, statusAnswered, ridStatus(t, r, tokA, recentAnswered))
		rep := r.get("/api/v1/client/pullres", url.Values{"token": {tokA}, "rid": {recentAnswered}})
		assert.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
		assert.Equal(t, statusExpired, ridStatus(t, r, tokA, recentExpired))
		assert.Equal(t, statusQueued, ridStatus(t, r, tokA, alphaQueued))
		assert.Equal(t, statusQueued, ridStatus(t, r, tokB, betaQueued))

		assert.Equal(t, "removed 0 requests and 0 expired tokens\n", purge(), "nothing more is due")
	})

	t.Run("all", func(t *testing.T) {
		assert.Equal(t, "removed 1 requests and 0 expired tokens\n  beta: 1 queued\n", purge("--all", "--net", "beta"))
		assert.Equal(t, "gone", ridStatus(t, r, tokB, betaQueued))
		assert.Equal(t, statusQueued, ridStatus(t, r, tokA, alphaQueued))

		assert.Equal(t, "removed 3 requests and 0 expired tokens\n  alpha: 1 queued, 1 answered, 1 expired\n", purge("--all"))
		assert.Zero(t, r.count("requests"))
		assert.Equal(t, 2, r.count("tokens"), "--all keeps valid logins")

		// The relay goes on serving from the purged file.
		r.push(tokA, map[string]any{"simEndpoint": "/after"})
	})

	t.Run("bad net", func(t *testing.T) {
		before := storeRows(t, r)
		_, err := runCLI(t, nil, "purge", "--db", r.DBPath, "--net", "a b")
		assert.Error(t, err)
		assert.Equal(t, before, storeRows(t, r))
	})
}

// storeRows renders every row of the store, to compare before and after.
func storeRows(t *testing.T, r *testRelay) string {
	t.Helper()
	flushStoreWrites(t, r)
	var b strings.Builder
	for _, q := range []string{
		`SELECT rid || ' ' || net || ' ' || status || ' ' || attempt || ' ' || coalesce(lease_expires_at, '-') || ' ' ||
			coalesce(done_at, '-') || ' ' || pulled || ' ' || expires_at || ' ' || coalesce(sim_res, '-') FROM requests ORDER BY seq`,
		`SELECT name || ' ' || hex(key_hash) || ' ' || coalesce(last_poll_at, '-') FROM nets ORDER BY name`,
		`SELECT peer_id || ' ' || net || ' ' || expires_at || ' ' || last_seen_at || ' ' || msg_floor FROM tokens ORDER BY peer_id`,
		`SELECT id || ' ' || net || ' ' || kind || ' ' || from_peer || ' ' || coalesce(to_peer, '-') || ' ' || coalesce(topic, '-') || ' ' ||
			data || ' ' || expires_at || ' ' || receivers FROM messages ORDER BY id`,
		`SELECT net || ' ' || topic || ' ' || peer_id || ' ' || from_id || ' ' || coalesce(until_id, '-') FROM subscriptions
			ORDER BY net, topic, peer_id, from_id`,
	} {
		rows, err := r.store.r.Query(q)
		require.NoError(t, err)
		for rows.Next() {
			var s string
			require.NoError(t, rows.Scan(&s))
			b.WriteString(s + "\n")
		}
		require.NoError(t, rows.Err())
		rows.Close()
		b.WriteString("--\n")
	}
	return b.String()
}

// TestInspectAndPurgeMessages: inspect counts the peer messages each net
// keeps, in its table and its JSON; purge removes the expired ones, and
// --all every one of its scope.
func TestInspectAndPurgeMessages(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) { c.MsgTTL = 10 * time.Minute })
	now := realNowMS()
	moveClockTo(r, now.Add(-15*time.Minute)) // expired 5 minutes ago
	a, b := r.peerLogin("alpha"), r.peerLogin("alpha")
	r.sendTo(a, b.id, "old")
	moveClockTo(r, now.Add(-time.Minute))
	r.sendTo(a, b.id, "kept")
	r.fanOut(b, "", "kept too")
	r.fanOut(b, "news", "kept, nobody subscribed")
	beta := r.peerLogin("beta")
	r.fanOut(beta, "", "alone")
	r.peerLogin("gamma") // a net with no message
	moveClockTo(r, now)
	flushStoreWrites(t, r)

	out, err := runCLI(t, nil, "inspect", "--db", r.DBPath, "--json")
	require.NoError(t, err)
	var got struct {
		Nets []struct {
			Net      string `json:"net"`
			Messages *int   `json:"messages"`
		} `json:"nets"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &got), out)
	counts := map[string]int{}
	for _, n := range got.Nets {
		require.NotNil(t, n.Messages, out)
		counts[n.Net] = *n.Messages
	}
	assert.Equal(t, map[string]int{"alpha": 3, "beta": 1, "gamma": 0}, counts, "the expired message is not counted")

	out, err = runCLI(t, nil, "inspect", "--db", r.DBPath)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	require.Len(t, lines, 4, out)
	assert.Regexp(t, `\sTOKENS\s+MESSAGES\s*$`, lines[0])
	assert.Regexp(t, `^alpha\s.*\s2\s+3\s*$`, lines[1])
	assert.Regexp(t, `^beta\s.*\s1\s+1\s*$`, lines[2])
	assert.Regexp(t, `^gamma\s.*\s1\s+0\s*$`, lines[3])

	purge := func(args ...string) string {
		t.Helper()
		out, err := runCLI(t, nil, append([]string{"purge", "--db", r.DBPath}, args...)...)
		require.NoError(t, err, args)
		return out
	}
	assert.Equal(t, "would remove 0 requests and 0 expired tokens\nwould remove 1 peer messages\n  alpha: 1\n", purge("--dry-run"))
	assert.Equal(t, 5, r.count("messages"))
	assert.JSONEq(t, `{"dry_run": false, "requests": {}, "messages": {"alpha": 1}, "tokens": 0}`, purge("--json"))
	assert.Equal(t, 4, r.count("messages"))
	assert.Equal(t, "removed 0 requests and 0 expired tokens\nremoved 1 peer messages\n  beta: 1\n", purge("--all", "--net", "beta"))
	assert.Equal(t, "removed 0 requests and 0 expired tokens\n", purge(), "nothing more is due")
	assert.Equal(t, 3, r.count("messages"))
	assert.Len(t, r.readAll(b), 1, "alpha's kept messages are still read")
}
