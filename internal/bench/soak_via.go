// The crash soak's gateway callers: plain HTTP clients of /via/soak/...,
// synchronous ones and ones that ask for store-and-forward (Prefer:
// respond-async or wait=1) and fetch their answer at the Location of the
// 202 across kills, and the final check of what the relay acknowledged to
// them (docs/API.md, "Gateway" and "Durability").

package bench

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// viaAnswer is a SimServer's answer to a gateway request, as its caller
// must read it: what identifies the request (its method, target and body)
// comes back, so a caller tells its own answer from another's.
type viaAnswer struct {
	status int    // 200 for a GET, 201 for a POST
	echo   string // X-Soak-Echo: the method and target
	body   []byte // the method and target, a newline, the request's body
}

// viaEchoType is the answers' Content-Type.
const viaEchoType = "text/plain; charset=utf-8"

// viaEcho is the answer to the gateway request method target (the target
// under /via/soak, with its query) with body, as the SimServer sends it.
func viaEcho(method, target string, body []byte) viaAnswer {
	status := http.StatusOK
	if method == http.MethodPost {
		status = http.StatusCreated
	}
	return viaAnswer{status, method + " " + target, fmt.Appendf(nil, "%s %s\n%s", method, target, body)}
}

func (a viaAnswer) header() http.Header {
	return http.Header{"Content-Type": {viaEchoType}, "X-Soak-Echo": {a.echo}}
}

// check says how rep differs from a; nil when it is a, exactly.
func (a viaAnswer) check(rep soakReply) error {
	if rep.status == a.status && rep.header.Get("X-Soak-Echo") == a.echo &&
		rep.header.Get("Content-Type") == viaEchoType && bytes.Equal(rep.body, a.body) {
		return nil
	}
	body := rep.body
	if len(body) > 200 {
		body = body[:200]
	}
	return fmt.Errorf("got %d (X-Soak-Echo %q) %q, not %d %q", rep.status, rep.header.Get("X-Soak-Echo"), body, a.status, a.body)
}

// viaCounts are the gateway calls' figures (SoakReport's Via fields).
type viaCounts struct {
	sync, syncOK, syncCut, syncUnavailable           atomic.Int64
	async, acked, direct, asyncCut, asyncUnavailable atomic.Int64
	wait, waitAcked, fetched                         atomic.Int64
}

func (v *viaCounts) report(rep *SoakReport) {
	rep.ViaSync, rep.ViaSyncOK = int(v.sync.Load()), int(v.syncOK.Load())
	rep.ViaSyncCut, rep.ViaSyncUnavailable = int(v.syncCut.Load()), int(v.syncUnavailable.Load())
	rep.ViaAsyncSent, rep.ViaAsync = int(v.async.Load()), int(v.acked.Load())
	rep.ViaAsyncFetched, rep.ViaAsyncDirect = int(v.fetched.Load()), int(v.direct.Load())
	rep.ViaAsyncCut, rep.ViaAsyncUnavailable = int(v.asyncCut.Load()), int(v.asyncUnavailable.Load())
	rep.ViaWait, rep.ViaWaitAccepted = int(v.wait.Load()), int(v.waitAcked.Load())
}

// fromSimServer: a gateway reply with a status the soak's SimServers
// answer with (viaEcho), which must then be its caller's own answer.
func fromSimServer(status int) bool {
	return status == http.StatusOK || status == http.StatusCreated
}

// unavailable: a gateway reply that acknowledges nothing (no SimServer
// answer in time, a relay that cannot take the request now).
func unavailable(status int) bool {
	return status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout
}

// viaAcked is a store-and-forward request the relay acknowledged with 202.
type viaAcked struct {
	what     string // its method, target and preference, for the report
	location string // the 202's Location
	want     viaAnswer
	wrong    string // set when its caller read another answer at the Location
}

// viaCaller is one plain HTTP client of the gateway, numbered c; its
// requests are /via/soak/{sync,async,slow}/c/n?n=n.
type viaCaller struct {
	relay  *soakRelay
	c      int
	counts *viaCounts
	lost   func(string)    // a reply that is not the caller's own answer
	acked  func(*viaAcked) // a 202 received
	fail   func(error)     // a reply the soak does not expect: it stops
}

