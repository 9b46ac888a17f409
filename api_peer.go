// Peer messaging handlers: send, subscribe, unsubscribe, publish, broadcast,
// pullsmart, stream and peers, between the logins of one net.

package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"
)

const (
	// keepAlive is how often an idle stream sends a comment line: 15 s of
	// the relay's clock, under common proxy idle timeouts (30-60 s), so a
	// middlebox does not close a stream that has nothing to say.
	keepAlive = 15 * time.Second
	// maxPage is the most messages one pullsmart returns, and its default.
	maxPage = 100
)

// handleSend serves send (unicast: `to`), publish (multicast: `topic`) and
// broadcast, each with `data`: 201 {"id"} for a unicast, {"id","receivers"}
// for the others.
func handleSend(st *store, h *hub, cfg config, kind string) tokenFunc {
	type sent struct {
		ID int64 `json:"id"`
	}
	type fanned struct {
		ID        int64 `json:"id"`
		Receivers int   `json:"receivers"`
	}
	maxMsg := cfg.MaxMsg
	return func(w http.ResponseWriter, r *http.Request, p *params, t token) error {
		m := message{Kind: kind}
		var err error
		switch kind {
		case kindUnicast:
			m.To, err = p.requiredStr("to")
		case kindMulticast:
			m.Topic, err = topicParam(p)
		}
		if err != nil {
			return err
		}
		data, err := messageData(p, maxMsg)
		if err != nil {
			return err
		}
		id, receivers, err := st.sendMessage(r.Context(), t, m, data, senderKey(senderAddr(r)))
		if err != nil {
			return err
		}
		h.notify(peerSignal(t.Net))
		if kind == kindUnicast {
			writeJSON(w, http.StatusCreated, sent{id})
		} else {
			writeJSON(w, http.StatusCreated, fanned{id, receivers})
		}
		return nil
	}
}

// messageData reads `data`, any JSON value, and returns it as stored: its
// insignificant spaces removed (so it fits on one line of an event stream),
// every value as written. Over limit bytes it is refused with 413.
func messageData(p *params, limit int64) ([]byte, error) {
	raw, ok, err := p.rawJSON("data")
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, badRequest("missing_param", "data is required (any JSON value)")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, badRequest("malformed_json", "data is not valid JSON")
	}
	if int64(buf.Len()) > limit {
		return nil, errMsgTooLarge
	}
	return buf.Bytes(), nil
}

// topicParam returns the validated topic: the charset and length of a net.
func topicParam(p *params) (string, error) {
	topic, err := p.requiredStr("topic")
	if err != nil {
		return "", err
	}
	if !validName(topic) {
		return "", errInvalidTopic
	}
	return topic, nil
}

// handleSubscribe serves subscribe (on) and unsubscribe: 200
// {"topic","subscribed"}, also when nothing changed.
func handleSubscribe(st *store, on bool) tokenFunc {
	type response struct {
		Topic      string `json:"topic"`
		Subscribed bool   `json:"subscribed"`
	}
	return func(w http.ResponseWriter, r *http.Request, p *params, t token) error {
		topic, err := topicParam(p)
		if err != nil {
			return err
		}
		if on {
			err = st.subscribe(r.Context(), t, topic)
		} else {
			err = st.unsubscribe(r.Context(), t, topic)
		}
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, response{topic, on})
		return nil
	}
}

// handlePeerPull serves the peer pullsmart: the messages after `since` as
// soon as there is one, or an empty list when `wait` runs out; with `next`,
// the cursor to pass as `since` next time.
func handlePeerPull(st *store, lp *poller) tokenFunc {
	return func(w http.ResponseWriter, r *http.Request, p *params, t token) error {
		since, err := p.cursor("since")
		if err != nil {
			return err
		}
		if err := st.checkCursor(r.Context(), since); err != nil {
			return err
		}
		wait, err := p.seconds("wait", defaultWait, lp.maxWait)
		if err != nil {
			return err
		}
		limit, err := p.intIn("max", 1, maxPage, maxPage)
		if err != nil {
			return err
		}
		ctx := r.Context()
		var page []*message
		next := since
		_, err = lp.poll(ctx, pollPeer, peerSignal(t.Net), wait, func() (bool, time.Time, error) {
			var err error
			// next moves past what was looked at, so a poll woken by
			// another peer's message does not read it again.
			page, next, err = st.readMessages(ctx, t, next, limit)
			return len(page) > 0, time.Time{}, err
		})
		if err != nil {
			return err
		}
		writeMessages(w, page, next)
		return nil
	}
}

