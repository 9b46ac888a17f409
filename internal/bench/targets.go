// What the bench's load goes to and the calls it makes: the direct
// baseline that answers the relay's recorded replies, the HTTP client of
// the relay and of direct, and the wire calls.

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// directServer is the baseline: a plain net/http handler that reads the
// body and answers the reply the relay gave for the same method and path,
// bytes and headers, behind serve's front (Relays.Front). With hold, a
// pullsmart with a wait is held until its client goes away, like an idle
// long poll.
type directServer struct {
	url     string
	front   Server
	replies map[string]reply
	hold    bool
	held    atomic.Int64 // pullsmarts held now
	closing chan struct{}
}

func (b *bench) startDirect(replies map[string]reply, hold bool) (*directServer, error) {
	d := &directServer{replies: replies, hold: hold, closing: make(chan struct{})}
	front, err := b.relays.Front(directArgs, d, b.stderr)
	if err != nil {
		return nil, err
	}
	d.front, d.url = front, front.URL()
	return d, nil
}

func (d *directServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	rep, ok := d.replies[r.Method+" "+r.URL.Path]
	if !ok {
		http.Error(w, "direct: no recorded reply for "+r.Method+" "+r.URL.Path, http.StatusNotFound)
		return
	}
	if d.hold && strings.HasSuffix(r.URL.Path, "/pullsmart") && r.URL.Query().Get("wait") != "0" {
		d.held.Add(1)
		select {
		case <-r.Context().Done():
		case <-d.closing:
		}
		d.held.Add(-1)
	}
	h := w.Header()
	for k, v := range rep.header {
		h[k] = v
	}
	w.WriteHeader(rep.status)
	_, _ = w.Write(rep.body)
}

// polls is direct's gauge of held pullsmarts.
func (d *directServer) polls(context.Context) (int64, error) { return d.held.Load(), nil }

func (d *directServer) stop() {
	close(d.closing)
	_ = d.front.Stop()
}

// reply is one reply as the load generator saw it.
type reply struct {
	status int
	header http.Header
	body   []byte
}

// target is where a load goes: the relay or direct. While rec is set,
// every reply is recorded by "METHOD /path", for direct to answer with.
type target struct {
	name string
	base string
	hc   *http.Client
	mu   sync.Mutex
	rec  map[string]reply
}

// newTarget makes a client for base that keeps up to conns connections.
func newTarget(name, base string, conns int) *target {
	return &target{name: name, base: base, hc: &http.Client{Transport: &http.Transport{
		Proxy:               nil, // a proxy would be measured too
		MaxIdleConns:        conns + 16,
		MaxIdleConnsPerHost: conns + 16,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}}}
}

func (t *target) close() { t.hc.CloseIdleConnections() }

// record starts recording replies; recorded returns them.
func (t *target) record() { t.mu.Lock(); t.rec = map[string]reply{}; t.mu.Unlock() }

func (t *target) recorded() map[string]reply {
	t.mu.Lock()
	defer t.mu.Unlock()
	rec := t.rec
	t.rec = nil
	return rec
}

// call sends one request (bearer in Authorization, a JSON body if given)
// and reads the whole reply; a status other than want is an error.
func (t *target) call(ctx context.Context, method, pathQuery, bearer string, body []byte, want int) (reply, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, t.base+pathQuery, rd)
	if err != nil {
		return reply{}, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := t.hc.Do(req)
	if err != nil {
		return reply{}, err
	}
	defer resp.Body.Close()
	rep := reply{status: resp.StatusCode, header: resp.Header}
	if rep.body, err = io.ReadAll(resp.Body); err != nil {
		return rep, err
	}
	path, _, _ := strings.Cut(pathQuery, "?")
	if rep.status != want {
		return rep, fmt.Errorf("%s: %s %s: %d %s", t.name, method, path, rep.status, bytes.TrimSpace(rep.body))
	}
	t.mu.Lock()
	if t.rec != nil {
		h := rep.header.Clone()
		h.Del("Date")
		h.Del("Content-Length")
		t.rec[method+" "+path] = reply{rep.status, h, rep.body}
	}
	t.mu.Unlock()
	return rep, nil
}

