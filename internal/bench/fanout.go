// The bench scenarios of the gateway and of peer messaging: `via` (plain
// HTTP clients through /via/) and `broadcast` (one sender, N waiting peers).

package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// viaPath is the plain request of the via scenario: a GET with a query,
// as a browser or curl sends it.
const viaPath = "/items/7?q=bench"

// via: N plain HTTP clients GET /via/NET/items/7 while SimServer
// workers (one per 4 clients) pullreqsmart and pushres. One op is one plain
// request, timed from sent to answered. Direct: the same GET answered at
// once by a plain handler with the relay's reply bytes, which is what the
// client would see from a web server of its own.
func via(ctx context.Context, b *bench, clients int) (*result, error) {
	workers := b.opts.Workers
	if workers == 0 {
		workers = (clients + 3) / 4
	}
	ex := exchangeCalls{net: b.net(), key: b.key, max: b.opts.Max, separate: b.opts.Answers == "pushres"}
	path := "/via/" + ex.net + viaPath
	relay := newTarget("relay", b.base, clients)
	defer relay.close()
	servers := newTarget("relay", b.serverBase(), workers) // another node on PostgreSQL with two
	defer servers.close()

	phase, stopWorkers := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopWorkers(nil)
	for range workers {
		wg.Go(func() {
			if err := ex.simServer(phase, servers); err != nil && phase.Err() == nil {
				stopWorkers(fmt.Errorf("SimServer worker: %w", err))
			}
		})
	}
	relay.record()
	if _, err := relay.call(phase, http.MethodGet, path, "", nil, http.StatusOK); err != nil {
		return nil, err
	}
	replies := relay.recorded()
	rs, err := b.measure(phase, "via relay", clients, func(int) opFunc {
		return func(ctx context.Context) error {
			_, err := relay.call(ctx, http.MethodGet, path, "", nil, http.StatusOK)
			return err
		}
	})
	stopWorkers(nil)
	wg.Wait()
	if err != nil {
		return nil, err
	}
	ds, err := b.measureDirect(ctx, "via direct", clients, replies, false, func(direct *target, _ int) opFunc {
		return func(ctx context.Context) error {
			_, err := direct.call(ctx, http.MethodGet, path, "", nil, http.StatusOK)
			return err
		}
	})
	if err != nil {
		return nil, err
	}
	res := newResult("via", clients, rs, ds)
	res.set("workers", workers)
	res.set("answers", b.opts.Answers)
	res.note("workers %d, max %d, answers by %s", workers, ex.max, b.opts.Answers)
	return res, nil
}

