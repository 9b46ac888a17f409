// Helpers of the tests against the relay: a net of its own per test, Serve
// in the background, what the error hook reports, and the relay's raw API
// for playing the other side of an exchange as any HTTP client would.

package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/c2cvia/c2cvia/client"

	"github.com/stretchr/testify/require"
)

// within bounds every wait for something that should happen at once; a
// test that hangs fails after it instead of at go test's timeout.
const within = 20 * time.Second

// testKey is the key of every net the tests serve.
const testKey = "client-test-key-0123456789"

var (
	netSeq    atomic.Int64
	netUnsafe = regexp.MustCompile(`[^A-Za-z0-9._-]+`)
)

// testNet is a net of the shared relay that only this test uses: its name,
// plus a number so that -count=N runs start from a fresh net.
func testNet(t testing.TB) string {
	name := netUnsafe.ReplaceAllString(t.Name(), "-")
	if len(name) > 50 {
		name = name[len(name)-50:]
	}
	return name + "-" + strconv.FormatInt(netSeq.Add(1), 10)
}

// serving is client.Serve running in the background.
type serving struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when Serve has returned
	err    error         // what Serve returned, once done is closed
}

// serve runs client.Serve in the background until stop, or the test's end.
func serve(t testing.TB, relay, net, key string, h http.Handler, opts ...client.Option) *serving {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &serving{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(s.done)
		s.err = client.Serve(ctx, relay, net, key, h, opts...)
	}()
	t.Cleanup(func() { _ = s.stop() })
	return s
}

// stop cancels Serve's context and returns what Serve returned.
func (s *serving) stop() error {
	s.cancel()
	select {
	case <-s.done:
		return s.err
	case <-time.After(within):
		return errors.New("Serve did not return within 20s of its context ending")
	}
}

// ended waits for Serve to return by itself and returns its error.
func (s *serving) ended(t testing.TB) error {
	t.Helper()
	select {
	case <-s.done:
		return s.err
	case <-time.After(within):
		t.Fatal("Serve did not return")
		return nil
	}
}

// running reports whether Serve has not returned yet.
func (s *serving) running() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// login logs in to net, requiring success.
func login(t testing.TB, relay, net string, opts ...client.Option) *client.Session {
	t.Helper()
	s, err := client.Login(context.Background(), relay, net, opts...)
	require.NoError(t, err)
	return s
}

// errorLog collects what Serve or a Session hands to WithErrorLog.
type errorLog chan error

func newErrorLog() errorLog { return make(chan error, 100) }

func (l errorLog) option() client.Option {
	return client.WithErrorLog(func(err error) {
		select {
		case l <- err:
		default:
		}
	})
}

// next waits for the next error reported.
func (l errorLog) next(t testing.TB) error {
	t.Helper()
	select {
	case err := <-l:
		return err
	case <-time.After(within):
		t.Fatal("no error was reported")
		return nil
	}
}

// empty requires that nothing has been reported (so far).
func (l errorLog) empty(t testing.TB) {
	t.Helper()
	select {
	case err := <-l:
		t.Errorf("unexpected error reported: %v", err)
	default:
	}
}

// relayError requires err to be (or wrap) a *client.Error and returns it.
func relayError(t testing.TB, err error) *client.Error {
	t.Helper()
	var e *client.Error
	require.ErrorAs(t, err, &e)
	return e
}

// call POSTs body as JSON to the relay's path, as curl or any other SDK
// would, and returns the status and the reply's fields.
func call(t testing.TB, path, bearer string, body any) (int, map[string]json.RawMessage) {
	t.Helper()
	b, err := json.Marshal(body)
	require.NoError(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), within+10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, relayURL+path, bytes.NewReader(b))
	require.NoError(t, err)
	req.Header.Set("Content-Type", "application/json")
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	var reply map[string]json.RawMessage
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&reply))
	return resp.StatusCode, reply
}

// str is a JSON string field of a reply.
func str(t testing.TB, raw json.RawMessage) string {
	t.Helper()
	var s string
	require.NoError(t, json.Unmarshal(raw, &s), "%s", raw)
	return s
}

// rawLogin logs in to net with the raw API.
func rawLogin(t testing.TB, net string) (token, peerID string) {
	t.Helper()
	status, reply := call(t, "/api/v1/client/login", "", map[string]string{"net": net})
	require.Equal(t, http.StatusOK, status, "%s", reply["error"])
	return str(t, reply["token"]), str(t, reply["peer_id"])
}

// rawPush stores simReq (JSON text) as token's request and returns its rid.
func rawPush(t testing.TB, token, simReq string) string {
	t.Helper()
	status, reply := call(t, "/api/v1/client/pushreq", token, map[string]any{"sim_req": json.RawMessage(simReq)})
	require.Equal(t, http.StatusCreated, status, "%s", reply["error"])
	return str(t, reply["rid"])
}

// leasedRequest is one request as pullreqsmart hands it to a SimServer.
type leasedRequest struct {
	RID     string          `json:"rid"`
	SimReq  json.RawMessage `json:"sim_req"`
	From    string          `json:"from"`
	Attempt int             `json:"attempt"`
}

// rawPull takes the next request of net as its SimServer (key testKey),
// waiting for it up to 10 s.
func rawPull(t testing.TB, net string) leasedRequest {
	t.Helper()
	status, reply := call(t, "/api/v1/server/pullreqsmart", testKey, map[string]any{"net": net, "wait": 10})
	require.Equal(t, http.StatusOK, status, "%s", reply["error"])
	var reqs []leasedRequest
	require.NoError(t, json.Unmarshal(reply["requests"], &reqs))
	require.Len(t, reqs, 1, "one request within 10s")
	return reqs[0]
}

// rawAnswer posts simRes (JSON text) as the answer to rid.
func rawAnswer(t testing.TB, net, rid, simRes string) {
	t.Helper()
	status, reply := call(t, "/api/v1/server/pushres", testKey, map[string]any{"net": net, "rid": rid, "sim_res": json.RawMessage(simRes)})
	require.Equal(t, http.StatusOK, status, "%s", reply["error"])
}

// rawResult waits up to 10 s for the answer to rid and returns its sim_res.
func rawResult(t testing.TB, token, rid string) json.RawMessage {
	t.Helper()
	status, reply := call(t, "/api/v1/client/pullsmart", token, map[string]any{"rid": rid, "wait": 10})
	require.Equal(t, http.StatusOK, status, "answered within 10s: %s %s", reply["status"], reply["error"])
	return reply["sim_res"]
}

// ridState is what check says about rid: its status and delivery count.
func ridState(t testing.TB, token, rid string) (status string, attempt int) {
	t.Helper()
	code, reply := call(t, "/api/v1/client/check", token, map[string]string{"rid": rid})
	require.Equal(t, http.StatusOK, code, "%s", reply["error"])
	require.NoError(t, json.Unmarshal(reply["attempt"], &attempt))
	return str(t, reply["status"]), attempt
}
