// The storage budget: the store refuses a write that would take its file
// past --max-store, or a net past --max-net-store, before it writes, so a
// client cannot fill the disk and stop every write of every net.

package main

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/netip"
)

func budgetStatements(q *statements, w *sql.DB) []statement {
	return []statement{
		{&q.netUsage, w, `SELECT bytes FROM net_usage WHERE net = ?`},
		{&q.dropAnswered, w, `DELETE FROM requests WHERE rid = ? AND status = 'answered'
			RETURNING net, from_peer, remote_addr, octet_length(sim_req) + coalesce(octet_length(sim_res), 0) + body_bytes - kept_from`},
	}
}

// measure reads how many bytes of the file's pages are in use (free pages
// are reused before the file grows) and starts counting anew the payload
// written since. The checkpointer calls it every CheckpointEvery; it runs
// on the checkpointer's own connection, so no write waits for it.
func (s *store) measure(ctx context.Context) error {
	// pages, free pages, page size
	var pages, free, size int64
	err := s.ckpt.QueryRowContext(ctx, measureSQL).Scan(&pages, &free, &size)
	if err != nil {
		return err
	}
	s.used.Store((pages - free) * size)
	s.pending.Store(0)
	return nil
}

// measureSQL reads the file's pages, its free pages and their size.
const measureSQL = `SELECT (SELECT page_count FROM pragma_page_count()),
	(SELECT freelist_count FROM pragma_freelist_count()), (SELECT page_size FROM pragma_page_size())`

// admitBytes checks, inside a write and before it writes, that n more
// payload bytes for net keep the store within --max-store and the net
// within --max-net-store (net "" is checked against the store's budget
// only), and counts them as written. The file's size is the last
// measure's, plus the payload written since: a second of writes at most
// goes uncounted in indexes and page slack, which the budget's headroom
// covers.
func (s *store) admitBytes(ctx context.Context, tx *sql.Tx, net string, n int) error {
	if max := s.opts.MaxStore; max > 0 && s.used.Load()+s.pending.Load()+int64(n) > max {
		return errStoreFull
	}
	if max := s.opts.MaxNetStore; max > 0 && net != "" {
		var used int64
		err := tx.StmtContext(ctx, s.q.netUsage).QueryRowContext(ctx, net).Scan(&used)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if used+int64(n) > max {
			return errNetStoreFull
		}
	}
	s.pending.Add(int64(n))
	return nil
}

// The budgets of who sent a request. A request's sim_req counts, from its
// insert to its delete, against its client address's budget across the
// store (--max-addr-store, which the data of the peer messages the address
// sent shares: msgbudget.go), against its net's while nobody serves the
// net (--max-unserved-store), and if it came through the gateway, against
// the gateway's half of its net's budget and the sender's share of that
// (--via-addr-share). Each is refused before the write, from counts kept
// in memory (requestUsage), so it costs no query. While queued it counts
// against its sender's share of its queue (--via-addr-share of
// --max-queue, in the gateway's queue or in the SimClients').

// The refusals of a gateway's budgets: the store's own errors, each for
// one part of it, so a client sees the code of the whole.
var (
	errViaStoreFull     = fmt.Errorf("%w: the net's gateway requests are at their half of its budget", errNetStoreFull)
	errViaAddrStoreFull = fmt.Errorf("%w: its gateway requests to the net are at its share of their budget", errAddrStoreFull)
	errViaAddrQueueFull = fmt.Errorf("%w: the client address's gateway requests queued in it are at its share", errQueueFull)
)

// requestRow is what the budgets know of one stored request.
type requestRow struct {
	net, from string
	remote    string // remote_addr: "IP:port", or "" (stored before step 4)
	queued    bool   // stored as queued
	bytes     int64  // of its sim_req, its sim_res, and its streamed answer's parts stored
}

// addr is the key of r's client address (addrKey): "" when remote_addr
// holds none, and then no address budget applies.
func (r requestRow) addr() string { return senderKey(r.remote) }

// viaKey names r's sender in its net's gateway; ok is false for a request
// that did not come through the gateway, or has no address.
func (r requestRow) viaKey() (string, bool) {
	a := r.addr()
	if r.from != detachedFrom || a == "" {
		return "", false
	}
	return r.net + "\x00" + a, true
}

