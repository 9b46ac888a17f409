// The wake-up bus of the nodes that share one PostgreSQL store. A long poll
// waits on its node's hub (hub.go) and holds no database connection; a
// write on another node must still wake it. Each node therefore sends the
// names of the signals it notifies to the others with NOTIFY, and LISTENs
// for theirs.
//
// NOTIFY runs on a connection of its own, outside the writer's
// transactions: a NOTIFY inside a transaction takes a lock at its commit
// that serialises every writer of the database. The names notified while
// one NOTIFY is on its way are sent together by the next, so a burst of
// writes costs a few NOTIFYs. A payload holds at most 8,000 bytes: it
// carries signal names, never data, and each waiter woken reads the store.
//
// A node whose listening connection is lost reconnects, and then wakes
// every waiter it holds: it cannot know what it missed, and each wait then
// looks at the store again, so none waits longer than its own timeout.

package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
)

// The NOTIFY channel of the nodes' wake-ups is c2cvia_ and a hash of the
// database and schema the store is in (busChannel): relays of two stores
// in one database do not wake each other.

// pgPayloadMax is the most bytes one NOTIFY carries: PostgreSQL refuses
// payloads of 8,000 bytes or more.
const pgPayloadMax = 7900

// listenAppName is the application_name of a node's listening connection,
// so that an operator (or a test) can find it in pg_stat_activity.
const listenAppName = "c2cvia listen"

// pgBus carries a node's hub signals to the other nodes of its database and
// theirs to it.
type pgBus struct {
	url     string
	channel string // the NOTIFY channel (busChannel)
	node    string // this node's id: its own NOTIFYs come back to it, and are skipped
	hub     *hub
	log     *slog.Logger

	mu      sync.Mutex
	pending map[string]int64 // signal name -> when to wake, Unix ms; 0: now
	kick    chan struct{}    // a name is pending

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	sent, received, reconnects atomic.Int64 // NOTIFYs sent, others' wake-ups received, listening connections made again
	listening                  atomic.Bool  // the listening connection is up
}

// startPGBus connects hub to the other nodes on the database at url. It
// returns once the node listens, so that no wake-up sent after a write it
// can see is missed; it retries in the background after that.
func startPGBus(ctx context.Context, log *slog.Logger, url string, h *hub) (*pgBus, error) {
	id := make([]byte, 8)
	rand.Read(id)
	b := &pgBus{url: url, node: hex.EncodeToString(id), hub: h, log: log,
		pending: map[string]int64{}, kick: make(chan struct{}, 1)}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	conn, err := b.listen(ctx)
	if err == nil {
		var db, schema string
		if err = conn.QueryRow(ctx, `SELECT current_database(), current_schema()`).Scan(&db, &schema); err == nil {
			b.channel = busChannel(db, schema)
			_, err = conn.Exec(ctx, `LISTEN `+b.channel)
		}
		if err != nil {
			conn.Close(context.Background())
		}
	}
	if err != nil {
		b.cancel()
		return nil, err
	}
	forward := b.forward
	h.forward.Store(&forward)
	b.wg.Go(func() { b.listenLoop(conn) })
	b.wg.Go(b.sendLoop)
	return b, nil
}

// close stops the bus: the hub no longer forwards, and both connections
// close.
func (b *pgBus) close() {
	b.hub.forward.Store(nil)
	b.cancel()
	b.wg.Wait()
}

