// A net's claim over its life: `c2cvia net list|release|rekey` on the
// store of a running relay, a SimServer's own release, and claims that
// lapse after --claim-ttl.

package main

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const otherKey = "other-key-0123456789"

// TestNetCommands: an operator lists the claimed nets, releases one (its
// pending request expires rather than reach the next claimant, who can
// then claim it) and re-keys one, while the relay serves the store; the
// relay follows at its janitor's next run.
func TestNetCommands(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	ctx := context.Background()
	t0 := realNowMS() // the CLI reads the real clock
	moveClockTo(r, t0)
	r.pullReqs("owned", testKey, nil)
	r.pullReqs("kept", testKey, nil)
	tok, _ := r.login("owned")
	rid := r.push(tok, map[string]any{"simEndpoint": "/pending"})
	flushStoreWrites(t, r)

	out, err := runCLI(t, nil, "net", "list", "--db", r.DBPath, "--json")
	require.NoError(t, err)
	var list struct{ Nets []netClaim }
	require.NoError(t, json.Unmarshal([]byte(out), &list), out)
	require.Len(t, list.Nets, 2)
	assert.Equal(t, "kept", list.Nets[0].Net)
	at := formatMS(t0.UnixMilli())
	assert.Equal(t, netClaim{Net: "owned", ClaimedAt: at, LastPollAt: at, Pending: 1}, list.Nets[1])
	out, err = runCLI(t, nil, "net", "list", "--db", r.DBPath)
	require.NoError(t, err)
	assert.Regexp(t, `(?m)^owned\s+`+regexpQuote(at)+`\s+`+regexpQuote(at)+`\s+1$`, out)

	out, err = runCLI(t, nil, "net", "release", "owned", "--db", r.DBPath)
	require.NoError(t, err)
	assert.Equal(t, "released owned; 1 pending requests expired\n", out)
	_, err = runCLI(t, nil, "net", "release", "owned", "--db", r.DBPath)
	assert.EqualError(t, err, "net owned is not claimed in "+r.DBPath)

	moveClockTo(r, realNowMS().Add(time.Millisecond)) // past the release, on the relay's clock
	require.NoError(t, r.store.syncCounts(ctx))       // the janitor's run: it sees another process wrote
	assert.Empty(t, r.pullReqs("owned", otherKey, nil), "another key claims the net, and gets none of the old requests")
	assert.Equal(t, statusExpired, ridStatus(t, r, tok, rid))
	rep, _ := r.pullReqsReply("owned", testKey, nil)
	assert.Equal(t, http.StatusForbidden, rep.Status, "the old key is refused")

	const newKey = "brand-new-key-0123456789"
	rekey := func(net, stdin string) (string, error) {
		cmd := exec.Command(os.Args[0], "net", "rekey", net, "--db", r.DBPath)
		cmd.Env = append(os.Environ(), "C2CVIA_TEST_AS_RELAY=1")
		cmd.Stdin = strings.NewReader(stdin)
		b, err := cmd.CombinedOutput()
		return string(b), err
	}
	out, err = rekey("kept", "short\n")
	assert.Error(t, err)
	assert.Contains(t, out, "must be at least 16 characters")
	out, err = rekey("kept", newKey+"\n")
	require.NoError(t, err, out)
	assert.Equal(t, "new key for kept; a running relay takes it at its next janitor run (--janitor-every), and until then the old key still works\n", out)
	out, err = rekey("nobody", newKey+"\n")
	assert.Error(t, err)
	assert.Contains(t, out, "net nobody is not claimed")
	require.NoError(t, r.store.syncCounts(ctx))
	rep, _ = r.pullReqsReply("kept", testKey, nil)
	assert.Equal(t, http.StatusForbidden, rep.Status, "the old key is refused")
	assert.Equal(t, "wrong_key", rep.errorCode())
	r.pullReqs("kept", newKey, nil)
}

// TestServerRelease: a SimServer gives up its net with its key; then
// another key may claim it.
func TestServerRelease(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t)
	r.pullReqs("mine", testKey, nil)
	release := func(key string) reply {
		return r.postJSON("/api/v1/server/release", key, map[string]any{"net": "mine"})
	}
	rep := release(otherKey)
	assert.Equal(t, http.StatusForbidden, rep.Status, string(rep.Body))
	assert.Equal(t, "wrong_key", rep.errorCode())
	rep = release(testKey)
	assert.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	assert.JSONEq(t, `{"released":true,"expired":0}`, string(rep.Body))
	rep = release(testKey)
	assert.Equal(t, http.StatusNotFound, rep.Status, string(rep.Body))
	assert.Equal(t, "not_claimed", rep.errorCode())
	assert.Zero(t, r.count("nets"), "a refused release claims nothing")
	r.pullReqs("mine", otherKey, nil)
}

// TestClaimLapse: a net whose SimServer has not polled for --claim-ttl
// loses its claim, unless a request is pending for it; 0 keeps claims.
func TestClaimLapse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r := newTestRelay(t, func(c *config) { c.ClaimTTL, c.ReqTTL = time.Hour, 3*time.Hour })
	r.pullReqs("idle", testKey, nil)
	r.pullReqs("busy", testKey, nil)
	tok, _ := r.login("busy")
	r.push(tok, map[string]any{"simEndpoint": "/waiting"})

	r.advance(time.Hour - time.Millisecond)
	rep, err := r.store.purge(ctx, purgeOptions{})
	require.NoError(t, err)
	assert.Empty(t, rep.Released)
	r.advance(time.Millisecond)
	rep, err = r.store.purge(ctx, purgeOptions{DryRun: true})
	require.NoError(t, err)
	assert.Equal(t, []string{"idle"}, rep.Released)
	assert.Equal(t, 2, r.count("nets"), "a dry run releases nothing")
	rep, err = r.store.purge(ctx, purgeOptions{})
	require.NoError(t, err)
	assert.Equal(t, []string{"idle"}, rep.Released, "busy has a request pending")
	r.pullReqs("idle", otherKey, nil) // free to claim again

	// The CLI's purge applies the relay's --claim-ttl, recorded in the store.
	out, err := runCLI(t, nil, "purge", "--db", r.DBPath, "--json")
	require.NoError(t, err)
	assert.Contains(t, out, `"claim_ttl": "1h0m0s"`)

	never := newTestRelay(t, func(c *config) { c.ClaimTTL = 0 })
	never.pullReqs("forever", testKey, nil)
	never.advance(10 * 365 * 24 * time.Hour)
	rep, err = never.store.purge(ctx, purgeOptions{})
	require.NoError(t, err)
	assert.Empty(t, rep.Released)
	assert.Equal(t, 1, never.count("nets"))
}