// senderKey is the address key (addrKey) of a remote_addr, "IP:port";
// "" if it holds no address.
func senderKey(remote string) string {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return ""
	}
	return addrKey(ap.Addr().Unmap().WithZone("")).String()
}

// requestUsage is what the stored requests take, by who sent them: bytes
// of sim_req by net, by address (all nets together), and for the
// gateway's requests by net and by net and address (viaKey), with the
// requests queued by net and address, the gateway's (viaKey) and the
// SimClients' (clientKey) apart. Zero entries are deleted: the maps hold
// only who has requests stored.
type requestUsage struct {
	net          map[string]int64 // net -> bytes
	addr         map[string]int64 // address key -> bytes
	via          map[string]int64 // net -> bytes of its gateway requests
	viaAddr      map[string]int64 // viaKey -> bytes
	viaQueued    map[string]int   // viaKey -> gateway requests stored as queued
	clientQueued map[string]int   // clientKey -> SimClient requests stored as queued (addrqueue.go)
}

func newRequestUsage() requestUsage {
	return requestUsage{net: map[string]int64{}, addr: map[string]int64{}, via: map[string]int64{},
		viaAddr: map[string]int64{}, viaQueued: map[string]int{}, clientQueued: map[string]int{}}
}

// add counts n requests like r stored (n < 0: deleted).
func (u requestUsage) add(r requestRow, n int) {
	b := r.bytes * int64(n)
	addTo(u.net, r.net, b)
	if a := r.addr(); a != "" {
		addTo(u.addr, a, b)
	}
	if r.from == detachedFrom {
		addTo(u.via, r.net, b)
	}
	if k, ok := r.viaKey(); ok {
		addTo(u.viaAddr, k, b)
		if r.queued {
			addTo(u.viaQueued, k, n)
		}
	}
	if k, ok := r.clientKey(); ok && r.queued {
		addTo(u.clientQueued, k, n)
	}
}

// unqueue counts a request like r moved on from queued (handed out,
// expired or answered) but still stored.
func (u requestUsage) unqueue(r requestRow) {
	if k, ok := r.viaKey(); ok {
		addTo(u.viaQueued, k, -1)
	}
	if k, ok := r.clientKey(); ok {
		addTo(u.clientQueued, k, -1)
	}
}

// apply adds the changes d counted (a purge's: a delta, whose entries
// are mostly negative).
func (u requestUsage) apply(d requestUsage) {
	for _, pair := range []struct{ m, d map[string]int64 }{{u.net, d.net}, {u.addr, d.addr}, {u.via, d.via}, {u.viaAddr, d.viaAddr}} {
		for k, n := range pair.d {
			addTo(pair.m, k, n)
		}
	}
	for _, pair := range []struct{ m, d map[string]int }{{u.viaQueued, d.viaQueued}, {u.clientQueued, d.clientQueued}} {
		for k, n := range pair.d {
			addTo(pair.m, k, n)
		}
	}
}

// addTo adds n to m[k], deleting the entry once it is zero. A delta's
// entries may be negative; the counts themselves never are.
func addTo[N int | int64](m map[string]N, k string, n N) {
	if m[k] += n; m[k] == 0 {
		delete(m, k)
	}
}

// countUsage counts requestUsage from the file: once at open, and again
// when the other counts are (storeCounts). octet_length reads a sim_req's
// size from its record without reading it, but only outside a GROUP BY's
// sorter: hence the materialized list first (1,000 requests of 1 MiB: 2 ms,
// against 5 s for the plain GROUP BY).
func countUsage(ctx context.Context, q queryer) (requestUsage, error) {
	u := newRequestUsage()
	err := eachRow(ctx, q, `WITH r AS MATERIALIZED (
			SELECT net, from_peer = 'via' AS via, remote_addr, status = 'queued' AS queued, octet_length(sim_req) + coalesce(octet_length(sim_res), 0) + body_bytes - kept_from AS bytes FROM requests)
		SELECT net, via, remote_addr, queued, count(*), sum(bytes) FROM r GROUP BY 1, 2, 3, 4`, nil, func(rows *sql.Rows) error {
		var r requestRow
		var via, queued bool
		var n int
		if err := rows.Scan(&r.net, &via, &r.remote, &queued, &n, &r.bytes); err != nil {
			return err
		}
		if via {
			r.from = detachedFrom
		}
		// The group's bytes as one request's, and its queued count apart.
		u.add(r, 1)
		if k, ok := r.viaKey(); ok && queued {
			addTo(u.viaQueued, k, n)
		}
		return nil
	})
	return u, err
}