// sync sends synchronous requests, GET and POST in turn, each once, until
// ctx ends. A reply with a status the SimServers answer with must be the
// caller's own answer; a call cut by a kill and a 502, 503 or 504
// acknowledged nothing and are only counted.
func (v *viaCaller) sync(ctx context.Context) {
	for n := 0; ctx.Err() == nil; n++ {
		method, target, h, body := http.MethodGet, fmt.Sprintf("/sync/%d/%d?n=%d", v.c, n, n), http.Header{}, ""
		if n%2 == 1 {
			method, body = http.MethodPost, fmt.Sprintf(`{"caller":%d,"n":%d}`, v.c, n)
			h.Set("Content-Type", "application/json")
		}
		want := viaEcho(method, target, []byte(body))
		rep, err := v.relay.send(ctx, method, "/via/"+soakNet+target, h, body)
		switch {
		case err != nil && ctx.Err() != nil:
			return // the load ended: not counted
		case err != nil:
			v.counts.syncCut.Add(1)
		case unavailable(rep.status):
			v.counts.syncUnavailable.Add(1)
		case fromSimServer(rep.status):
			if err := want.check(rep); err != nil {
				v.lost(fmt.Sprintf("gateway request %s %s: %v", method, target, err))
			} else {
				v.counts.syncOK.Add(1)
			}
		default:
			v.fail(fmt.Errorf("gateway request %s %s: %d %s", method, target, rep.status, rep.body))
			return
		}
		v.counts.sync.Add(1)
	}
}

// viaKinds are the store-and-forward requests a caller sends in turn;
// slow ones go under /slow/, whose first delivery the SimServer leaves
// unanswered, so they are answered only after their lease (2 s) ends.
var viaKinds = []struct {
	prefer string
	slow   bool
}{
	{"respond-async", false},
	{"respond-async", true},
	{"respond-async", false},
	{"wait=1", false}, // answered within the second, as a synchronous one
	{"respond-async", false},
	{"wait=1", true}, // 202 after the second
}

// viaAsyncWindow is how many acknowledged requests a caller waits for at
// once before it sends more.
const viaAsyncWindow = 4

// async sends store-and-forward requests (viaKinds; GET for a round of
// them, then POST) until ctx ends, and fetches each one acknowledged with
// 202 at its Location until it gets the answer.
func (v *viaCaller) async(ctx context.Context) {
	slots := make(chan struct{}, viaAsyncWindow)
	var fetchers sync.WaitGroup
	defer fetchers.Wait()
	for n := 0; ; n++ {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		a, ok := v.storeAndForward(ctx, n)
		if !ok {
			return
		}
		if a == nil {
			<-slots
			continue
		}
		v.acked(a)
		fetchers.Go(func() {
			defer func() { <-slots }()
			v.await(ctx, a)
		})
	}
}

