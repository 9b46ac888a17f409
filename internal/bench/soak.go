// The crash soak (`c2cvia bench --scenario crash`): the relay runs as a child
// process on one store while SimClients, SimServers, peers and plain HTTP
// callers of the gateway drive it; it is killed with SIGKILL at random
// moments and started again, over and over. At the end every acknowledged
// request must have been answered exactly once from its client's view (a
// gateway request acknowledged with 202 at its Location), and every
// acknowledged message delivered.

package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// SoakOptions shape a crash soak; Exe is required.
type SoakOptions struct {
	Exe     string        // the c2cvia binary to run as the relay: Exe serve --addr 127.0.0.1:0 --db DB ...
	Env     []string      // its environment (nil: this process's)
	DB      string        // the store it runs on; made in a temp folder when empty
	Kills   int           // SIGKILLs before the final check
	Every   time.Duration // mean time between kills (each is uniform in [0.5, 1.5] of it)
	Clients int           // SimClients pushing requests; as many peers broadcast, and as many gateway callers of each kind call (0: 1)
	Log     io.Writer     // progress lines; nil: none

	// Postgres, a postgres:// URL, runs the soak on two relay nodes that
	// serve a fresh schema of that database (DB is then unused), with the
	// load spread across both. The first node is the one killed; the
	// second is never killed and must serve throughout. The first stays
	// down for Every/2 after each kill before it is started again.
	Postgres string
}

// SoakReport is what a crash soak found; nothing was lost when Lost is
// empty. As JSON, durations are in nanoseconds.
type SoakReport struct {
	Kills        int           `json:"kills"`
	Requests     int           `json:"requests"`     // acknowledged with 201
	Answered     int           `json:"answered"`     // of those, answered as sent, exactly once
	Messages     int           `json:"messages"`     // acknowledged with 201
	Delivered    int           `json:"delivered"`    // of those, read back by their receiver
	Lost         []string      `json:"lost"`         // what went missing or came back wrong
	Elapsed      time.Duration `json:"elapsed_ns"`   // the whole soak
	DownTime     time.Duration `json:"down_time_ns"` // from each kill until the relay answered again
	MaxRecovery  time.Duration `json:"max_recovery_ns"`
	RelayRetries int64         `json:"relay_retries"` // calls retried because the relay was down

	// Gateway (/via/) calls. A synchronous one is acknowledged only by its
	// answer; one cut by a kill or answered 502, 503 or 504 was not.
	ViaSync            int `json:"via_sync"`             // synchronous calls made
	ViaSyncOK          int `json:"via_sync_ok"`          // of those, answered with their own answer
	ViaSyncCut         int `json:"via_sync_cut"`         // cut by a kill
	ViaSyncUnavailable int `json:"via_sync_unavailable"` // answered 502, 503 or 504
	// Store-and-forward calls (Prefer: respond-async, or wait=1): every one
	// acknowledged with 202 must end with its own answer at its Location.
	ViaAsyncSent        int `json:"via_async_sent"`        // store-and-forward calls made
	ViaAsync            int `json:"via_async"`             // of those, acknowledged with 202 and a Location
	ViaAsyncAnswered    int `json:"via_async_answered"`    // of those, with their own answer at their Location at the end, on two reads
	ViaAsyncFetched     int `json:"via_async_fetched"`     // of those, answers their callers fetched at the Location during the load
	ViaAsyncDirect      int `json:"via_async_direct"`      // answered with their own answer within their wait, without a 202
	ViaAsyncCut         int `json:"via_async_cut"`         // cut by a kill before any reply
	ViaAsyncUnavailable int `json:"via_async_unavailable"` // answered 502, 503 or 504
	ViaWait             int `json:"via_wait"`              // store-and-forward calls with Prefer: wait=1
	ViaWaitAccepted     int `json:"via_wait_accepted"`     // of those, acknowledged with 202
	// A SimServer's answers to gateway requests refused with 404 (a
	// synchronous request held in memory by a relay that died) or 410 (its
	// caller went away): the worker goes on.
	ViaAnswers404 int `json:"via_answers_404"`
	ViaAnswers410 int `json:"via_answers_410"`

	// Answers the relay took from the SimServer workers: with a pushres
	// each, or with their next pullreqsmart (half the workers do that).
	AnswersPushres  int `json:"answers_pushres"`
	AnswersWithPoll int `json:"answers_with_poll"`

	// With two nodes (SoakOptions.Postgres): the node never killed. Its
	// calls during the kill windows of the other (from each kill until the
	// killed node serves again), the fewest in one window, and its calls
	// that failed without an answer at any time (must be 0) or were
	// answered 5xx (gateway calls unanswered in time: not acknowledged).
	// These are left out of the JSON on one node.
	Nodes            int    `json:"nodes,omitempty"`
	SurvivorCalls    int64  `json:"survivor_calls_in_kill_windows,omitempty"`
	SurvivorMinCalls *int64 `json:"survivor_min_calls_in_a_window,omitempty"`
	SurvivorFailed   *int64 `json:"survivor_failed,omitempty"`
	Survivor5xx      *int64 `json:"survivor_5xx,omitempty"`
	// API calls refused with 503 store_busy (nothing written) and repeated,
	// per node: the killed one, then the other.
	StoreBusy []int64 `json:"store_busy,omitempty"`
}

