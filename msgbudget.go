// The peer messages in the address budget: the data of the messages one
// client address sent counts, with the requests it sent, against its
// --max-addr-store, so that logins in many nets broadcasting from one
// address cannot fill the store and stop every write of the relay.

package main

import (
	"context"
	"database/sql"
)

// messageUsage is the bytes of data of the stored peer messages by the
// address key (addrKey) of who sent them, kept in storeCounts.msgAddr: a
// message counts from its insert to its delete (purgeMessages), and the
// file is counted again when the other counts are. Messages stored before
// schema step 8, or sent from no address, count against none. Zero
// entries are deleted: the map holds only the addresses with messages.
type messageUsage map[string]int64

// countMessageUsage counts messageUsage from the file. As for the requests
// (countUsage), octet_length reads a message's size from its record without
// reading its data, but only outside a GROUP BY's sorter: hence the
// materialized list first.
func countMessageUsage(ctx context.Context, q queryer) (messageUsage, error) {
	u := messageUsage{}
	err := eachRow(ctx, q, `WITH m AS MATERIALIZED (SELECT addr, octet_length(data) AS bytes FROM messages WHERE addr <> '')
		SELECT addr, sum(bytes) FROM m GROUP BY addr`, nil, func(rows *sql.Rows) error {
		var addr string
		var n int64
		err := rows.Scan(&addr, &n)
		u[addr] = n
		return err
	})
	return u, err
}

// admitMessage checks, inside a write and after admitBytes, that n bytes
// of a peer message from the address key addr ("" for none: no limit)
// keep that address within --max-addr-store, its requests and messages
// together. A refusal takes back what admitBytes counted; else nothing is
// counted until the message is in (messageStored).
func (s *store) admitMessage(addr string, n int) error {
	max := s.opts.MaxAddrStore
	if max <= 0 || addr == "" {
		return nil
	}
	c := &s.counts
	c.mu.Lock()
	used := c.usage.addr[addr] + c.msgAddr[addr]
	c.mu.Unlock()
	if used+int64(n) > max {
		s.pending.Add(-int64(n)) // admitBytes counted them as written
		return errAddrStoreFull
	}
	return nil
}

// messageStored counts a message of n bytes from addr just inserted: the
// last step of its write, once nothing can fail.
func (c *storeCounts) messageStored(addr string, n int) {
	if addr == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	addTo(c.msgAddr, addr, int64(n))
}
