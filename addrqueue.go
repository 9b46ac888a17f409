// One client address's share of a net's SimClient queue: any address may
// log in to any net, so without it one address's SimClients could fill
// --max-queue and leave the net's other SimClients 429 queue_full. Each
// address may have --via-addr-share of --max-queue queued in a net, as in
// its gateway's queue. Only pushreq meets it: the SimServer's calls never
// queue a request.

package main

import (
	"context"
	"database/sql"
	"fmt"
)

// errAddrQueueFull refuses a SimClient's request past its address's share
// of the net's queue: a queue_full, as the whole queue's.
var errAddrQueueFull = fmt.Errorf("%w: the client address's requests queued in it are at its share", errQueueFull)

// clientKey names r's sender in its net's SimClient queue; ok is false for
// a gateway request (viaKey names those), or one with no address.
func (r requestRow) clientKey() (string, bool) {
	a := r.addr()
	if r.from == detachedFrom || a == "" {
		return "", false
	}
	return r.net + "\x00" + a, true
}

// countRequestUsage counts requestUsage from the file (countUsage) with the
// SimClient requests queued by net and address: one walk of the queued
// requests, reading each one's sender.
func countRequestUsage(ctx context.Context, q queryer) (requestUsage, error) {
	u, err := countUsage(ctx, q)
	if err != nil {
		return u, err
	}
	err = eachRow(ctx, q, `SELECT net, remote_addr, count(*) FROM requests
		WHERE status = 'queued' AND from_peer <> 'via' GROUP BY net, remote_addr`, nil, func(rows *sql.Rows) error {
		var r requestRow
		var n int
		if err := rows.Scan(&r.net, &r.remote, &n); err != nil {
			return err
		}
		if k, ok := r.clientKey(); ok {
			addTo(u.clientQueued, k, n)
		}
		return nil
	})
	return u, err
}
