// Logins and keys in the store: SimClients' tokens (created at login, read
// on every call, cached in memory) and SimServers' keys (the first key to
// use a net claims it), and when each was last seen.

package main

import (
	"context"
	"crypto/subtle"
	"database/sql"
	"errors"
	"sync/atomic"
	"time"
)

// tokenStatements are the prepared statements of logins and keys.
func tokenStatements(q *statements, w, r *sql.DB) []statement {
	return []statement{
		{&q.insertToken, w, `INSERT INTO tokens (token_hash, peer_id, net, created_at, expires_at, last_seen_at, msg_floor)
			VALUES (?1, ?2, ?3, ?4, ?5, ?4, ` + lastMessageIDSQL + `) RETURNING msg_floor`},
		{&q.insertLogin, w, `INSERT INTO tokens (token_hash, peer_id, net, created_at, expires_at, last_seen_at, msg_floor, addr)
			VALUES (?1, ?2, ?3, ?4, ?5, ?4, ` + lastMessageIDSQL + `, ?6) RETURNING msg_floor`},
		{&q.touchToken, w, `UPDATE tokens SET last_seen_at = ?1 WHERE token_hash = ?2 AND last_seen_at < ?1`},
		{&q.claimNet, w, `INSERT INTO nets (name, key_hash, claimed_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING`},
		{&q.claimedKey, w, `SELECT key_hash FROM nets WHERE name = ?`},
		{&q.touchNet, w, `UPDATE nets SET last_poll_at = ? WHERE name = ?`},
		{&q.idlestLogin, w, `SELECT token_hash, peer_id FROM tokens WHERE net = ?1 AND last_seen_at < ?2
			ORDER BY last_seen_at LIMIT 1`},
		// The address holding the most logins of net ?1, address ?2 first
		// among equals: one pass over the net's entries of tokens_addr.
		{&q.busiestAddr, w, `SELECT addr FROM tokens WHERE net = ?1 GROUP BY addr
			ORDER BY count(*) DESC, addr = ?2 DESC LIMIT 1`},
		{&q.idlestOfAddr, w, `SELECT token_hash, peer_id FROM tokens WHERE net = ?1 AND addr = ?2
			ORDER BY last_seen_at LIMIT 1`},
		{&q.dropLogin, w, `DELETE FROM tokens WHERE token_hash = ?`},
		{&q.dropSubscriptions, w, `DELETE FROM subscriptions WHERE peer_id = ? RETURNING net, topic, until_id IS NULL`},

		{&q.tokenByHash, r, `SELECT peer_id, net, expires_at, msg_floor FROM tokens WHERE token_hash = ?`},
		{&q.netKey, r, `SELECT key_hash FROM nets WHERE name = ?`},
	}
}

// token is a logged-in SimClient, or a result token (pushDetached).
type token struct {
	Hash      []byte
	PeerID    string
	Net       string
	ExpiresAt int64
	MsgFloor  int64 // the highest message id at login: later broadcasts reach it
}

// readOnly reports whether t is a result token: it is in no net, and only
// reads the one request it owns.
func (t token) readOnly() bool { return t.Net == "" }

// loginIdle is how long a login must have made no call for a new login to
// take its slot in a net at --max-peers: peerRecent (5 minutes), when it
// also leaves the peers list. A client that listens is seen at least every
// --max-wait (its long poll) or 15 s (its stream's keep-alive).
const loginIdle = peerRecent

