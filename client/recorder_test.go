// recorder: the http.RoundTripper of Serve's calls in the tests of
// answers that go with polls; it keeps what each call sent and got, and
// loses or changes a reply on demand.

package client_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/c2cvia/c2cvia/client"

	"github.com/stretchr/testify/require"
)

// recorder is the http.RoundTripper of Serve's calls to the relay: it
// keeps each call's path, body and reply, and can lose a reply (the relay
// has done the call; its caller gets a network error) or change what a
// call sends.
type recorder struct {
	tr *http.Transport

	mu      sync.Mutex
	calls   []recorded
	open    map[string]int
	changed chan struct{} // closed and replaced whenever a call starts or ends
	lose    func(path string, body []byte) bool
	rewrite func(path string, body []byte) []byte        // what the relay gets
	answer  func(path string, body, reply []byte) []byte // what the caller gets
}

// recorded is one call: its path, the body the relay got, the reply its
// caller got (or would have, if lost), and when it began and ended.
type recorded struct {
	path       string
	body       []byte
	status     int
	reply      []byte
	lost       bool
	began, end time.Time
}

func newRecorder(t testing.TB) *recorder {
	r := &recorder{tr: http.DefaultTransport.(*http.Transport).Clone(), open: map[string]int{}, changed: make(chan struct{})}
	t.Cleanup(r.tr.CloseIdleConnections)
	return r
}

// option has Serve call the relay through r.
func (r *recorder) option() client.Option {
	return client.WithHTTPClient(&http.Client{Transport: r})
}

var errLost = errors.New("the test lost this reply")

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	path := req.URL.Path
	var body []byte
	if req.Body != nil {
		var err error
		if body, err = io.ReadAll(req.Body); err != nil {
			return nil, err
		}
		req.Body.Close()
	}
	r.mu.Lock()
	if r.rewrite != nil {
		body = r.rewrite(path, body)
	}
	lose := r.lose != nil && r.lose(path, body)
	began := time.Now()
	r.open[path]++
	r.notify()
	r.mu.Unlock()

	out := req.Clone(req.Context())
	out.Body, out.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
	resp, err := r.tr.RoundTrip(out)
	var reply []byte
	if err == nil {
		reply, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.open[path]--
	r.notify()
	if err != nil {
		return nil, err
	}
	if r.answer != nil && !lose {
		reply = r.answer(path, body, reply)
		resp.ContentLength = int64(len(reply))
		resp.Header.Del("Content-Length")
	}
	r.calls = append(r.calls, recorded{path: path, body: body, status: resp.StatusCode, reply: reply, lost: lose,
		began: began, end: time.Now()})
	if lose {
		return nil, errLost
	}
	resp.Body = io.NopCloser(bytes.NewReader(reply))
	return resp, nil
}

// notify wakes every await; r.mu is held.
func (r *recorder) notify() {
	close(r.changed)
	r.changed = make(chan struct{})
}

// await waits until cond holds for the calls answered so far and the
// number open per path.
func (r *recorder) await(t testing.TB, what string, cond func(calls []recorded, open map[string]int) bool) {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok, changed := cond(r.calls, r.open), r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("waited %s for %s", within, what)
		}
	}
}

// count is the number of calls to path answered so far.
func (r *recorder) count(path string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.calls {
		if c.path == path {
			n++
		}
	}
	return n
}

// of is the calls to path answered so far.
func (r *recorder) of(path string) []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []recorded
	for _, c := range r.calls {
		if c.path == path {
			out = append(out, c)
		}
	}
	return out
}

// batches are the polls that carried answers, in order.
func (r *recorder) batches(t testing.TB) []batchCall {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []batchCall
	for _, c := range r.calls {
		if c.path != pathPullReqSmart {
			continue
		}
		var sent struct {
			Answers []struct {
				RID string `json:"rid"`
			} `json:"answers"`
		}
		require.NoError(t, json.Unmarshal(c.body, &sent), "%s", c.body)
		if len(sent.Answers) == 0 {
			continue
		}
		b := batchCall{status: c.status, lost: c.lost, outcomes: map[string]string{}}
		for _, a := range sent.Answers {
			b.rids = append(b.rids, a.RID)
		}
		var got struct {
			Answers []struct {
				RID    string `json:"rid"`
				Status string `json:"status"`
				Error  *struct {
					Code string `json:"code"`
				} `json:"error"`
			} `json:"answers"`
		}
		if c.status == http.StatusOK {
			require.NoError(t, json.Unmarshal(c.reply, &got), "%s", c.reply)
		}
		for _, o := range got.Answers {
			if o.Error != nil {
				b.outcomes[o.RID] = o.Error.Code
			} else {
				b.outcomes[o.RID] = o.Status
			}
		}
		out = append(out, b)
	}
	return out
}

// batchCall is one poll that carried answers: their rids, the reply's
// status and each answer's outcome ("answered" or an error code).
type batchCall struct {
	rids     []string
	status   int
	lost     bool
	outcomes map[string]string
}

// carriesAnswers reports whether a call's body holds answers.
func carriesAnswers(body []byte) bool { return bytes.Contains(body, []byte(`"answers":[`)) }