// logins logs n SimClients into net and returns their tokens.
func (b *bench) logins(ctx context.Context, t *target, net string, n int) ([]string, error) {
	tokens := make([]string, n)
	err := b.parallel(ctx, "logins", n, 16, func(ctx context.Context, i int) error {
		rep, err := t.call(ctx, http.MethodGet, "/api/v1/client/login?net="+url.QueryEscape(net), "", nil, http.StatusOK)
		if err != nil {
			return err
		}
		var v struct{ Token string }
		if err := json.Unmarshal(rep.body, &v); err != nil || v.Token == "" {
			return fmt.Errorf("%s: login: no token in %s", t.name, rep.body)
		}
		tokens[i] = v.Token
		return nil
	})
	return tokens, err
}

// The wire calls. Each checks the status and reads what the load needs.

func pushReq(ctx context.Context, t *target, token string) (string, error) {
	rep, err := t.call(ctx, http.MethodPost, "/api/v1/client/pushreq", token, []byte(pushReqBody), http.StatusCreated)
	if err != nil {
		return "", err
	}
	var v struct{ RID string }
	if err := json.Unmarshal(rep.body, &v); err != nil || v.RID == "" {
		return "", fmt.Errorf("%s: pushreq: no rid in %s", t.name, rep.body)
	}
	return v.RID, nil
}

// pullSmart waits for rid's response; a 202 (the wait ran out) waits again.
func pullSmart(ctx context.Context, t *target, token, rid string) error {
	for {
		rep, err := t.call(ctx, http.MethodGet, "/api/v1/client/pullsmart?wait=25&rid="+url.QueryEscape(rid), token, nil, http.StatusOK)
		if err == nil || rep.status != http.StatusAccepted {
			return err
		}
	}
}

func pullReqSmart(ctx context.Context, t *target, net, key string, wait, max int, answer ...string) ([]string, error) {
	q := url.Values{"net": {net}, "wait": {fmt.Sprint(wait)}, "max": {fmt.Sprint(max)}}
	method, body := http.MethodGet, []byte(nil)
	if len(answer) > 0 {
		// The answers ride with the poll: each is simResBody.
		b := []byte(`{"answers":[`)
		for i, rid := range answer {
			if i > 0 {
				b = append(b, ',')
			}
			b = append(b, `{"rid":`+jsonString(rid)+`,"sim_res":`+simResBody+`}`...)
		}
		method, body = http.MethodPost, append(b, "]}"...)
	}
	rep, err := t.call(ctx, method, "/api/v1/server/pullreqsmart?"+q.Encode(), key, body, http.StatusOK)
	if err != nil {
		return nil, err
	}
	var v struct {
		Requests []struct{ RID string }
		Answers  []struct {
			RID   string
			Error *struct{ Code string }
		}
	}
	if err := json.Unmarshal(rep.body, &v); err != nil {
		return nil, fmt.Errorf("%s: pullreqsmart: %w", t.name, err)
	}
	for _, a := range v.Answers {
		// A request its caller withdrew (a gateway client that a phase's
		// end stopped) needs no answer: not an error.
		if a.Error != nil && a.Error.Code != "cancelled" {
			return nil, fmt.Errorf("%s: pullreqsmart: answer to %s refused: %s", t.name, a.RID, a.Error.Code)
		}
	}
	rids := make([]string, len(v.Requests))
	for i, r := range v.Requests {
		rids[i] = r.RID
	}
	return rids, nil
}

// pushRes answers rid. A request its caller withdrew meanwhile (410: a
// gateway client that a phase's end stopped) needs no answer: not an error.
func pushRes(ctx context.Context, t *target, net, key, rid string) error {
	body := `{"net":` + jsonString(net) + `,"rid":` + jsonString(rid) + `,"sim_res":` + simResBody + `}`
	rep, err := t.call(ctx, http.MethodPost, "/api/v1/server/pushres", key, []byte(body), http.StatusOK)
	if rep.status == http.StatusGone {
		return nil
	}
	return err
}

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