// soakKey claims the soak's net; soakNet is fresh per store.
const (
	soakKey = "crash-soak-key-0123456789"
	soakNet = "soak"
)

// soakWindow is how many requests a SimClient has pushed and not yet seen
// answered before it waits for the oldest: SimClients pushing as fast as
// they can would outrun the SimServers (64 of them against 2 queued 120,000
// requests in a minute), and a backlog older than the request TTL (5 min)
// expires before the final check reads it.
const soakWindow = 8

// awaitAnswer long-polls until rid is no longer pending for tok; whether
// its answer is right is the final check's to say.
func awaitAnswer(ctx context.Context, call func(context.Context, string, string, url.Values) (int, []byte, error), tok, rid string) error {
	for {
		status, _, err := call(ctx, http.MethodGet, "/api/v1/client/pullsmart?"+url.Values{
			"rid": {rid}, "token": {tok}, "wait": {"25"}}.Encode(), nil)
		if err != nil || status != http.StatusAccepted {
			return err
		}
	}
}

// RunCrashSoak starts the relay as a child process, drives it with
// o.Clients SimClients, as many broadcasting peers, synchronous and
// store-and-forward gateway callers each, and SimServer workers,
// SIGKILLs and restarts it o.Kills times, then reads back every request
// and message it acknowledged. What came back wrong is in the report's
// Lost, not an error; the error is for a soak that could not run: a relay
// that does not start within 30 s, a call refused other than as the soak
// expects, ctx ending.
func RunCrashSoak(ctx context.Context, o SoakOptions) (SoakReport, error) {
	var rep SoakReport
	if o.Env == nil {
		o.Env = os.Environ()
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	nodes := 1
	if o.Postgres != "" {
		schema, err := newPGSchema(ctx, o.Postgres, "c2cvia_soak")
		if err != nil {
			return rep, err
		}
		defer func() {
			if err := schema.drop(); err != nil {
				fmt.Fprintf(o.Log, "%v\n", err)
			}
		}()
		o.DB, nodes = schema.URL, 2
	}
	if o.DB == "" {
		dir, err := os.MkdirTemp("", "c2cvia-soak-")
		if err != nil {
			return rep, err
		}
		defer os.RemoveAll(dir)
		o.DB = filepath.Join(dir, "soak.db")
	}
	start := time.Now()
	// The relay, or the nodes on PostgreSQL: the load is spread across
	// them (at), the first is killed, the last reads everything back.
	relays := make([]*soakRelay, nodes)
	for i := range relays {
		relays[i] = newSoakRelay(o)
		if err := relays[i].start(ctx); err != nil {
			return rep, err
		}
		defer relays[i].kill()
	}
	at := func(i int) *soakRelay { return relays[i%nodes] }
	victim, survivor := relays[0], relays[nodes-1]
	if nodes > 1 {
		rep.Nodes = nodes
	}

	call := survivor.call
	login := func(relay *soakRelay) (tok, peer string, err error) {
		status, b, err := relay.call(ctx, http.MethodPost, "/api/v1/client/login", url.Values{"net": {soakNet}})
		if err != nil || status != http.StatusOK {
			return "", "", fmt.Errorf("login: %d %s %v", status, b, err)
		}
		var out struct {
			Token  string `json:"token"`
			PeerID string `json:"peer_id"`
		}
		err = json.Unmarshal(b, &out)
		return out.Token, out.PeerID, err
	}
	// The receiver of every broadcast logs in before any is sent.
	recvTok, _, err := login(victim)
	if err != nil {
		return rep, err
	}

	load, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		requests = map[string]string{} // acknowledged rid -> its client's token
		expected = map[string]string{} // rid -> the simBody it was sent with
		messages = map[int64]string{}  // acknowledged message id -> its data
		viaAcks  []*viaAcked           // store-and-forward gateway requests acknowledged with 202
		via      viaCounts
		served   serveCounts
		loadLost []string // gateway replies that were not their caller's answer
		loadErr  error
	)
	fail := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if loadErr == nil && load.Err() == nil {
			loadErr = err
			stopLoad()
		}
	}

	for c := range max(o.Clients, 1) {
		wg.Go(func() { // a SimClient pushing requests
			relay := at(c)
			call := relay.call
			tok, _, err := login(relay)
			if err != nil {
				fail(err)
				return
			}
			var unanswered []string // pushed, not yet seen answered: at most soakWindow
			for n := 0; load.Err() == nil; n++ {
				if len(unanswered) == soakWindow {
					if err := awaitAnswer(load, call, tok, unanswered[0]); err != nil {
						return
					}
					unanswered = unanswered[1:]
				}
				body := fmt.Sprintf(`{"client":%d,"n":%d}`, c, n)
				status, b, err := call(load, http.MethodPost, "/api/v1/client/pushreq", url.Values{
					"token": {tok}, "sim_req": {`{"simEndpoint":"/soak","simBody":` + body + `}`}})
				if err != nil {
					return
				}
				if status != http.StatusCreated {
					fail(fmt.Errorf("pushreq: %d %s", status, b))
					return
				}
				var out struct {
					RID string `json:"rid"`
				}
				if err := json.Unmarshal(b, &out); err != nil {
					fail(err)
					return
				}
				mu.Lock()
				requests[out.RID], expected[out.RID] = tok, body
				mu.Unlock()
				unanswered = append(unanswered, out.RID)
			}
		})
		wg.Go(func() { // a peer broadcasting
			relay := at(c + 1)
			call := relay.call
			tok, _, err := login(relay)
			if err != nil {
				fail(err)
				return
			}
			for n := 0; load.Err() == nil; n++ {
				data := fmt.Sprintf(`{"peer":%d,"n":%d}`, c, n)
				status, b, err := call(load, http.MethodPost, "/api/v1/peer/broadcast", url.Values{"token": {tok}, "data": {data}})
				if err != nil {
					return
				}
				if status != http.StatusCreated {
					fail(fmt.Errorf("broadcast: %d %s", status, b))
					return
				}
				var out struct {
					ID int64 `json:"id"`
				}
				if err := json.Unmarshal(b, &out); err != nil {
					fail(err)
					return
				}
				mu.Lock()
				messages[out.ID] = data
				mu.Unlock()
			}
		})
	}
	for c := range max(o.Clients, 1) {
		caller := &viaCaller{relay: at(c), c: c, counts: &via, fail: fail,
			lost: func(l string) {
				mu.Lock()
				loadLost = append(loadLost, l)
				mu.Unlock()
			},
			acked: func(a *viaAcked) {
				mu.Lock()
				viaAcks = append(viaAcks, a)
				mu.Unlock()
			},
		}
		async := *caller
		async.relay = at(c + 1)
		wg.Go(func() { caller.sync(load) })
		wg.Go(func() { async.async(load) })
	}
	// SimServer workers answer until the end of the soak (they also drain
	// what is left after the last kill): one per 8 SimClients, at least 2
	// per node; every other one answers with its next poll.
	serve, stopServe := context.WithCancel(ctx)
	defer stopServe()
	var servers sync.WaitGroup
	for i := range max(o.Clients/8, 2*nodes) {
		servers.Go(func() { soakServe(serve, at(i/2), i%2 == 0, &served, fail) })
	}

	// Kill and restart at random moments.
	for i := range o.Kills {
		d := time.Duration(float64(o.Every) * (0.5 + rand.Float64()))
		select {
		case <-time.After(d):
		case <-load.Done():
		}
		if load.Err() != nil {
			break
		}
		before := survivor.answered.Load()
		victim.kill()
		killed := time.Now()
		if nodes > 1 {
			// The other node serves alone for a while: half the mean time
			// between kills, before the killed one is started again.
			select {
			case <-time.After(o.Every / 2):
			case <-ctx.Done():
				return rep, ctx.Err()
			}
		}
		if err := victim.start(ctx); err != nil {
			return rep, err
		}
		rec := time.Since(killed)
		if nodes > 1 {
			n := survivor.answered.Load() - before
			if rep.SurvivorMinCalls == nil || n < *rep.SurvivorMinCalls {
				rep.SurvivorMinCalls = &n
			}
			rep.SurvivorCalls += n
		}
		rep.Kills++
		rep.DownTime += rec
		rep.MaxRecovery = max(rep.MaxRecovery, rec)
		fmt.Fprintf(o.Log, "kill %d/%d: back in %s\n", i+1, o.Kills, rec.Round(time.Millisecond))
	}
	stopLoad()
	wg.Wait()
	if loadErr != nil {
		return rep, loadErr
	}

	// Every acknowledged request: its answer, as sent, and the same on a
	// second read (one answer per request, from the client's view).
	rep.Requests, rep.Messages = len(requests), len(messages)
	rep.Lost = loadLost
	for rid, tok := range requests {
		var first []byte
		for read := range 2 {
			status, b, err := call(ctx, http.MethodGet, "/api/v1/client/pullsmart?"+url.Values{
				"rid": {rid}, "token": {tok}, "wait": {"30"}}.Encode(), nil)
			if err != nil {
				return rep, err
			}
			var out struct {
				SimRes struct {
					Body json.RawMessage `json:"simBody"`
				} `json:"sim_res"`
			}
			if status != http.StatusOK || json.Unmarshal(b, &out) != nil || string(out.SimRes.Body) != expected[rid] {
				rep.Lost = append(rep.Lost, fmt.Sprintf("request %s: read %d gave %d %s", rid, read+1, status, b))
				break
			}
			if read == 0 {
				first = b
			} else if !bytes.Equal(first, b) {
				rep.Lost = append(rep.Lost, fmt.Sprintf("request %s: two answers %s and %s", rid, first, b))
			} else {
				rep.Answered++
			}
		}
	}
	// Every gateway request acknowledged with 202: its answer at its Location.
	if err := checkViaAcked(ctx, survivor, viaAcks, &rep); err != nil {
		return rep, err
	}
	stopServe()
	servers.Wait()
	via.report(&rep)
	rep.ViaAnswers404, rep.ViaAnswers410 = int(served.via404.Load()), int(served.via410.Load())
	rep.AnswersPushres, rep.AnswersWithPoll = int(served.pushres.Load()), int(served.withPoll.Load())

	// Every acknowledged message, read back by the receiver from the start.
	got := map[int64]string{}
	for since := int64(0); ; {
		status, b, err := call(ctx, http.MethodGet, "/api/v1/peer/pullsmart?"+url.Values{
			"token": {recvTok}, "since": {fmt.Sprint(since)}, "wait": {"0"}, "max": {"100"}}.Encode(), nil)
		if err != nil {
			return rep, err
		}
		var page struct {
			Messages []struct {
				ID   int64           `json:"id"`
				Data json.RawMessage `json:"data"`
			} `json:"messages"`
			Next int64 `json:"next"`
		}
		if status != http.StatusOK || json.Unmarshal(b, &page) != nil {
			return rep, fmt.Errorf("peer pullsmart: %d %s", status, b)
		}
		for _, m := range page.Messages {
			got[m.ID] = string(m.Data)
		}
		if len(page.Messages) == 0 {
			break
		}
		since = page.Next
	}
	for id, data := range messages {
		if got[id] == data {
			rep.Delivered++
		} else {
			rep.Lost = append(rep.Lost, fmt.Sprintf("message %d: sent %s, read %q", id, data, got[id]))
		}
	}
	rep.Elapsed = time.Since(start)
	for _, r := range relays {
		rep.RelayRetries += r.retries.Load()
	}
	if nodes > 1 {
		failed, status5xx := survivor.failed.Load(), survivor.status5xx.Load()
		rep.SurvivorFailed, rep.Survivor5xx = &failed, &status5xx
		for _, r := range relays {
			rep.StoreBusy = append(rep.StoreBusy, r.busy.Load())
		}
	}
	return rep, nil
}

