// Peer messaging in the store: unicast, multicast and broadcast messages
// between the logins of one net, subscriptions, and the peers seen recently.
//
// A message is one row however many peers receive it. Who may read it is a
// rule (visibleTo in msgcache.go, readMessages below in SQL): a unicast its
// addressee, a broadcast every other peer of the net logged in before it, a
// multicast every other peer subscribed to its topic when it was published
// (subscriptions are intervals of message ids). Each reader keeps its own
// cursor, the id of the last message it read.

package main

import (
	"context"
	"database/sql"
	"encoding/json"
	"time"
)

// peerRecent is how recently a peer must have made a successful call to be
// listed by GET /api/v1/peer/peers: 5 minutes, several long polls (at most
// --max-wait, 60 s by default) of a peer that is only listening.
const peerRecent = 5 * time.Minute

// maxPageBytes bounds what one reply of a page carries: the messages of a
// pullsmart page or a stream's write, the requests of a pullreqsmart. A
// page stops before the item that would take it past 256 KiB, but always
// holds at least one, so a reply is at most 256 KiB or one item (up to
// --max-msg or --max-body). 256 KiB is four messages of the largest default
// size, far more than a reader that keeps up needs, and bounds what a
// client that does not read pins for --write-timeout.
const maxPageBytes = 256 << 10

// checkCursor refuses a reader's cursor past the highest message id this
// store has given: the store was restored from a backup or replaced, and
// reading on from the cursor would hide the messages that get the ids
// between (errCursorAhead: the reader starts over, without a cursor).
func (s *store) checkCursor(ctx context.Context, since int64) error {
	last := s.msgs.lastID()
	if s.pg && since > last {
		// Other nodes give ids too: the database knows the highest.
		if err := s.q.lastMessageID.QueryRowContext(ctx).Scan(&last); err != nil {
			return err
		}
	}
	if since > last {
		return errCursorAhead
	}
	return nil
}

// lastMessageIDSQL is the highest message id ever given (AUTOINCREMENT
// keeps it in sqlite_sequence, also once those messages are deleted). Read
// inside the writer, it is exact: every write goes through the writer.
const lastMessageIDSQL = `coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0)`