// storeAndForward sends the caller's nth store-and-forward request once.
// It returns the request when the relay acknowledged it with 202, nil when
// not (answered at once, cut, refused); ok is false when the caller is
// to stop.
func (v *viaCaller) storeAndForward(ctx context.Context, n int) (a *viaAcked, ok bool) {
	kind := viaKinds[n%len(viaKinds)]
	dir := "async"
	if kind.slow {
		dir = "slow"
	}
	method, target, h, body := http.MethodGet, fmt.Sprintf("/%s/%d/%d?n=%d", dir, v.c, n, n), http.Header{"Prefer": {kind.prefer}}, ""
	if n/len(viaKinds)%2 == 1 {
		method, body = http.MethodPost, fmt.Sprintf(`{"caller":%d,"n":%d,"prefer":%q}`, v.c, n, kind.prefer)
		h.Set("Content-Type", "application/json")
	}
	what := fmt.Sprintf("%s %s (Prefer: %s)", method, target, kind.prefer)
	want := viaEcho(method, target, []byte(body))
	rep, err := v.relay.send(ctx, method, "/via/"+soakNet+target, h, body)
	if err != nil && ctx.Err() != nil {
		return nil, false // the load ended: not counted
	}
	v.counts.async.Add(1)
	wait := strings.HasPrefix(kind.prefer, "wait=")
	if wait {
		v.counts.wait.Add(1)
	}
	switch {
	case err != nil:
		v.counts.asyncCut.Add(1)
	case rep.status == http.StatusAccepted:
		v.counts.acked.Add(1)
		if wait {
			v.counts.waitAcked.Add(1)
		}
		loc := rep.header.Get("Location")
		if !strings.HasPrefix(loc, "/api/v1/client/result?") || rep.header.Get("Preference-Applied") != kind.prefer {
			v.lost(fmt.Sprintf("gateway request %s: 202 with Location %q and Preference-Applied %q", what, loc, rep.header.Get("Preference-Applied")))
			return nil, true
		}
		return &viaAcked{what: what, location: loc, want: want}, true
	case unavailable(rep.status):
		v.counts.asyncUnavailable.Add(1)
	case fromSimServer(rep.status): // answered within its wait
		if err := want.check(rep); err != nil {
			v.lost(fmt.Sprintf("gateway request %s: %v", what, err))
		} else {
			v.counts.direct.Add(1)
		}
	default:
		v.fail(fmt.Errorf("gateway request %s: %d %s", what, rep.status, rep.body))
		return nil, false
	}
	return nil, true
}

// await fetches a's Location until its answer is there, politely: first
// after 100 ms, then as Retry-After says (1 s when it says nothing usable),
// across kills and past a 502, 503 or 504. The answer read is checked
// again at the end.
func (v *viaCaller) await(ctx context.Context, a *viaAcked) {
	delay := 100 * time.Millisecond
	for {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return
		}
		rep, err := v.relay.fetch(ctx, http.MethodGet, a.location, nil, "")
		if err != nil {
			return // ctx ended
		}
		if rep.status != http.StatusAccepted && !unavailable(rep.status) {
			if err := a.want.check(rep); err != nil {
				a.wrong = fmt.Sprintf("gateway request %s: read at its Location during the load: %v", a.what, err)
			} else {
				v.counts.fetched.Add(1)
			}
			return
		}
		delay = time.Second
		if s, err := strconv.Atoi(rep.header.Get("Retry-After")); err == nil && s > 0 {
			delay = time.Duration(min(s, 10)) * time.Second
		}
	}
}

// checkViaAcked reads every acknowledged store-and-forward request's
// answer at its Location, twice, once it is there (waited for with
// pullsmart, which the Location's token may call): each must be the
// request's own answer, exactly as its SimServer sent it. It adds what is
// not to rep.Lost and counts the rest in rep.ViaAsyncAnswered; the error
// is ctx's.
func checkViaAcked(ctx context.Context, relay *soakRelay, acked []*viaAcked, rep *SoakReport) error {
	for _, a := range acked {
		if a.wrong != "" {
			rep.Lost = append(rep.Lost, a.wrong)
			continue
		}
		u, err := url.Parse(a.location)
		if err != nil {
			return err
		}
		q := u.Query()
		for range 4 { // 2 minutes at most
			status, _, err := relay.call(ctx, http.MethodGet, "/api/v1/client/pullsmart?"+url.Values{
				"rid": {q.Get("rid")}, "token": {q.Get("token")}, "wait": {"30"}}.Encode(), nil)
			if err != nil {
				return err
			}
			if status != http.StatusAccepted {
				break
			}
		}
		answered := true
		for read := range 2 {
			got, err := relay.fetch(ctx, http.MethodGet, a.location, nil, "")
			if err != nil {
				return err
			}
			if err := a.want.check(got); err != nil {
				rep.Lost = append(rep.Lost, fmt.Sprintf("gateway request %s: read %d at its Location: %v", a.what, read+1, err))
				answered = false
				break
			}
		}
		if answered {
			rep.ViaAsyncAnswered++
		}
	}
	return nil
}