// writeMessages answers {"messages":[...],"next":N} from the messages'
// encoded forms, so a message fanned out to many readers is encoded once,
// and written as it is, not copied into one buffer: a reply that waits for
// a slow client holds only what its page already holds.
func writeMessages(w http.ResponseWriter, page []*message, next int64) {
	tail := strconv.AppendInt([]byte(`],"next":`), next, 10)
	tail = append(tail, "}\n"...)
	n := len(`{"messages":[`) + len(tail)
	for i, m := range page {
		n += len(m.wire)
		if i > 0 {
			n++
		}
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Length", strconv.Itoa(n))
	w.WriteHeader(http.StatusOK)
	// The client may be gone; nothing to do about it but stop.
	if _, err := w.Write([]byte(`{"messages":[`)); err != nil {
		return
	}
	for i, m := range page {
		if i > 0 {
			if _, err := w.Write([]byte{','}); err != nil {
				return
			}
		}
		if _, err := w.Write(m.wire); err != nil {
			return
		}
	}
	_, _ = w.Write(tail)
}

// handleStream serves the messages as Server-Sent Events: one event per
// message, `id:` its cursor and `data:` the same object as pullsmart. It
// resumes after Last-Event-ID (a reconnecting EventSource sends it) or
// `since`, and sends a `: keep-alive` comment when idle for keepAlive. It
// ends when the client goes, the relay shuts down or the token expires.
// It waits in the poller's one waiting loop, a keep-alive at a time.
func handleStream(log *slog.Logger, st *store, lp *poller) tokenFunc {
	return func(w http.ResponseWriter, r *http.Request, p *params, t token) error {
		since, err := p.cursor("since")
		if err != nil {
			return err
		}
		if id := r.Header.Get("Last-Event-ID"); id != "" {
			if since, err = parseCursor("Last-Event-ID", id); err != nil {
				return err
			}
		}
		if err := st.checkCursor(r.Context(), since); err != nil {
			return err // before the stream starts: a 409 the SDKs read, and start over
		}
		c := callFrom(r.Context())
		leave, err := lp.enter(c, pollStream)
		if err != nil {
			return err
		}
		defer leave() // the waits themselves are kept out of the call's overhead by poller.wait
		rc := http.NewResponseController(w)
		h := w.Header()
		h.Set("Content-Type", "text/event-stream")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Accel-Buffering", "no") // nginx: pass events on at once
		w.WriteHeader(http.StatusOK)
		if err := rc.Flush(); err != nil {
			return nil // gone already, or no streaming here: nothing to answer
		}
		st.touchToken(t)

		ctx := r.Context()
		expires := time.UnixMilli(t.ExpiresAt)
		var page []*message
		var buf []byte
		for {
			page = nil
			got, err := lp.wait(ctx, peerSignal(t.Net), lp.clock.Now().Add(keepAlive), func() (bool, time.Time, error) {
				if !lp.clock.Now().Before(expires) {
					return true, time.Time{}, nil
				}
				var err error
				page, since, err = st.readMessages(ctx, t, since, maxPage)
				return len(page) > 0, expires, err
			})
			switch {
			case err != nil:
				if ctx.Err() == nil && !errors.Is(err, errStoreClosed) {
					log.Error("stream read", "err", err)
				}
				return nil // the response has begun: ending it is the only answer
			case lp.stopping() || ctx.Err() != nil:
				return nil
			case got && len(page) == 0:
				return nil // the token expired: the client reconnects and learns it must log in
			case got:
				buf = buf[:0]
				for _, m := range page {
					buf = append(buf, "id: "...)
					buf = strconv.AppendInt(buf, m.ID, 10)
					buf = append(buf, "\ndata: "...)
					buf = append(buf, m.wire...)
					buf = append(buf, "\n\n"...)
				}
				if !streamWrite(w, rc, buf) {
					return nil
				}
			default:
				if !streamWrite(w, rc, []byte(": keep-alive\n\n")) {
					return nil
				}
				st.touchToken(t) // a listening peer is seen
			}
		}
	}
}

// streamWrite writes b and flushes it; false when the client is gone.
func streamWrite(w http.ResponseWriter, rc *http.ResponseController, b []byte) bool {
	if _, err := w.Write(b); err != nil {
		return false
	}
	return rc.Flush() == nil
}

// handlePeers lists the peers of the net seen within peerRecent:
// {"peers":[{"peer_id","last_seen"}]}, most recent first, the caller too.
func handlePeers(st *store) tokenFunc {
	type response struct {
		Peers []peerInfo `json:"peers"`
	}
	return func(w http.ResponseWriter, r *http.Request, p *params, t token) error {
		peers, err := st.recentPeers(r.Context(), t)
		if err != nil {
			return err
		}
		writeJSON(w, http.StatusOK, response{peers})
		return nil
	}
}