func peerStatements(q *statements, w, r *sql.DB) []statement {
	return []statement{
		{&q.peerInNet, w, `SELECT EXISTS (SELECT 1 FROM tokens WHERE peer_id = ?1 AND net = ?2 AND expires_at > ?3)`},
		{&q.netPeers, w, `SELECT count(*) FROM tokens WHERE net = ?1 AND expires_at > ?2`},
		{&q.subscribedNow, w, `SELECT EXISTS (SELECT 1 FROM subscriptions
			WHERE net = ?1 AND topic = ?2 AND peer_id = ?3 AND until_id IS NULL)`},
		{&q.insertMessage, w, `INSERT INTO messages (net, kind, from_peer, to_peer, topic, data, sent_at, expires_at, receivers, addr)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`},
		{&q.subscribe, w, `INSERT INTO subscriptions (net, topic, peer_id, from_id)
			SELECT ?1, ?2, ?3, ` + lastMessageIDSQL + ` WHERE NOT EXISTS (
				SELECT 1 FROM subscriptions WHERE net = ?1 AND topic = ?2 AND peer_id = ?3 AND until_id IS NULL)`},
		{&q.unsubscribe, w, `UPDATE subscriptions SET until_id = ` + lastMessageIDSQL + `
			WHERE net = ?1 AND topic = ?2 AND peer_id = ?3 AND until_id IS NULL`},
		// The subscription rows of login ?1, counted up to ?2: one index range.
		{&q.peerSubscriptions, w, `SELECT count(*) FROM (SELECT 1 FROM subscriptions WHERE peer_id = ?1 LIMIT ?2) AS s`},
		// An interval closed where it opened holds no message.
		{&q.dropEmptySubscription, w, `DELETE FROM subscriptions
			WHERE net = ?1 AND topic = ?2 AND peer_id = ?3 AND until_id = from_id`},

		{&q.lastMessageID, r, `SELECT ` + lastMessageIDSQL},
		// A page for peer ?2 of net ?1 after cursor ?3: its unicasts, the
		// net's broadcasts after its login (?4) and the multicasts it was
		// subscribed to, each read in id order from its own index and merged.
		{&q.readMessages, r, `SELECT id, kind, from_peer, topic, data, sent_at, expires_at FROM messages
			WHERE kind = 'unicast' AND to_peer = ?2 AND id > ?3 AND net = ?1 AND expires_at > ?5
			UNION ALL
			SELECT id, kind, from_peer, topic, data, sent_at, expires_at FROM messages
			WHERE kind = 'broadcast' AND net = ?1 AND id > max(?3, ?4) AND from_peer <> ?2 AND expires_at > ?5
			UNION ALL
			SELECT id, kind, from_peer, topic, data, sent_at, expires_at FROM messages m
			WHERE kind = 'multicast' AND net = ?1 AND id > ?3 AND from_peer <> ?2 AND expires_at > ?5
			  AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.net = ?1 AND s.topic = m.topic AND s.peer_id = ?2
			              AND s.from_id < m.id AND (s.until_id IS NULL OR m.id <= s.until_id))
			ORDER BY id LIMIT ?6`},
		// The receivers of multicast ?3 on topic ?2 of net ?1 sent by ?4:
		// every other peer whose interval holds it. The same whenever it
		// is read after the publish: later intervals open above ?3.
		{&q.topicReceivers, r, `SELECT peer_id FROM subscriptions
			WHERE net = ?1 AND topic = ?2 AND from_id < ?3 AND (until_id IS NULL OR ?3 <= until_id) AND peer_id <> ?4
			ORDER BY peer_id`},
		{&q.recentPeers, r, `SELECT peer_id, last_seen_at FROM tokens
			WHERE net = ?1 AND expires_at > ?2 AND last_seen_at >= ?3
			ORDER BY last_seen_at DESC, peer_id`},
	}
}