// broadcast: N peers wait on peer pullsmart while one sender
// broadcasts, one message at a time. One op is one broadcast, timed from
// sent until every one of the N peers has it (so p99 is the time by which
// all peers had 99% of the messages). Direct: the same peers wait on a
// plain handler that holds each pullsmart until a broadcast POST arrives,
// then answers all of them with the relay's reply bytes: an in-memory
// fan-out with no store.
func broadcast(ctx context.Context, b *bench, clients int) (*result, error) {
	if err := raiseFDLimit(uint64(4*clients + 512)); err != nil {
		return nil, fmt.Errorf("%d peers: %w", clients, err)
	}
	net := b.net()
	relay := newTarget("relay", b.base, clients+1)
	defer relay.close()
	tokens, err := b.logins(ctx, relay, net, clients+1)
	if err != nil {
		return nil, err
	}
	sender, peers := tokens[0], tokens[1:]

	// One broadcast read by one peer, recorded for direct.
	relay.record()
	if _, err := relay.call(ctx, http.MethodPost, "/api/v1/peer/broadcast", sender, []byte(`{"data":{"n":0}}`), http.StatusCreated); err != nil {
		return nil, err
	}
	rep, err := relay.call(ctx, http.MethodGet, "/api/v1/peer/pullsmart?wait=0", peers[0], nil, http.StatusOK)
	if err != nil {
		return nil, err
	}
	replies := relay.recorded()
	var page struct {
		Next int64 `json:"next"`
	}
	if err := json.Unmarshal(rep.body, &page); err != nil {
		return nil, fmt.Errorf("peer pullsmart: %w", err)
	}

	waiters := newTarget("relay", b.serverBase(), clients) // another node on PostgreSQL with two
	defer waiters.close()
	rs, deliveries, err := b.fanOut(ctx, "broadcast relay", relay, waiters, sender, peers, page.Next, b.opts.Stream)
	if err != nil {
		return nil, err
	}
	direct, err := b.startFanOut(replies)
	if err != nil {
		return nil, err
	}
	defer direct.stop()
	dt := newTarget("direct", direct.url, clients+1)
	defer dt.close()
	ds, _, err := b.fanOut(ctx, "broadcast direct", dt, dt, sender, peers, page.Next, b.opts.Stream)
	if err != nil {
		return nil, err
	}
	res := newResult("broadcast", clients, rs, ds)
	// A broadcast counts once every peer has it: deliveries are ops × peers.
	perSec := rs.perSec() * float64(clients)
	res.set("deliveries_per_sec", round2(perSec))
	res.set("delivery_p99_ms", round2(deliveries.pct(99)))
	how := "pullsmart"
	if b.opts.Stream {
		how = "stream"
	}
	res.set("receive", how)
	res.note("peers on %s; %.0f deliveries/s; one delivery p99 %s", how, perSec, fmtMS(deliveries.pct(99)))
	return res, nil
}