// unqueued counts a request like r handed out of its queue (a lease).
func (c *storeCounts) unqueued(r requestRow) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.usage.unqueue(r)
}

// servedNow reports whether net counts as served for the budgets: a
// SimServer polled it within ServedWithin.
func (s *store) servedNow(net string) bool {
	return s.opts.ServedWithin > 0 && s.served(net, s.opts.ServedWithin)
}

// viaBudget is the sim_req bytes a net's gateway requests may store: half
// of the net's budget (--max-net-store while it is served, the smaller
// --max-unserved-store while not), so that its SimClients keep the other
// half, as they keep a queue of their own beside the gateway's (queueOf).
// 0: no limit.
func (s *store) viaBudget(served bool) int64 {
	b := s.opts.MaxNetStore
	if u := s.opts.MaxUnservedStore; !served && u > 0 && (b == 0 || u < b) {
		b = u
	}
	return b / 2
}

// viaShare is the part of a gateway budget (bytes or queued requests) one
// client address may take: --via-addr-share of it, at least 1; 0 for no
// share (a budget of 0, or a share of 0 or 1).
func (s *store) viaShare(budget int64) int64 {
	share := s.opts.ViaAddrShare
	if budget <= 0 || share <= 0 || share >= 1 {
		return 0
	}
	return max(1, int64(share*float64(budget)))
}

// admitSender checks, inside a write and before it writes, that the
// request r keeps its sender within the budgets of who sent it. It runs
// after admitBytes, and takes back what that counted when it refuses;
// else it counts nothing: admitRequest does, once the request is in.
func (s *store) admitSender(r requestRow) error {
	err := s.senderRefusal(r)
	if err != nil {
		s.pending.Add(-r.bytes) // admitBytes counted them as written
	}
	return err
}

// senderRefusal is why r would take its sender past a budget of who sent
// it (errAddrStoreFull, errUnservedStoreFull, errViaStoreFull,
// errViaAddrStoreFull), or nil.
func (s *store) senderRefusal(r requestRow) error {
	served := s.servedNow(r.net)
	c := &s.counts
	c.mu.Lock()
	defer c.mu.Unlock()
	u := c.usage
	if max, a := s.opts.MaxAddrStore, r.addr(); max > 0 && a != "" && u.addr[a]+c.msgAddr[a]+r.bytes > max {
		return errAddrStoreFull
	}
	if max := s.opts.MaxUnservedStore; max > 0 && !served && u.net[r.net]+r.bytes > max {
		return errUnservedStoreFull
	}
	if r.from != detachedFrom {
		return nil
	}
	budget := s.viaBudget(served)
	if budget > 0 && u.via[r.net]+r.bytes > budget {
		return errViaStoreFull
	}
	if k, ok := r.viaKey(); ok {
		if share := s.viaShare(budget); share > 0 && u.viaAddr[k]+r.bytes > share {
			return errViaAddrStoreFull
		}
	}
	return nil
}

// dropAnswered deletes the answered request rid whose answer the one
// caller who could read it has in hand: a synchronous gateway request,
// whose owner token was never stored (pushDetached without keep), so that
// nobody can read it again. It stops taking budget at once rather than
// after --res-ttl. Not waited for: a later write sees it (writeLater), and
// a crash before it leaves the request to the janitor.
func (s *store) dropAnswered(rid string) {
	s.writeLater(func(ctx context.Context, tx *sql.Tx) error {
		var r requestRow
		err := tx.StmtContext(ctx, s.q.dropAnswered).QueryRowContext(ctx, rid).Scan(&r.net, &r.from, &r.remote, &r.bytes)
		if errors.Is(err, sql.ErrNoRows) {
			return nil // purged already
		}
		if err != nil {
			return err
		}
		s.counts.mu.Lock()
		defer s.counts.mu.Unlock()
		moveRequests(s.counts.byStatus, s.counts.queued, queueOf(r.net, r.from), statusAnswered, "", 1)
		s.counts.usage.add(r, -1)
		return nil
	})
}
