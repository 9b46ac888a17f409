// The store's counts of what it holds, kept in memory so that the quotas
// (--max-queue, --max-peers) and the requests-by-status metric cost no query:
// a pushreq on a net with a million queued requests checks one map entry.

package main

import (
	"context"
	"database/sql"
	"sync"
	"sync/atomic"
)

// storeCounts count requests by stored status, queued requests per net and
// logins per net, and what each sender stores. Only the writer changes
// them, inside its writes, and each write changes them last, once nothing
// can fail any more, so a write that is rolled back leaves them as they
// were. They are loaded at open and counted again from the file when a
// commit failed, a request left the queue without its sender being read
// (move), or another process wrote to it (c2cvia purge), which the janitor
// notices by PRAGMA data_version.
//
// Statuses are the stored ones: a request past its TTL counts as queued or
// delivered until the janitor writes it down as expired (--janitor-every),
// and a login counts until the janitor removes it once it has expired.
type storeCounts struct {
	mu       sync.Mutex
	byStatus map[string]int64 // status -> requests
	queued   map[string]int   // queue (queueOf) -> requests stored as queued
	tokens   map[string]int   // net -> logins stored
	topics   map[string]int   // topicKey -> open subscriptions stored
	usage    requestUsage     // what the requests take, by who sent them (budget.go)
	msgAddr  messageUsage     // what the peer messages take, by address (msgbudget.go)

	dataVersion int64        // the writer's PRAGMA data_version when last counted
	stale       atomic.Bool  // a commit failed, or a count lost track (move): count again
	recounts    atomic.Int64 // counts from the file after the one at open

	queueFull, netFull atomic.Int64 // refusals, for the metrics

	// The synchronous gateway requests held in memory and queued
	// (held.go), by queue and by viaKey: not the store's, but in its
	// queues' quotas with the store's.
	heldQueued map[string]int
	heldVia    map[string]int
}

// move records n requests of net moving from status from to status to.
//
// It does not know who sent them: the per-address queue counts
// (requestUsage's viaQueued and clientQueued) of requests that leave the
// queue this way, other than by a lease, are counted again at the
// janitor's next run (syncCounts), one high till then. Leases (unqueued),
// answers and withdrawals (finished) and the janitor's expiry
// (requestUsage.unqueue) keep them exact.
func (c *storeCounts) move(net, from, to string, n int) {
	if n == 0 {
		return
	}
	if from == statusQueued && to != statusDelivered {
		c.stale.Store(true)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.moveLocked(net, from, to, n)
}

func (c *storeCounts) moveLocked(net, from, to string, n int) {
	moveRequests(c.byStatus, c.queued, net, from, to, n)
	if c.queued[net] <= 0 {
		delete(c.queued, net) // a net that is gone costs nothing
	}
}

// answered records the answer to r, handed out attempt times before: from
// the queue when attempt is 0 (its SimServer knew its rid without a lease).
func (c *storeCounts) answered(r requestRow, attempt int) { c.finished(r, attempt, statusAnswered) }

// finished records r, handed out attempt times before, moving to the
// stored status to: answered, or failed for a withdrawal (cancelled).
func (c *storeCounts) finished(r requestRow, attempt int, to string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.moveLocked(queueOf(r.net, r.from), wasStatus(attempt), to, 1)
	if attempt == 0 {
		c.usage.unqueue(r)
	}
}

// moveRequests records n requests of net moving from status from to status
// to ("" for inserted or deleted).
func moveRequests(byStatus map[string]int64, queued map[string]int, net, from, to string, n int) {
	if from != "" {
		byStatus[from] -= int64(n)
	}
	if to != "" {
		byStatus[to] += int64(n)
	}
	if from == statusQueued {
		queued[net] -= n
	}
	if to == statusQueued {
		queued[net] += n
	}
}

// countsDelta gathers a purge's changes, applied when it is done.
type countsDelta struct {
	byStatus map[string]int64
	queued   map[string]int
	tokens   map[string]int
	topics   map[string]int
	usage    requestUsage
	msgAddr  messageUsage
}

func newCountsDelta() countsDelta {
	return countsDelta{byStatus: map[string]int64{}, queued: map[string]int{}, tokens: map[string]int{}, topics: map[string]int{},
		usage: newRequestUsage(), msgAddr: messageUsage{}}
}

// topicKey names a topic of a net in storeCounts.topics.
func topicKey(net, topic string) string { return net + "\x00" + topic }

// subscribed records n subscriptions to topic of net opened (n < 0: closed
// or deleted).
func (c *storeCounts) subscribed(net, topic string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := topicKey(net, topic)
	if c.topics[k] += n; c.topics[k] <= 0 {
		delete(c.topics, k)
	}
}

// subscribers returns the open subscriptions to topic of net stored: a
// publish's receivers, counted without reading them. A login that has
// expired counts until the janitor deletes it.
func (c *storeCounts) subscribers(net, topic string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.topics[topicKey(net, topic)]
}

func (d countsDelta) move(net, from, to string, n int) {
	moveRequests(d.byStatus, d.queued, net, from, to, n)
}

func (c *storeCounts) apply(d countsDelta) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for status, n := range d.byStatus {
		c.byStatus[status] += n
	}
	for _, pair := range []struct{ m, d map[string]int }{{c.queued, d.queued}, {c.tokens, d.tokens}, {c.topics, d.topics}} {
		for k, n := range pair.d {
			if pair.m[k] += n; pair.m[k] <= 0 {
				delete(pair.m, k)
			}
		}
	}
	c.usage.apply(d.usage)
	for k, n := range d.msgAddr {
		addTo(c.msgAddr, k, n)
	}
}

