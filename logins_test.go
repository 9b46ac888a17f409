// Login slots of a full net shared between client addresses: one address
// that keeps its logins busy cannot lock a net for every other.

package main

import (
	"context"
	"net/http"
	"net/netip"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestNetNotLockedByOneAddress: one address fills a net to --max-peers
// with logins it keeps in use (the attack that got every other login 429
// net_full for the tokens' 24 h). Another address still gets in, up to an
// equal share, each login taking the slot of the busy address's idlest;
// the busy address cannot take them back, and an address alone in a net
// may fill it (a NAT). An IPv6 address counts by its /64.
func TestNetNotLockedByOneAddress(t *testing.T) {
	t.Parallel()
	r := newTestRelay(t, func(c *config) {
		c.MaxPeers = 10
		c.TrustProxy = []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	})
	login := func(from string) reply {
		r.advance(time.Millisecond) // each login seen after the one before
		return r.getFrom(from, "/api/v1/client/login", url.Values{"net": {"alpha"}})
	}
	alive := func(tok string) bool {
		return r.get("/api/v1/peer/peers", url.Values{"token": {tok}}).Status == http.StatusOK
	}

	var busy []string
	for range 10 {
		rep := login("192.0.2.1")
		require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
		busy = append(busy, rep.str("token"))
	}
	assertLimited(t, login("192.0.2.1"), "net_full", "60")
	for _, tok := range busy {
		require.True(t, alive(tok), "every login of the busy address is in use")
	}

	// A second address: five logins, each taking the slot of the busy
	// address's idlest login, then no more (five and five).
	before := storeRows(t, r)
	var other []string
	for range 5 {
		rep := login("198.51.100.7")
		require.Equal(t, http.StatusOK, rep.Status, "a second address gets into a net one address filled: %s", rep.Body)
		other = append(other, rep.str("token"))
	}
	assert.NotEqual(t, before, storeRows(t, r))
	before = storeRows(t, r)
	assertLimited(t, login("198.51.100.7"), "net_full", "60")
	assertLimited(t, login("192.0.2.1"), "net_full", "60")
	assert.Equal(t, before, storeRows(t, r), "a refused login writes nothing")
	for i, tok := range busy {
		assert.Equal(t, i >= 5, alive(tok), "busy login %d: the oldest five gave their slots up", i)
	}
	for _, tok := range other {
		assert.True(t, alive(tok))
	}
	assert.Equal(t, map[string]int{"192.0.2.1": 5, "198.51.100.7": 5},
		countBy(t, r, `SELECT addr, count(*) FROM tokens WHERE net = 'alpha' GROUP BY addr`))
	assertCountsExact(t, r, "after the shares")

	// Two IPv6 addresses of one /64 are one address; a third one, in
	// another /64, gets in too.
	rep := login("2001:db8:1:2::1")
	require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	rep = login("2001:db8:1:2::ff")
	require.Equal(t, http.StatusOK, rep.Status, string(rep.Body))
	assert.Equal(t, 2, r.count(`tokens WHERE addr = '2001:db8:1:2::'`))
	require.Equal(t, http.StatusOK, login("2001:db8:1:3::1").Status)
	assert.Equal(t, 10, r.count(`tokens WHERE net = 'alpha'`))
	assert.Equal(t, 3.0, refusals(r, "peers"))
	assert.Equal(t, int64(8), r.store.loginsShared.Load())
}

// TestLoginAddressKept: the store keeps each login's address (schema step
// 8), so the shares hold across a restart; a login made before it has
// none and counts as one address of its own.
func TestLoginAddressKept(t *testing.T) {
	t.Parallel()
	path := t.TempDir() + "/relay.db"
	ctx := context.Background()
	st, err := openStore(ctx, path, testStoreOptions(nil, func(o *storeOptions) { o.MaxPeers = 3 }))
	require.NoError(t, err)
	for range 3 {
		_, _, err := st.createToken(ctx, "alpha", "192.0.2.1")
		require.NoError(t, err)
	}
	require.NoError(t, st.Close())

	st, err = openStore(ctx, path, testStoreOptions(nil, func(o *storeOptions) { o.MaxPeers = 3 }))
	require.NoError(t, err)
	defer st.Close()
	_, _, err = st.createToken(ctx, "alpha", "192.0.2.1")
	assert.ErrorIs(t, err, errNetFull)
	_, _, err = st.createToken(ctx, "alpha", "")
	require.NoError(t, err, "an unknown address is one of its own")
	var n int
	require.NoError(t, st.r.QueryRow(`SELECT count(*) FROM tokens WHERE addr = '192.0.2.1'`).Scan(&n))
	assert.Equal(t, 2, n)
}