// fanOut runs the broadcast load: the peers wait on pullsmart at
// waiters from cursor since, the sender broadcasts at t and waits until all
// of them have the message. It returns the broadcasts' times until all had
// them, and every single delivery's time.
func (b *bench) fanOut(ctx context.Context, label string, t, waiters *target, sender string, peers []string, since int64, stream bool) (loadStats, loadStats, error) {
	var (
		mu      sync.Mutex
		sentAt  time.Time
		waiting atomic.Int64 // peers that have not got the current message
		allHave = make(chan struct{}, 1)
		lat     []time.Duration
	)
	recv, stopRecv := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopRecv(nil)
	ready := make(chan struct{}, len(peers))
	got := func(n int) { // a peer has n more messages
		mu.Lock()
		lat = append(lat, time.Since(sentAt))
		mu.Unlock()
		if waiting.Add(-int64(n)) == 0 {
			allHave <- struct{}{}
		}
	}
	for _, tok := range peers {
		wg.Go(func() {
			var err error
			if stream {
				err = streamPeer(recv, waiters, tok, since, ready, got)
			} else {
				err = longPollPeer(recv, waiters, tok, since, ready, got)
			}
			if err != nil && recv.Err() == nil {
				stopRecv(err)
			}
		})
	}
	for range peers {
		select {
		case <-ready:
		case <-recv.Done(): // a peer failed to start: measure reports why
		}
	}
	n := 0
	all, err := b.measure(recv, label, 1, func(int) opFunc {
		return func(ctx context.Context) error {
			n++
			waiting.Store(int64(len(peers)))
			mu.Lock()
			sentAt = time.Now()
			mu.Unlock()
			body := []byte(fmt.Sprintf(`{"data":{"n":%d}}`, n))
			if _, err := t.call(ctx, http.MethodPost, "/api/v1/peer/broadcast", sender, body, http.StatusCreated); err != nil {
				return err
			}
			select {
			case <-allHave:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	})
	stopRecv(nil) // a receiver's failure is measure's error already
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	each := loadStats{lat: lat, window: all.window}
	slices.Sort(each.lat)
	return all, each, err
}

// longPollPeer is a peer waiting on pullsmart from cursor since; got is told
// of every page of messages.
func longPollPeer(ctx context.Context, t *target, tok string, since int64, ready chan<- struct{}, got func(int)) error {
	cursor := since
	ready <- struct{}{}
	for ctx.Err() == nil {
		q := url.Values{"wait": {"25"}, "since": {fmt.Sprint(cursor)}}
		rep, err := t.call(ctx, http.MethodGet, "/api/v1/peer/pullsmart?"+q.Encode(), tok, nil, http.StatusOK)
		if err != nil {
			return err
		}
		var page struct {
			Messages []json.RawMessage `json:"messages"`
			Next     int64             `json:"next"`
		}
		if err := json.Unmarshal(rep.body, &page); err != nil {
			return fmt.Errorf("%s: peer pullsmart: %w", t.name, err)
		}
		cursor = max(cursor, page.Next)
		if len(page.Messages) > 0 {
			got(len(page.Messages))
		}
	}
	return nil
}

// streamPeer is a peer reading the event stream from cursor since; got is
// told of every event.
func streamPeer(ctx context.Context, t *target, tok string, since int64, ready chan<- struct{}, got func(int)) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.base+"/api/v1/peer/stream?since="+fmt.Sprint(since), nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := t.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: peer stream: %d", t.name, resp.StatusCode)
	}
	ready <- struct{}{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if bytes.HasPrefix(sc.Bytes(), []byte("id:")) {
			got(1)
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("%s: peer stream ended: %v", t.name, sc.Err())
}

// fanOutServer is the broadcast scenario's direct baseline, an in-memory
// fan-out with no store: a broadcast POST counts a message and wakes the
// waiting pullsmarts; a pullsmart returns at once when its caller (by its
// Authorization) has not had the latest message, else waits for the next.
// Both answer with the relay's recorded reply bytes, behind serve's front
// (Relays.Front).
type fanOutServer struct {
	url     string
	front   Server
	replies map[string]reply
	mu      sync.Mutex
	seq     int64            // broadcasts so far
	had     map[string]int64 // caller -> the last broadcast it was given
	next    chan struct{}    // closed by the next broadcast
}

func (b *bench) startFanOut(replies map[string]reply) (*fanOutServer, error) {
	f := &fanOutServer{replies: replies, had: map[string]int64{}, next: make(chan struct{})}
	front, err := b.relays.Front(directArgs, f, b.stderr)
	if err != nil {
		return nil, err
	}
	f.front, f.url = front, front.URL()
	return f, nil
}

func (f *fanOutServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	who := r.Header.Get("Authorization")
	if r.URL.Path == "/api/v1/peer/stream" {
		f.stream(w, r)
		return
	}
	rep, ok := f.replies[r.Method+" "+r.URL.Path]
	if !ok {
		http.Error(w, "direct: no recorded reply for "+r.Method+" "+r.URL.Path, http.StatusNotFound)
		return
	}
	f.mu.Lock()
	if r.Method == http.MethodPost {
		f.seq++
		close(f.next)
		f.next = make(chan struct{})
	}
	for r.Method == http.MethodGet && f.had[who] >= f.seq {
		next := f.next
		f.mu.Unlock()
		select {
		case <-next:
		case <-r.Context().Done():
			return
		}
		f.mu.Lock()
	}
	f.had[who] = f.seq
	f.mu.Unlock()
	h := w.Header()
	for k, v := range rep.header {
		h[k] = v
	}
	w.WriteHeader(rep.status)
	_, _ = w.Write(rep.body)
}

// stream writes one event per broadcast, flushed, until the caller goes.
func (f *fanOutServer) stream(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	f.mu.Lock()
	had := f.seq
	for {
		for had < f.seq {
			had++
			f.mu.Unlock()
			if _, err := fmt.Fprintf(w, "id: %d\ndata: {}\n\n", had); err != nil || rc.Flush() != nil {
				return
			}
			f.mu.Lock()
		}
		next := f.next
		f.mu.Unlock()
		select {
		case <-next:
		case <-r.Context().Done():
			return
		}
		f.mu.Lock()
	}
}

func (f *fanOutServer) stop() { _ = f.front.Stop() }