// detachedFrom is the sender of the requests no login sent (pushDetached):
// the gateway's, whose handlers call it viaPeer. Their `from_peer` in SQL.
const detachedFrom = "via"

// queueOf names the queue a request of net from the sender from counts in
// for --max-queue: the detached requests (the gateway's) have a queue of
// their own beside the one of the net's SimClients, so anonymous gateway
// traffic cannot fill the queue its logged-in SimClients use. A net name
// holds no space.
func queueOf(net, from string) string {
	if from == detachedFrom {
		return net + " via"
	}
	return net
}

// admitRequest counts the request r just inserted as queued, or refuses
// it with errQueueFull when its queue (queueOf) already has max (0: no
// limit), or when its sender already has addrMax queued in that queue (0:
// no share): errViaAddrQueueFull in the gateway's, errAddrQueueFull in the
// SimClients'. The write's savepoint then undoes the insert.
func (c *storeCounts) admitRequest(r requestRow, max, addrMax int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	queue := queueOf(r.net, r.from)
	if err := c.quotaLocked(r, max, addrMax); err != nil {
		return err
	}
	if k, ok := r.clientKey(); ok && addrMax > 0 && c.usage.clientQueued[k] >= addrMax {
		c.queueFull.Add(1)
		return errAddrQueueFull
	}
	c.queued[queue]++
	c.byStatus[statusQueued]++
	c.usage.add(r, 1)
	return nil
}

// quotaLocked refuses r, about to be queued, when its queue (queueOf)
// already has max queued (0: no limit), stored or held in memory, or its
// sender addrMax in the gateway's queue (errViaAddrQueueFull; 0: no share).
func (c *storeCounts) quotaLocked(r requestRow, max, addrMax int) error {
	queue := queueOf(r.net, r.from)
	if max > 0 && c.queued[queue]+c.heldQueued[queue] >= max {
		c.queueFull.Add(1)
		return errQueueFull
	}
	if k, ok := r.viaKey(); ok && addrMax > 0 && c.usage.viaQueued[k]+c.heldVia[k] >= addrMax {
		c.queueFull.Add(1)
		return errViaAddrQueueFull
	}
	return nil
}

// admitHeld counts r, a gateway request held in memory (held.go), as
// queued, under the quotas that the stored ones meet (quotaLocked).
func (c *storeCounts) admitHeld(r requestRow, max, addrMax int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.quotaLocked(r, max, addrMax); err != nil {
		return err
	}
	c.heldLocked(r, 1)
	return nil
}

// heldQueue records a held request r queued again (n = 1: its lease ran
// out) or no longer queued (n = -1).
func (c *storeCounts) heldQueue(r requestRow, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.heldLocked(r, n)
}

func (c *storeCounts) heldLocked(r requestRow, n int) {
	if c.heldQueued == nil {
		c.heldQueued, c.heldVia = map[string]int{}, map[string]int{}
	}
	addTo(c.heldQueued, queueOf(r.net, r.from), n)
	if k, ok := r.viaKey(); ok {
		addTo(c.heldVia, k, n)
	}
}

// queuedIn returns the requests of net stored as queued, its SimClients'
// and its gateway's.
func (c *storeCounts) queuedIn(net string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queued[net] + c.queued[queueOf(net, detachedFrom)]
}

