// The cases both SDKs run alike (testdata/sdk-cases.json at the module's
// root): each by its kind, against the live relay. A kind without a runner
// here fails the test, so that a case added to the table is not skipped.

package client_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/c2cvia/c2cvia/client"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// sdkCase is one case of the table; its other fields depend on its kind.
type sdkCase struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
	raw  json.RawMessage
}

// caseRunners run the cases of each kind; c.raw is the whole case.
var caseRunners = map[string]func(t *testing.T, c sdkCase){
	"defaults":        runDefaultsCase,
	"backoff":         runBackoffCase,
	"retries":         runRetriesCase,
	"messages_resume": runMessagesResumeCase,
	"peers":           runPeersCase,
	"relogin":         runReloginCase,
	"numbers":         runNumbersCase,
}

func TestSDKCases(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile(filepath.Join(moduleRoot, "testdata", "sdk-cases.json"))
	require.NoError(t, err)
	var table struct {
		Cases []json.RawMessage `json:"cases"`
	}
	require.NoError(t, json.Unmarshal(data, &table))
	require.NotEmpty(t, table.Cases)
	for _, raw := range table.Cases {
		c := sdkCase{raw: raw}
		require.NoError(t, json.Unmarshal(raw, &c))
		t.Run(c.Name, func(t *testing.T) {
			run, ok := caseRunners[c.Kind]
			if !ok {
				t.Fatalf("no runner for the kind %q", c.Kind)
			}
			t.Parallel()
			run(t, c)
		})
	}
}

// decode reads the case's own fields into v.
func (c sdkCase) decode(t *testing.T, v any) {
	t.Helper()
	require.NoError(t, json.Unmarshal(c.raw, v))
}

func ms(n int64) time.Duration { return time.Duration(n) * time.Millisecond }

func runDefaultsCase(t *testing.T, c sdkCase) {
	var tc struct {
		Expect struct {
			Retries          int   `json:"retries"`
			BackoffInitialMS int64 `json:"backoff_initial_ms"`
			BackoffMaxMS     int64 `json:"backoff_max_ms"`
			Concurrency      int   `json:"concurrency"`
			LeaseMS          int64 `json:"lease_ms"`
			WaitMS           int64 `json:"wait_ms"`
			LingerMS         int64 `json:"linger_ms"`
		} `json:"expect"`
	}
	c.decode(t, &tc)
	e := tc.Expect
	assert.Equal(t, e.Retries, client.DefaultRetries)
	assert.Equal(t, ms(e.BackoffInitialMS), client.DefaultBackoffInitial)
	assert.Equal(t, ms(e.BackoffMaxMS), client.DefaultBackoffMax)
	assert.Equal(t, e.Concurrency, client.DefaultConcurrency)
	assert.Equal(t, ms(e.LeaseMS), client.DefaultLease)
	assert.Equal(t, ms(e.WaitMS), client.DefaultWait)
	assert.Equal(t, ms(e.LingerMS), client.DefaultLinger)
}

func runBackoffCase(t *testing.T, c sdkCase) {
	var tc struct {
		Steps []struct {
			Retry       int   `json:"retry"`
			RetryAfterS int64 `json:"retry_after_s"`
			MinMS       int64 `json:"min_ms"`
			MaxMS       int64 `json:"max_ms"`
		} `json:"steps"`
	}
	c.decode(t, &tc)
	require.NotEmpty(t, tc.Steps)
	for _, st := range tc.Steps {
		lo, hi := ms(st.MinMS), ms(st.MaxMS)
		retryAfter := time.Duration(st.RetryAfterS) * time.Second
		var least, most time.Duration = hi, lo
		for range 500 { // drawn at random: many draws cover the range
			d := client.Backoff(st.Retry, client.DefaultBackoffInitial, client.DefaultBackoffMax, retryAfter)
			require.True(t, d >= lo && d <= hi, "retry %d (Retry-After %v): %v is not within [%v, %v]", st.Retry, retryAfter, d, lo, hi)
			least, most = min(least, d), max(most, d)
		}
		if lo < hi { // jitter: the draws spread over the range
			assert.Less(t, least, lo+(hi-lo)/4, "retry %d: no draw in the lowest quarter", st.Retry)
			assert.Greater(t, most, hi-(hi-lo)/4, "retry %d: no draw in the highest quarter", st.Retry)
		}
	}
}

func runRetriesCase(t *testing.T, c sdkCase) {
	var tc struct {
		Retries     int `json:"retries"`
		Refusals    int `json:"refusals"`
		ExpectCalls int `json:"expect_calls"`
	}
	c.decode(t, &tc)
	f := newFront(t)
	s := login(t, f.URL, testNet(t), client.WithRetries(tc.Retries), client.WithBackoff(time.Millisecond, 10*time.Millisecond))
	f.failNext(pathPeerSend, tc.Refusals, relayReply(http.StatusServiceUnavailable, "server_busy"))
	_, err := s.Send(context.Background(), s.PeerID(), "hello")
	assert.ErrorIs(t, err, client.ErrServerBusy)
	assert.Equal(t, tc.ExpectCalls, f.count(pathPeerSend))
}

