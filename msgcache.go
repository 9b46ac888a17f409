// The recent-message cache: the newest peer messages of each net in memory,
// so that waking every waiting peer of a net on a broadcast reads no SQL.
// Messages are appended by the writer after their commit, in commit order,
// so the cache never skips one: for each net it holds every message with an
// id above that net's floor. A read below the floor goes to SQL.
//
// Besides each net's own bound, all nets together hold at most --msg-cache
// bytes: past it, the nets used least recently are forgotten whole (their
// floor rises past their messages), so their readers read SQL until they
// catch up. Correctness never depends on what is cached.

package main

import (
	"container/list"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
)

// Per net: 1,024 messages or 4 MiB, whichever is reached first. Enough for
// every peer that keeps up (a long poll takes up to 100 at a time) while a
// busy net costs at most a few MiB. A smaller --msg-cache lowers the bytes
// to a 16th of it, so that one net never takes the whole cache.
const (
	msgCacheMessages = 1024
	msgCacheBytes    = 4 << 20
)

// msgCacheTotal is the default bound of all nets together (--msg-cache):
// 64 MiB, 16 busy nets at their own bound or thousands of quiet ones.
const msgCacheTotal = 64 << 20

// message is one peer message as the store keeps it.
type message struct {
	ID        int64
	Net       string
	Kind      string // kindUnicast, kindMulticast or kindBroadcast
	From      string
	To        string   // unicast
	Topic     string   // multicast
	Receivers []string // multicast in the cache: who may read it, sorted, once recv is done
	SentAt    int64
	ExpiresAt int64
	wire      []byte         // the object a reader gets, encoded once for every reader
	recv      *receiversLoad // multicast in the cache: reading Receivers
	charged   int            // bytes the cache counts for it; 0: not (or no longer) cached
}

// receiversLoad reads a cached multicast's receivers once, after its
// commit and outside the writer, for the first reader that needs them;
// the readers that need them meanwhile wait for it.
type receiversLoad struct {
	started atomic.Bool
	done    chan struct{} // closed once ok and Receivers are set
	ok      bool          // Receivers was read; false: the read failed, its readers read SQL
}

const (
	kindUnicast   = "unicast"
	kindMulticast = "multicast"
	kindBroadcast = "broadcast"
)

// visibleTo reports whether t may read m (its SQL twin is the readMessages
// statement in messages.go): a unicast to it; a broadcast of its net by another peer after
// its login; a multicast by another peer while it was subscribed.
func (m *message) visibleTo(t token) bool {
	switch m.Kind {
	case kindUnicast:
		return m.To == t.PeerID
	case kindBroadcast:
		return m.From != t.PeerID && m.ID > t.MsgFloor
	case kindMulticast:
		if m.From == t.PeerID {
			return false
		}
		_, ok := slices.BinarySearch(m.Receivers, t.PeerID)
		return ok
	}
	return false
}

// size is what m costs in the cache, roughly.
func (m *message) size() int {
	n := 128 + len(m.wire) + len(m.From) + len(m.To) + len(m.Topic)
	for _, r := range m.Receivers {
		n += 16 + len(r)
	}
	return n
}

type msgCache struct {
	off      bool // caches nothing: every read goes to SQL (a store other nodes write to)
	mu       sync.RWMutex
	nets     map[string]*netMsgs
	lru      list.List // of *netMsgs: the net appended to last in front
	base     int64     // the floor of a net without an entry
	last     int64     // the highest id appended, of any net
	maxMsgs  int       // per net; tests lower them
	maxBytes int
	maxTotal int // bytes of all nets together (--msg-cache)
	bytes    int // of all nets together, as size counts them

	evictions atomic.Int64 // nets forgotten to stay within maxTotal
}

// netMsgs is one net's tail: every message of the net with an id above
// floor, oldest first.
type netMsgs struct {
	net   string
	floor int64
	msgs  []*message
	bytes int
	elem  *list.Element // in msgCache.lru
	used  atomic.Bool   // read since eviction last passed it
}

// newMsgCache starts empty above lastID, the highest message id in the
// store, and holds at most maxTotal bytes (0: msgCacheTotal).
func newMsgCache(lastID int64, maxTotal int) *msgCache {
	if maxTotal <= 0 {
		maxTotal = msgCacheTotal
	}
	return &msgCache{nets: map[string]*netMsgs{}, base: lastID, last: lastID,
		maxMsgs: msgCacheMessages, maxBytes: min(msgCacheBytes, maxTotal/16), maxTotal: maxTotal}
}