// createToken logs a SimClient into net from the client address addr
// (addrKey's form; "" when unknown) and returns its secret token.
//
// A net at --max-peers makes room when it can, by deleting a login (its
// next call is 401 unknown_token, and it logs in again) with its
// subscriptions: first the login idle the longest, if one has made no call
// for loginIdle; else the idlest login of the address that holds the most
// of the net's logins, if that is more than addr would hold with the new
// one. So one address cannot keep a net to itself by keeping its logins
// busy: every other address can always get in up to an equal share, while
// an address alone in a net (a NAT) may fill it. With no room, the login
// is errNetFull.
func (s *store) createToken(ctx context.Context, net, addr string) (secret string, t token, err error) {
	secret = newToken()
	now := s.nowMS()
	t = token{Hash: secretHash(secret), PeerID: newPeerID(), Net: net, ExpiresAt: now + s.opts.TokenTTL.Milliseconds()}
	var evicted []byte
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		evicted = nil
		if err := s.syncQuotas(ctx, tx, t.Net); err != nil {
			return err
		}
		if err := s.admitBytes(ctx, tx, "", loginBytes); err != nil {
			return err
		}
		// Inside the writer, the highest message id is exact.
		if err := tx.StmtContext(ctx, s.q.insertLogin).QueryRowContext(ctx, t.Hash, t.PeerID, t.Net, now, t.ExpiresAt, addr).Scan(&t.MsgFloor); err != nil {
			return err
		}
		if max := s.opts.MaxPeers; max > 0 && s.counts.logins(t.Net) >= max {
			var peer string
			var err error
			evicted, peer, err = s.loginToEvict(ctx, tx, t.Net, addr, now)
			if err != nil {
				return err
			}
			return s.evictLogin(ctx, tx, evicted, peer) // one login out, one in: the logins stay
		}
		return s.counts.admitToken(t.Net, 0)
	})
	if err != nil {
		return "", token{}, err
	}
	s.busiest.Delete(net) // the net's logins changed
	if evicted != nil {
		s.forgetToken(evicted)
	}
	s.cacheToken(t)
	s.noteSeen(t, now) // login wrote last_seen_at
	return secret, t, nil
}

// busiestSeen is, for a full net, the address found holding the most of
// its logins when a login from it was refused, and when (ms).
type busiestSeen struct {
	addr string
	at   int64
}

// busiestFor is how long a net's busiest address is taken as found: 1 s,
// unless a login or a purge changes the net's logins first. Finding it
// reads every login of the net (2 ms for 10,000): the address that fills
// a net, trying again and again, is refused without reading them.
const busiestFor = time.Second

// loginToEvict picks the login of a full net that a new login from addr,
// just inserted, takes the slot of (createToken), or errNetFull.
func (s *store) loginToEvict(ctx context.Context, tx *sql.Tx, net, addr string, now int64) (hash []byte, peer string, err error) {
	err = tx.StmtContext(ctx, s.q.idlestLogin).QueryRowContext(ctx, net, now-loginIdle.Milliseconds()).Scan(&hash, &peer)
	if !errors.Is(err, sql.ErrNoRows) {
		return hash, peer, err
	}
	if v, ok := s.busiest.Load(net); ok && v.(busiestSeen).addr == addr && now-v.(busiestSeen).at < busiestFor.Milliseconds() {
		s.counts.netFull.Add(1)
		return nil, "", errNetFull
	}
	var busiest string
	if err := tx.StmtContext(ctx, s.q.busiestAddr).QueryRowContext(ctx, net, addr).Scan(&busiest); err != nil {
		return nil, "", err
	}
	if busiest == addr { // no address holds more than addr now does
		s.busiest.Store(net, busiestSeen{addr: addr, at: now})
		s.counts.netFull.Add(1)
		return nil, "", errNetFull
	}
	if err := tx.StmtContext(ctx, s.q.idlestOfAddr).QueryRowContext(ctx, net, busiest).Scan(&hash, &peer); err != nil {
		return nil, "", err
	}
	s.loginsShared.Add(1)
	return hash, peer, nil
}

// evictLogin deletes the login hash (peer_id peer) and its subscriptions
// inside a write, and counts the open ones closed.
func (s *store) evictLogin(ctx context.Context, tx *sql.Tx, hash []byte, peer string) error {
	if _, err := tx.StmtContext(ctx, s.q.dropLogin).ExecContext(ctx, hash); err != nil {
		return err
	}
	closed := newCountsDelta()
	err := eachStmtRow(ctx, tx.StmtContext(ctx, s.q.dropSubscriptions), []any{peer}, func(rows *sql.Rows) error {
		var net, topic string
		var open bool
		err := rows.Scan(&net, &topic, &open)
		if open {
			closed.topics[topicKey(net, topic)]--
		}
		return err
	})
	if err == nil {
		s.counts.apply(closed)
	}
	return err
}