// SurvivorErr says how the node never killed failed to serve throughout,
// with two nodes: a call to it that got no answer, or a kill window in
// which it answered nothing.
func (rep SoakReport) SurvivorErr() error {
	switch {
	case rep.Nodes < 2:
		return nil
	case deref(rep.SurvivorFailed) > 0:
		return fmt.Errorf("crash soak: %d calls to the node never killed got no answer", deref(rep.SurvivorFailed))
	case len(rep.StoreBusy) == rep.Nodes && rep.StoreBusy[rep.Nodes-1] > 0:
		return fmt.Errorf("crash soak: the node never killed refused %d calls with 503 store_busy", rep.StoreBusy[rep.Nodes-1])
	case rep.Kills > 0 && deref(rep.SurvivorMinCalls) == 0:
		return errors.New("crash soak: the node never killed answered nothing while the other was down")
	}
	return nil
}

// PrintSoak writes the soak's summary to w, one line per figure and one per
// loss; its last line is "lost: N".
func PrintSoak(w io.Writer, rep SoakReport) {
	fmt.Fprintf(w, "crash soak: %d kills in %s (relay back in %s on average, at most %s; %d calls retried)\n",
		rep.Kills, rep.Elapsed.Round(time.Millisecond), avgDuration(rep.DownTime, rep.Kills).Round(time.Millisecond),
		rep.MaxRecovery.Round(time.Millisecond), rep.RelayRetries)
	fmt.Fprintf(w, "requests: %d acknowledged, %d answered exactly once as sent\n", rep.Requests, rep.Answered)
	fmt.Fprintf(w, "messages: %d acknowledged, %d delivered\n", rep.Messages, rep.Delivered)
	fmt.Fprintf(w, "gateway, synchronous: %d calls, %d answered as sent, %d cut by a kill, %d answered 502/503/504\n",
		rep.ViaSync, rep.ViaSyncOK, rep.ViaSyncCut, rep.ViaSyncUnavailable)
	fmt.Fprintf(w, "gateway, store-and-forward: %d calls (%d with wait=1, %d of them 202), %d acknowledged with 202, %d answered as sent at their Location (%d fetched during the load); %d answered within their wait, %d cut by a kill, %d answered 502/503/504\n",
		rep.ViaAsyncSent, rep.ViaWait, rep.ViaWaitAccepted, rep.ViaAsync, rep.ViaAsyncAnswered, rep.ViaAsyncFetched,
		rep.ViaAsyncDirect, rep.ViaAsyncCut, rep.ViaAsyncUnavailable)
	fmt.Fprintf(w, "SimServer answers: %d taken by pushres, %d with the next poll; to gateway requests, %d refused 404 and %d 410\n",
		rep.AnswersPushres, rep.AnswersWithPoll, rep.ViaAnswers404, rep.ViaAnswers410)
	if rep.Nodes > 1 {
		fmt.Fprintf(w, "node %d of %d, never killed: %d calls answered during the other's kill windows (at least %d in each), %d failed without an answer, %d answered 5xx\n",
			rep.Nodes, rep.Nodes, rep.SurvivorCalls, deref(rep.SurvivorMinCalls), deref(rep.SurvivorFailed), deref(rep.Survivor5xx))
		fmt.Fprintf(w, "API calls refused 503 store_busy and repeated, node by node: %v\n", rep.StoreBusy)
	}
	for _, l := range rep.Lost {
		fmt.Fprintf(w, "  %s\n", l)
	}
	fmt.Fprintf(w, "lost: %d\n", len(rep.Lost))
}

func avgDuration(total time.Duration, n int) time.Duration {
	if n == 0 {
		return 0
	}
	return total / time.Duration(n)
}

func deref(p *int64) int64 {
	if p == nil {
		return 0
	}
	return *p
}