// append adds a committed message. The writer calls it in commit order, so
// ids arrive ascending.
func (c *msgCache) append(m *message) {
	if c.off {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.nets[m.Net]
	if e == nil {
		e = &netMsgs{net: m.Net, floor: c.base}
		e.elem = c.lru.PushFront(e)
		c.nets[m.Net] = e
	} else {
		c.lru.MoveToFront(e.elem)
	}
	m.charged = m.size()
	e.msgs = append(e.msgs, m)
	e.bytes += m.charged
	c.bytes += m.charged
	c.last = max(c.last, m.ID)
	c.fit(e)
}

// fit trims e to its own bound, the oldest first (the floor rises past
// them), then the cache to its total.
func (c *msgCache) fit(e *netMsgs) {
	n, b := 0, e.bytes
	for len(e.msgs)-n > c.maxMsgs || b > c.maxBytes && n < len(e.msgs) {
		b -= e.msgs[n].charged
		n++
	}
	c.trim(e, n)
	c.evict(e)
}

// setReceivers records the receivers of the cached multicast m (ok: they
// were read) and charges them to the cache.
func (c *msgCache) setReceivers(m *message, receivers []string, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	m.Receivers, m.recv.ok = receivers, ok
	close(m.recv.done)
	if m.charged == 0 {
		return // forgotten meanwhile
	}
	e := c.nets[m.Net]
	extra := m.size() - m.charged
	m.charged += extra
	e.bytes += extra
	c.bytes += extra
	c.fit(e)
}

// trim forgets e's n oldest messages; e's floor rises past them.
func (c *msgCache) trim(e *netMsgs, n int) {
	if n == 0 {
		return
	}
	for i := range n {
		e.bytes -= e.msgs[i].charged
		c.bytes -= e.msgs[i].charged
		e.msgs[i].charged = 0
		e.floor = e.msgs[i].ID
		e.msgs[i] = nil
	}
	e.msgs = slices.Clip(e.msgs[n:])
}

// evict forgets whole nets, the least recently used first, until all nets
// hold at most maxTotal bytes. Use is approximated as CLOCK does: the net
// at the back of lru (appended to longest ago) is forgotten unless it was
// read since eviction last passed it; then it goes to the front instead.
// keep, the net just appended to, is forgotten last: alone over the bound,
// it loses its oldest messages instead. Each step is O(1).
func (c *msgCache) evict(keep *netMsgs) {
	for c.bytes > c.maxTotal {
		e := c.lru.Back().Value.(*netMsgs)
		if c.lru.Len() == 1 {
			n := 0
			for b := c.bytes; b > c.maxTotal && n < len(e.msgs); n++ {
				b -= e.msgs[n].charged
			}
			c.trim(e, n)
			return
		}
		if e == keep || e.used.Swap(false) {
			c.lru.MoveToFront(e.elem)
			continue
		}
		c.forget(e)
		c.evictions.Add(1)
	}
}

// forget drops e's entry. Every net without an entry is complete above
// base, so base rises past e's messages: e's readers read SQL up to there.
func (c *msgCache) forget(e *netMsgs) {
	if len(e.msgs) > 0 {
		e.floor = e.msgs[len(e.msgs)-1].ID
	}
	for _, m := range e.msgs {
		m.charged = 0
	}
	c.base = max(c.base, e.floor)
	c.bytes -= e.bytes
	c.lru.Remove(e.elem)
	delete(c.nets, e.net)
}

// size returns the bytes all nets hold, as message.size counts them.
func (c *msgCache) size() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.bytes
}

// read returns up to limit messages of t's net after since that t may read
// and that have not expired, oldest first, at most maxPageBytes of them
// but at least one. ok is false when since is below
// what the cache holds for the net: then SQL must answer. Otherwise next is
// the id of the last message returned, or, with none, the highest id looked
// past (at least since), so the reader never scans it again. need, when
// set, is a multicast whose receivers must be read first (loadReceivers),
// and then the read asked again.
func (c *msgCache) read(t token, since int64, limit int, now int64) (page []*message, next int64, ok bool, need *message) {
	if c.off {
		return nil, 0, false, nil
	}
	c.mu.RLock()
	defer c.mu.RUnlock()
	e := c.nets[t.Net]
	floor := c.base
	if e != nil {
		floor = e.floor
	}
	if since < floor {
		return nil, 0, false, nil
	}
	if e != nil {
		e.used.Store(true)
		i := sort.Search(len(e.msgs), func(i int) bool { return e.msgs[i].ID > since })
		bytes := 0
		for _, m := range e.msgs[i:] {
			if m.ExpiresAt <= now {
				continue
			}
			if m.recv != nil && m.From != t.PeerID {
				select {
				case <-m.recv.done:
					if !m.recv.ok {
						return nil, 0, false, nil
					}
				default:
					return nil, 0, false, m
				}
			}
			if m.visibleTo(t) {
				if bytes += len(m.wire); len(page) > 0 && bytes > maxPageBytes {
					break
				}
				page = append(page, m)
				if len(page) == limit {
					break
				}
			}
		}
	}
	if len(page) > 0 {
		return page, page[len(page)-1].ID, true, nil
	}
	return nil, max(since, c.last), true, nil
}

// lastID is the highest id appended so far: every message up to it is
// committed.
func (c *msgCache) lastID() int64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.last
}

// dropExpired forgets the messages that have expired by now (the janitor
// deleted them) and the nets left without any. A forgotten net's floor goes
// into base: every net without an entry is complete above base.
func (c *msgCache) dropExpired(now int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.nets {
		n := 0
		for n < len(e.msgs) && e.msgs[n].ExpiresAt <= now {
			n++
		}
		c.trim(e, n)
		if len(e.msgs) == 0 {
			c.forget(e)
		}
	}
}