// loginBytes is what a login costs the storage budget: its row and index
// entries take about half of it.
const loginBytes = 1 << 10

// lookupToken returns the SimClient a secret token belongs to.
func (s *store) lookupToken(ctx context.Context, secret string) (token, error) {
	hash := secretHash(secret)
	var t token
	if v, ok := s.tokens.Load(string(hash)); ok {
		t = v.(token)
	} else {
		err := s.q.tokenByHash.QueryRowContext(ctx, hash).Scan(&t.PeerID, &t.Net, &t.ExpiresAt, &t.MsgFloor)
		if errors.Is(err, sql.ErrNoRows) {
			return token{}, errUnknownToken
		}
		if err != nil {
			return token{}, err
		}
		t.Hash = hash
		s.cacheToken(t)
	}
	if t.ExpiresAt <= s.nowMS() {
		return token{}, errTokenExpired
	}
	return t, nil
}

// maxCachedTokens bounds the token cache: 100,000 logins take about 15 MB.
// Past it, tokens are read from the store (an indexed read, ~10 µs).
const maxCachedTokens = 100_000

func (s *store) cacheToken(t token) {
	if s.pg || s.nTokens.Load() >= s.maxToks { // another node may drop a login
		return
	}
	if _, loaded := s.tokens.LoadOrStore(string(t.Hash), t); !loaded {
		s.nTokens.Add(1)
	}
}

// serverKey is a SimServer's key, checked against its net. claim is set
// when the net is unclaimed: the write that the call makes claims it in the
// same transaction, so a call that fails claims nothing.
type serverKey struct {
	net   string
	hash  []byte
	claim bool
}

// checkServerKey checks key for net without writing: a wrong key for a
// claimed net is refused; an unclaimed net needs a key of 16+ characters.
func (s *store) checkServerKey(ctx context.Context, net, key string) (serverKey, error) {
	k := serverKey{net: net, hash: secretHash(key)}
	var stored []byte
	if v, ok := s.netKeys.Load(net); ok {
		stored = v.([]byte)
	} else if err := s.q.netKey.QueryRowContext(ctx, net).Scan(&stored); errors.Is(err, sql.ErrNoRows) {
		if len(key) < 16 {
			return serverKey{}, errKeyTooShort
		}
		k.claim = true
		return k, nil
	} else if err != nil {
		return serverKey{}, err
	}
	if !s.pg { // other nodes may release a claim
		s.netKeys.Store(net, stored) // claims never change: cache them
	}
	if subtle.ConstantTimeCompare(stored, k.hash) != 1 {
		return serverKey{}, errWrongKey
	}
	return k, nil
}

// claimIn claims k's net inside a write, if k needs it. Another key may
// have claimed the net since checkServerKey: then it is the wrong key.
func (s *store) claimIn(ctx context.Context, tx *sql.Tx, k serverKey) error {
	if !k.claim {
		return nil
	}
	res, err := tx.StmtContext(ctx, s.q.claimNet).ExecContext(ctx, k.net, k.hash, s.nowMS())
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 1 {
		if claimed, ok := ctx.Value(claimsKey{}).(*[]string); ok {
			*claimed = append(*claimed, k.net) // logged once committed (writer.commit)
		}
	}
	var stored []byte
	if err := tx.StmtContext(ctx, s.q.claimedKey).QueryRowContext(ctx, k.net).Scan(&stored); err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(stored, k.hash) != 1 {
		return errWrongKey
	}
	return nil
}

// claimNet claims k's net now, if k needs it (checkServerKey). Only the
// key's hash is stored.
func (s *store) claimNet(ctx context.Context, k serverKey) error {
	if !k.claim {
		return nil
	}
	return s.write(ctx, func(ctx context.Context, tx *sql.Tx) error { return s.claimIn(ctx, tx, k) })
}