// admitToken counts a login just inserted into net, or refuses it with
// errNetFull when net already has max logins (0: no limit).
func (c *storeCounts) admitToken(net string, max int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if max > 0 && c.tokens[net] >= max {
		c.netFull.Add(1)
		return errNetFull
	}
	c.tokens[net]++
	return nil
}

// logins returns the logins of net stored.
func (c *storeCounts) logins(net string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tokens[net]
}

// statusTotals returns the requests by stored status.
func (c *storeCounts) statusTotals() map[string]int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int64, 5)
	for _, status := range []string{statusQueued, statusDelivered, statusAnswered, statusExpired, statusFailed} {
		out[status] = c.byStatus[status]
	}
	return out
}

// queryer is the writer's *sql.DB at open, or its transaction later.
type queryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// count counts everything from the file: once at open, and again only
// after another process wrote or a commit failed. Each query reads an index
// or the tokens table; only the finished requests, which their retention
// keeps few, are read row by row. With a million requests queued it takes
// 0.1 to 0.15 s here, nearly all of it walking the requests_queue index.
func (s *store) count(ctx context.Context, q queryer) error {
	byStatus := map[string]int64{}
	queued := map[string]int{}
	tokens := map[string]int{}
	topics := map[string]int{}
	usage, err := countRequestUsage(ctx, q)
	if err != nil {
		return err
	}
	msgAddr, err := countMessageUsage(ctx, q)
	if err != nil {
		return err
	}
	var version int64
	each := func(query string, fn func(rows *sql.Rows) error) error { return eachRow(ctx, q, query, nil, fn) }
	err = each(`SELECT net, from_peer = 'via', count(*) FROM requests WHERE status = 'queued' GROUP BY 1, 2`, func(rows *sql.Rows) error {
		var net string
		var via bool
		var n int
		err := rows.Scan(&net, &via, &n)
		from := ""
		if via {
			from = detachedFrom
		}
		queued[queueOf(net, from)] = n
		byStatus[statusQueued] += int64(n)
		return err
	})
	if err == nil {
		err = each(`SELECT count(*) FROM requests WHERE status = 'delivered'`, func(rows *sql.Rows) error {
			var n int64
			err := rows.Scan(&n)
			byStatus[statusDelivered] = n
			return err
		})
	}
	if err == nil {
		err = each(`SELECT status, count(*) FROM requests INDEXED BY requests_done
			WHERE status IN ('answered', 'expired', 'failed') GROUP BY status`, func(rows *sql.Rows) error {
			var status string
			var n int64
			err := rows.Scan(&status, &n)
			byStatus[status] = n
			return err
		})
	}
	if err == nil {
		err = each(`SELECT net, count(*) FROM tokens GROUP BY net`, func(rows *sql.Rows) error {
			var net string
			var n int
			err := rows.Scan(&net, &n)
			tokens[net] = n
			return err
		})
	}
	if err == nil {
		err = each(`SELECT net, topic, count(*) FROM subscriptions WHERE until_id IS NULL GROUP BY net, topic`, func(rows *sql.Rows) error {
			var net, topic string
			var n int
			err := rows.Scan(&net, &topic, &n)
			topics[topicKey(net, topic)] = n
			return err
		})
	}
	if err == nil {
		err = each(`PRAGMA data_version`, func(rows *sql.Rows) error { return rows.Scan(&version) })
	}
	if err != nil {
		return err
	}
	c := &s.counts
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byStatus, c.queued, c.tokens, c.topics, c.usage, c.msgAddr, c.dataVersion = byStatus, queued, tokens, topics, usage, msgAddr, version
	c.stale.Store(false)
	return nil
}

// syncCounts counts again if a commit failed or another process has
// written to the file since the last count. The janitor calls it.
func (s *store) syncCounts(ctx context.Context) error {
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		var version int64
		if err := tx.QueryRowContext(ctx, `PRAGMA data_version`).Scan(&version); err != nil {
			return err
		}
		s.counts.mu.Lock()
		same := version == s.counts.dataVersion && version >= 0 // PostgreSQL's is -1: always count again
		s.counts.mu.Unlock()
		if same && !s.counts.stale.Load() {
			return nil
		}
		if !same {
			// Another process wrote (purge, `c2cvia net`): a claim may
			// have been released or re-keyed.
			s.netKeys.Clear()
		}
		s.counts.recounts.Add(1)
		return s.count(ctx, tx)
	})
}