// forward queues a signal for the other nodes; at is when its waiters
// should wake (notifyAt), zero for now.
func (b *pgBus) forward(name string, at time.Time) {
	ms := int64(0)
	if !at.IsZero() {
		ms = at.UnixMilli()
	}
	b.mu.Lock()
	if old, ok := b.pending[name]; !ok || old != 0 && (ms == 0 || ms < old) {
		b.pending[name] = ms
	}
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// take empties the pending signals into payloads of at most pgPayloadMax
// bytes: the node's id, then one line per signal, its wake time (empty for
// now) and its name in base64 (names hold token hashes, which are bytes).
func (b *pgBus) take() []string {
	b.mu.Lock()
	pending := b.pending
	b.pending = make(map[string]int64, len(pending))
	b.mu.Unlock()
	var out []string
	var p strings.Builder
	for name, at := range pending {
		line := base64.RawStdEncoding.EncodeToString([]byte(name))
		if at != 0 {
			line = strconv.FormatInt(at, 10) + " " + line
		}
		if p.Len() > 0 && p.Len()+1+len(line) > pgPayloadMax {
			out = append(out, p.String())
			p.Reset()
		}
		if p.Len() == 0 {
			p.WriteString(b.node)
		}
		p.WriteByte('\n')
		p.WriteString(line)
	}
	if p.Len() > 0 {
		out = append(out, p.String())
	}
	return out
}

// sendLoop sends the pending signals on a connection of its own, retrying
// with a new connection when one fails.
func (b *pgBus) sendLoop() {
	var conn *pgx.Conn
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for failures := 0; ; {
		select {
		case <-b.ctx.Done():
			return
		case <-b.kick:
		}
		payloads := b.take()
		for i := 0; i < len(payloads); {
			if conn == nil {
				cfg, err := pgConfig(b.url)
				if err != nil {
					return
				}
				c, err := pgx.ConnectConfig(b.ctx, cfg)
				if err != nil {
					if !b.pause(&failures, "connect to send wake-ups", err) {
						return
					}
					continue
				}
				conn = c
			}
			if _, err := conn.Exec(b.ctx, `SELECT pg_notify($1, $2)`, b.channel, payloads[i]); err != nil {
				conn.Close(context.Background())
				conn = nil
				if !b.pause(&failures, "send wake-ups", err) {
					return
				}
				continue
			}
			failures = 0
			b.sent.Add(1)
			i++
		}
	}
}

// pause waits before a connection is tried again: 50 ms doubling to 2 s.
// It reports false once the bus is closing.
func (b *pgBus) pause(failures *int, what string, err error) bool {
	if b.ctx.Err() != nil {
		return false
	}
	if *failures == 0 {
		b.log.Warn("postgres wake-ups", "op", what, "err", err)
	}
	d := min(2*time.Second, 50*time.Millisecond<<min(*failures, 6))
	*failures++
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-b.ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// listen opens the listening connection.
func (b *pgBus) listen(ctx context.Context) (*pgx.Conn, error) {
	cfg, err := pgConfig(b.url)
	if err != nil {
		return nil, err
	}
	cfg.RuntimeParams["application_name"] = listenAppName
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if b.channel != "" {
		if _, err := conn.Exec(ctx, `LISTEN `+b.channel); err != nil {
			conn.Close(context.Background())
			return nil, err
		}
	}
	b.listening.Store(true)
	return conn, nil
}

// listenLoop wakes this node's waiters for the other nodes' signals, and
// listens again when its connection is lost.
func (b *pgBus) listenLoop(conn *pgx.Conn) {
	defer func() {
		if conn != nil {
			conn.Close(context.Background())
		}
	}()
	for failures := 0; ; {
		n, err := conn.WaitForNotification(b.ctx)
		if err != nil {
			b.listening.Store(false)
			conn.Close(context.Background())
			conn = nil
			for conn == nil {
				if !b.pause(&failures, "listen for wake-ups", err) {
					return
				}
				if conn, err = b.listen(b.ctx); err == nil {
					b.reconnects.Add(1)
					// What the others sent meanwhile is lost: every wait
					// looks at the store again.
					b.hub.wakeAll()
				}
			}
			failures = 0
			continue
		}
		b.deliver(n.Payload)
	}
}

// busChannel is the NOTIFY channel of a store: c2cvia_ and 16 hex digits
// of the SHA-256 of its database and schema names.
func busChannel(db, schema string) string {
	sum := sha256.Sum256([]byte(db + "\x00" + schema))
	return "c2cvia_" + hex.EncodeToString(sum[:8])
}

// deliver wakes the waiters that another node's payload names.
func (b *pgBus) deliver(payload string) {
	node, rest, _ := strings.Cut(payload, "\n")
	if node == b.node {
		return
	}
	b.received.Add(1)
	now := b.hub.clock.Now()
	for line := range strings.SplitSeq(rest, "\n") {
		at := int64(0)
		if when, name, ok := strings.Cut(line, " "); ok {
			at, _ = strconv.ParseInt(when, 10, 64)
			line = name
		}
		name, err := base64.RawStdEncoding.DecodeString(line)
		if err != nil {
			continue
		}
		if d := time.UnixMilli(at).Sub(now); at != 0 && d > 0 {
			b.hub.wakeAt(string(name), d)
		} else {
			b.hub.wake(string(name))
		}
	}
}