// touchNet records that a SimServer polled net, at most once a second.
func (s *store) touchNet(net string) {
	now := s.nowMS()
	if v, ok := s.lastPoll.Load(net); ok && now-v.(int64) < 1000 {
		return
	}
	s.lastPoll.Store(net, now)
	s.writeLater(func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.StmtContext(ctx, s.q.touchNet).ExecContext(ctx, now, net)
		return err
	})
}

// served reports whether a SimServer of net has polled within d, as this
// relay saw it (touchNet, in memory).
func (s *store) served(net string, d time.Duration) bool {
	v, ok := s.lastPoll.Load(net)
	if ok && s.nowMS()-v.(int64) <= d.Milliseconds() {
		return true
	}
	if !s.pg {
		return false
	}
	// A SimServer may poll another node: what the nodes wrote down.
	var at sql.NullInt64
	err := s.r.QueryRow(`SELECT last_poll_at FROM nets WHERE name = ?`, net).Scan(&at)
	return err == nil && at.Valid && s.nowMS()-at.Int64 <= d.Milliseconds()
}

// servedWithin is how recently a net's SimServer must have polled for the
// net to count as served: twice --max-wait, since a poll is written down
// when it starts and when it ends, at most once a second.
func servedWithin(maxWait time.Duration) time.Duration { return 2*maxWait + time.Second }

// forgetToken drops a deleted login from the in-memory caches.
func (s *store) forgetToken(hash []byte) {
	if _, loaded := s.tokens.LoadAndDelete(string(hash)); loaded {
		s.nTokens.Add(-1)
	}
	if _, loaded := s.seen.LoadAndDelete(string(hash)); loaded {
		s.nSeen.Add(-1)
	}
}

// forgetExpiredTokens drops expired tokens from the in-memory caches.
func (s *store) forgetExpiredTokens() {
	now := s.nowMS()
	s.tokens.Range(func(k, v any) bool {
		if v.(token).ExpiresAt <= now {
			if _, loaded := s.tokens.LoadAndDelete(k); loaded {
				s.nTokens.Add(-1)
			}
		}
		return true
	})
	s.seen.Range(func(k, v any) bool {
		if v.(*lastSeen).expiresAt <= now {
			if _, loaded := s.seen.LoadAndDelete(k); loaded {
				s.nSeen.Add(-1)
			}
		}
		return true
	})
}

// touchEvery throttles last_seen_at: at most one write a second per token.
const touchEvery = time.Second

// lastSeen is the last last_seen_at written for a token.
type lastSeen struct {
	ms        atomic.Int64
	expiresAt int64 // the token's: forgotten with it
}

// touchToken records that t made a successful call, at most once a second
// per token, without waiting for the write (like touchNet). Tokens past
// maxCachedTokens are not throttled in memory; their write checks the time.
func (s *store) touchToken(t token) {
	now := s.nowMS()
	if v, ok := s.seen.Load(string(t.Hash)); ok {
		ls := v.(*lastSeen)
		prev := ls.ms.Load()
		if now-prev < touchEvery.Milliseconds() || !ls.ms.CompareAndSwap(prev, now) {
			return
		}
	} else if !s.noteSeen(t, now) {
		return // a concurrent call of the same token writes it
	}
	s.writeLater(func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.StmtContext(ctx, s.q.touchToken).ExecContext(ctx, now, t.Hash)
		return err
	})
}

// noteSeen remembers that t's last_seen_at is written as ms, unless another
// call did first (then it reports false), or the map is full.
func (s *store) noteSeen(t token, ms int64) bool {
	if s.nSeen.Load() >= s.maxToks {
		return true
	}
	ls := &lastSeen{expiresAt: t.ExpiresAt}
	ls.ms.Store(ms)
	if _, loaded := s.seen.LoadOrStore(string(t.Hash), ls); loaded {
		return false
	}
	s.nSeen.Add(1)
	return true
}