// sendMessage stores m (Kind, and To or Topic, set) from t with data, sent
// from the client address addr (addrKey's form; "" when unknown), and
// returns its id and how many peers may read it. A unicast to a peer_id that
// is not a valid login of t's net is errUnknownPeer; data past addr's
// --max-addr-store is errAddrStoreFull (msgbudget.go). The message goes
// into the cache after its commit, in commit order.
func (s *store) sendMessage(ctx context.Context, t token, m message, data []byte, addr string) (id int64, receivers int, err error) {
	m.Net, m.From = t.Net, t.PeerID
	err = s.writeThen(ctx, func(ctx context.Context, tx *sql.Tx) (func(), error) {
		if err := s.admitBytes(ctx, tx, t.Net, len(data)); err != nil {
			return nil, err
		}
		if err := s.admitMessage(addr, len(data)); err != nil {
			return nil, err
		}
		now := s.nowMS()
		m.SentAt, m.ExpiresAt = now, now+s.opts.MsgTTL.Milliseconds()
		switch m.Kind {
		case kindUnicast:
			var ok bool
			if err := tx.StmtContext(ctx, s.q.peerInNet).QueryRowContext(ctx, m.To, t.Net, now).Scan(&ok); err != nil {
				return nil, err
			}
			if !ok {
				return nil, errUnknownPeer
			}
			receivers = 1
		case kindBroadcast:
			if err := tx.StmtContext(ctx, s.q.netPeers).QueryRowContext(ctx, t.Net, now).Scan(&receivers); err != nil {
				return nil, err
			}
			if t.ExpiresAt > now {
				receivers-- // the sender
			}
		case kindMulticast:
			// Counted, not read: the same work however many subscribe.
			// Who they are is read later, outside the writer, by the
			// first reader that needs it (loadReceivers).
			var self bool
			if err := tx.StmtContext(ctx, s.q.subscribedNow).QueryRowContext(ctx, t.Net, m.Topic, t.PeerID).Scan(&self); err != nil {
				return nil, err
			}
			if s.pg { // other nodes subscribe too: the database counts them all
				if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM subscriptions
					WHERE net = ? AND topic = ? AND until_id IS NULL`, t.Net, m.Topic).Scan(&receivers); err != nil {
					return nil, err
				}
			} else {
				receivers = s.counts.subscribers(t.Net, m.Topic)
			}
			if self {
				receivers--
			}
			m.recv = &receiversLoad{done: make(chan struct{})}
		}
		if err := s.lockNet(ctx, tx, lockMessages, m.Net); err != nil {
			return nil, err
		}
		err := tx.StmtContext(ctx, s.q.insertMessage).QueryRowContext(ctx, m.Net, m.Kind, m.From,
			nullIfEmpty(m.To), nullIfEmpty(m.Topic), string(data), m.SentAt, m.ExpiresAt, receivers, addr).Scan(&m.ID)
		if err != nil {
			return nil, err
		}
		s.counts.messageStored(addr, len(data))
		m.wire = encodeMessage(&m, data)
		cached := m
		return func() { s.msgs.append(&cached) }, nil
	})
	return m.ID, receivers, err
}

// loadReceivers reads who may read the cached multicast m, once: the first
// reader that needs them reads them on its own connection, outside the
// writer, and the others wait for it. false: the read failed or ctx ended
// first, and the caller reads SQL.
func (s *store) loadReceivers(ctx context.Context, m *message) bool {
	if !m.recv.started.CompareAndSwap(false, true) {
		select {
		case <-m.recv.done:
			return m.recv.ok
		case <-ctx.Done():
			return false
		}
	}
	s.receiverReads.Add(1)
	var receivers []string
	// Not the caller's ctx: its reader going away must not fail the read
	// for the others waiting.
	err := eachStmtRow(context.WithoutCancel(ctx), s.q.topicReceivers, []any{m.Net, m.Topic, m.ID, m.From}, func(rows *sql.Rows) error {
		var p string
		err := rows.Scan(&p)
		receivers = append(receivers, p) // sorted by the query, bytewise as Go sorts
		return err
	})
	s.msgs.setReceivers(m, receivers, err == nil)
	return err == nil
}

func nullIfEmpty(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// encodeMessage renders m as a reader gets it:
// {"id","kind","from","topic","data","sent_at"}, topic null unless multicast,
// data as stored, digit for digit.
func encodeMessage(m *message, data []byte) []byte {
	var topic *string
	if m.Kind == kindMulticast {
		topic = &m.Topic
	}
	out, _ := encodeJSON(struct {
		ID     int64           `json:"id"`
		Kind   string          `json:"kind"`
		From   string          `json:"from"`
		Topic  *string         `json:"topic"`
		Data   json.RawMessage `json:"data"`
		SentAt string          `json:"sent_at"`
	}{m.ID, m.Kind, m.From, topic, data, formatMS(m.SentAt)}) // data is valid JSON: no error
	return out
}

// subscriptionBytes is what a subscription costs the storage budget: its
// row and its two index entries take about 190 bytes.
const subscriptionBytes = 256

// subscribe opens t's subscription to topic at the current highest message
// id: multicasts after it reach t. Subscribing again changes nothing. A
// login holds at most --max-subs subscription rows: its open ones, and the
// closed ones that still hold kept messages (an unsubscribe keeps them
// until those messages expire); one more is errTooManySubs, and nothing is
// written.
func (s *store) subscribe(ctx context.Context, t token, topic string) error {
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.StmtContext(ctx, s.q.subscribe).ExecContext(ctx, t.Net, topic, t.PeerID)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil || n == 0 {
			return err
		}
		if max := s.opts.MaxSubs; max > 0 {
			var held int
			if err := tx.StmtContext(ctx, s.q.peerSubscriptions).QueryRowContext(ctx, t.PeerID, max+1).Scan(&held); err != nil {
				return err
			}
			if held > max {
				s.subsRefused.Add(1)
				return errTooManySubs // the savepoint undoes the insert
			}
		}
		if err := s.admitBytes(ctx, tx, t.Net, subscriptionBytes); err != nil {
			return err
		}
		s.counts.subscribed(t.Net, topic, 1)
		return nil
	})
}

// unsubscribe closes t's subscription to topic at the current highest
// message id; without one it changes nothing.
func (s *store) unsubscribe(ctx context.Context, t token, topic string) error {
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.StmtContext(ctx, s.q.unsubscribe).ExecContext(ctx, t.Net, topic, t.PeerID)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if _, err := tx.StmtContext(ctx, s.q.dropEmptySubscription).ExecContext(ctx, t.Net, topic, t.PeerID); err != nil {
			return err
		}
		s.counts.subscribed(t.Net, topic, -int(n))
		return nil
	})
}

// readMessages returns up to limit messages t may read after the cursor
// since, oldest first, at most maxPageBytes of them but at least one, and the cursor to read on from (see msgCache.read).
// The cache answers when since is within what it holds; SQL otherwise.
func (s *store) readMessages(ctx context.Context, t token, since int64, limit int) ([]*message, int64, error) {
	now := s.nowMS()
	for {
		page, next, ok, need := s.msgs.read(t, since, limit, now)
		if need == nil {
			if ok {
				return page, next, nil
			}
			break
		}
		if !s.loadReceivers(ctx, need) {
			break // SQL answers
		}
	}
	s.msgReads.Add(1)
	// Every message up to last is committed before the query starts, so
	// the query sees them all: with none for t, the cursor moves past last.
	last := s.msgs.lastID()
	rows, err := s.q.readMessages.QueryContext(ctx, t.Net, t.PeerID, since, t.MsgFloor, now, limit)
	if err != nil {
		return nil, 0, err
	}
	defer rows.Close()
	var page []*message
	bytes := 0
	for rows.Next() {
		m := &message{Net: t.Net}
		var topic sql.NullString
		var data string
		if err := rows.Scan(&m.ID, &m.Kind, &m.From, &topic, &data, &m.SentAt, &m.ExpiresAt); err != nil {
			return nil, 0, err
		}
		m.Topic = topic.String
		m.wire = encodeMessage(m, []byte(data))
		if bytes += len(m.wire); len(page) > 0 && bytes > maxPageBytes {
			break // the rest comes with the next page
		}
		page = append(page, m)
	}
	if err := rows.Err(); err != nil {
		return nil, 0, err
	}
	if len(page) > 0 {
		return page, page[len(page)-1].ID, nil
	}
	if s.pg {
		// Another node's message may hold an id below the highest given
		// and commit later: the cursor stays.
		return nil, since, nil
	}
	return nil, max(since, last), nil
}

// peerInfo is one peer in GET /api/v1/peer/peers.
type peerInfo struct {
	PeerID   string `json:"peer_id"`
	LastSeen string `json:"last_seen"`
}

// recentPeers lists the valid logins of t's net seen within peerRecent,
// most recent first. t itself is seen now: its own touch may not be
// committed yet.
func (s *store) recentPeers(ctx context.Context, t token) ([]peerInfo, error) {
	now := s.nowMS()
	out := []peerInfo{{PeerID: t.PeerID, LastSeen: formatMS(now)}}
	err := eachStmtRow(ctx, s.q.recentPeers, []any{t.Net, now, now - peerRecent.Milliseconds()}, func(rows *sql.Rows) error {
		var p peerInfo
		var seen int64
		if err := rows.Scan(&p.PeerID, &seen); err != nil {
			return err
		}
		if p.PeerID != t.PeerID {
			p.LastSeen = formatMS(seen)
			out = append(out, p)
		}
		return nil
	})
	return out, err
}