func runMessagesResumeCase(t *testing.T, c sdkCase) {
	var tc struct {
		Send       []string `json:"send"`
		FirstRead  int      `json:"first_read"`
		ExpectNext []string `json:"expect_next"`
	}
	c.decode(t, &tc)
	net := testNet(t)
	ada, bob := login(t, relayURL, net), login(t, relayURL, net)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for _, text := range tc.Send {
		_, err := ada.Send(ctx, bob.PeerID(), text)
		require.NoError(t, err)
	}
	assert.Equal(t, tc.Send[:tc.FirstRead], readTexts(t, ctx, bob, tc.FirstRead))
	assert.Equal(t, tc.ExpectNext, readTexts(t, ctx, bob, len(tc.ExpectNext)), "a new iterator goes on after the last message read")
}

// readTexts reads n messages, each a JSON string, with a new Messages.
func readTexts(t *testing.T, ctx context.Context, s *client.Session, n int) []string {
	t.Helper()
	var got []string
	for m, err := range s.Messages(ctx) {
		require.NoError(t, err)
		var text string
		require.NoError(t, json.Unmarshal(m.Data, &text), "%s", m.Data)
		if got = append(got, text); len(got) == n {
			break
		}
	}
	require.Len(t, got, n, "the messages came before the deadline")
	return got
}

func runPeersCase(t *testing.T, c sdkCase) {
	var tc struct {
		Logins      int `json:"logins"`
		ExpectPeers int `json:"expect_peers"`
	}
	c.decode(t, &tc)
	net := testNet(t)
	var sessions []*client.Session
	ids := map[string]bool{}
	for range tc.Logins {
		s := login(t, relayURL, net)
		sessions = append(sessions, s)
		ids[s.PeerID()] = true
	}
	before := time.Now().Add(-time.Minute)
	peers, err := sessions[0].Peers(context.Background())
	require.NoError(t, err)
	require.Len(t, peers, tc.ExpectPeers)
	assert.Equal(t, sessions[0].PeerID(), peers[0].PeerID, "the session's own first")
	for _, p := range peers {
		assert.True(t, ids[p.PeerID], "%s is one of the net's logins", p.PeerID)
		assert.True(t, p.LastSeen.After(before), "%s was seen lately: %v", p.PeerID, p.LastSeen)
	}
}

// runReloginCase: the relay's clock, as far as tokens go, is the front's
// (expireTokens), which the case moves past the token's TTL; the relay
// itself runs with the same --token-ttl.
func runReloginCase(t *testing.T, c sdkCase) {
	var tc struct {
		TokenTTLMS   int64 `json:"token_ttl_ms"`
		AdvanceMS    int64 `json:"advance_ms"`
		ExpectLogins int   `json:"expect_logins"`
	}
	c.decode(t, &tc)
	r := newRelayProcess(t, "--token-ttl", ms(tc.TokenTTLMS).String())
	f := newFrontTo(t, r.url)
	f.expireTokens(ms(tc.TokenTTLMS))
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	s, err := client.Login(ctx, f.URL, testNet(t))
	require.NoError(t, err)
	first := s.Token()
	assert.WithinDuration(t, time.Now().Add(ms(tc.TokenTTLMS)), s.ExpiresAt(), 10*time.Second)

	f.advance(ms(tc.AdvanceMS))
	peers, err := s.Peers(ctx)
	require.NoError(t, err, "the call is made again after a new login")
	assert.Equal(t, tc.ExpectLogins, f.count(pathLogin))
	assert.NotEqual(t, first, s.Token())
	require.NotEmpty(t, peers)
	assert.Equal(t, s.PeerID(), peers[0].PeerID, "the new login's")
}

func runNumbersCase(t *testing.T, c sdkCase) {
	var tc struct {
		Values []string `json:"values"`
	}
	c.decode(t, &tc)
	net := testNet(t)
	ada, bob := login(t, relayURL, net), login(t, relayURL, net)
	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()
	for _, v := range tc.Values {
		_, err := ada.Send(ctx, bob.PeerID(), json.RawMessage(v))
		require.NoError(t, err, "%s", v)
	}
	i := 0
	for m, err := range bob.Messages(ctx) {
		require.NoError(t, err)
		assert.Equal(t, tc.Values[i], string(m.Data), "byte for byte")
		if i++; i == len(tc.Values) {
			break
		}
	}
	assert.Equal(t, len(tc.Values), i, "every value came back: %s", fmt.Sprint(tc.Values[i:]))
}
