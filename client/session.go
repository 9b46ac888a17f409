// Session: a SimClient's login, and peer messaging between the logins of a
// net.

package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Session is a login to a net: the SimClient side of the relay. Its
// methods are safe for concurrent use, except that one Messages iteration
// at a time should read the messages.
type Session struct {
	Token     string    // the secret: only its holder reads its responses
	PeerID    string    // the public id other peers send to
	Net       string    // the net logged in to
	ExpiresAt time.Time // the token works until then

	relay
	o options

	mu     sync.Mutex
	cursor int64 // the highest message id delivered so far
}

// Login logs in to net on the relay at relayURL. Options WithHTTPClient,
// WithWait and WithErrorLog apply to the Session.
func Login(ctx context.Context, relayURL, net string, opts ...Option) (*Session, error) {
	o := newOptions(opts)
	s := &Session{relay: newRelay(relayURL, o.httpClient), o: o}
	var out struct {
		Token     string `json:"token"`
		PeerID    string `json:"peer_id"`
		Net       string `json:"net"`
		ExpiresAt string `json:"expires_at"`
	}
	if _, _, err := s.call(ctx, "/api/v1/client/login", "", map[string]string{"net": net}, &out); err != nil {
		return nil, err
	}
	expires, err := time.Parse(time.RFC3339Nano, out.ExpiresAt)
	if err != nil {
		return nil, fmt.Errorf("c2cvia: login: expires_at %q: %w", out.ExpiresAt, err)
	}
	s.Token, s.PeerID, s.Net, s.ExpiresAt = out.Token, out.PeerID, out.Net, expires
	return s, nil
}

// HTTPClient returns a client that sends every request to the net's
// SimServer through the relay. A URL's path and query are the target and
// its host the Host: "http://c2cvia/items/7" reaches the SimServer's
// /items/7 with Host c2cvia. Redirects within that host are followed as
// net/http follows them; one to another host is not (the SimServer is no
// other host): the client returns the redirect itself. A request no
// SimServer answered within the relay's time to live fails with an *Error
// with the code "expired".
//
// The response comes once the SimServer has answered, or for a streamed
// answer once its status and headers are posted: then resp.Body reads
// each part as it is posted (resp.ContentLength is -1 unless the handler
// declared a length), and ends with io.ErrUnexpectedEOF if the stream is
// aborted (its SimServer stopped). A request whose context ends before its
// answer is complete, or whose body is closed before its end, is withdrawn
// at the relay, so that its handler's context ends too.
func (s *Session) HTTPClient() *http.Client {
	return &http.Client{Transport: &transport{s: s}, CheckRedirect: sameHostRedirects}
}

// sameHostRedirects follows up to 10 redirects, as net/http does, within
// the first request's host.
func sameHostRedirects(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return errors.New("stopped after 10 redirects")
	}
	if !strings.EqualFold(req.URL.Host, via[0].URL.Host) {
		return http.ErrUseLastResponse
	}
	return nil
}

// Send sends data (any value that marshals to JSON) to the peer peerID of
// the net and returns the message's id.
func (s *Session) Send(ctx context.Context, peerID string, data any) (int64, error) {
	var out struct {
		ID int64 `json:"id"`
	}
	_, _, err := s.call(ctx, "/api/v1/peer/send", s.Token, map[string]any{"to": peerID, "data": data}, &out)
	return out.ID, err
}

// Subscribe makes the session receive what is published on topic from now
// on.
func (s *Session) Subscribe(ctx context.Context, topic string) error {
	_, _, err := s.call(ctx, "/api/v1/peer/subscribe", s.Token, map[string]string{"topic": topic}, nil)
	return err
}

// Unsubscribe stops what Subscribe started.
func (s *Session) Unsubscribe(ctx context.Context, topic string) error {
	_, _, err := s.call(ctx, "/api/v1/peer/unsubscribe", s.Token, map[string]string{"topic": topic}, nil)
	return err
}

// Publish sends data to the peers subscribed to topic and returns the
// message's id and how many peers receive it. The sender does not.
func (s *Session) Publish(ctx context.Context, topic string, data any) (id int64, receivers int, err error) {
	return s.fanOut(ctx, "/api/v1/peer/publish", map[string]any{"topic": topic, "data": data})
}

// Broadcast sends data to every other peer of the net and returns the
// message's id and how many peers receive it.
func (s *Session) Broadcast(ctx context.Context, data any) (id int64, receivers int, err error) {
	return s.fanOut(ctx, "/api/v1/peer/broadcast", map[string]any{"data": data})
}

func (s *Session) fanOut(ctx context.Context, path string, body map[string]any) (int64, int, error) {
	var out struct {
		ID        int64 `json:"id"`
		Receivers int   `json:"receivers"`
	}
	_, _, err := s.call(ctx, path, s.Token, body, &out)
	return out.ID, out.Receivers, err
}

// Message is one message a peer sent.
type Message struct {
	ID     int64           // its cursor: messages come in id order
	Kind   string          // "unicast", "multicast" or "broadcast"
	From   string          // the sender's peer_id
	Topic  string          // for a multicast; "" otherwise
	Data   json.RawMessage // as sent, every digit kept
	SentAt time.Time
}

// Messages reads the session's messages, oldest first, as they come: it
// long-polls the relay and resumes after the last message delivered, across
// network errors (retried with backoff) and across calls. The first
// call starts with the oldest message the relay has kept. It ends when ctx
// is done, yielding no error for that, or when the relay refuses for good
// (the login expired, say): it yields that *Error, then ends.
func (s *Session) Messages(ctx context.Context) iter.Seq2[Message, error] {
	return s.messages(ctx, func() int64 {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.cursor
	})
}

// MessagesSince is Messages starting after the message with id since (0:
// with the oldest kept), to replay or to resume from a cursor kept
// elsewhere.
func (s *Session) MessagesSince(ctx context.Context, since int64) iter.Seq2[Message, error] {
	return s.messages(ctx, func() int64 { return since })
}

func (s *Session) messages(ctx context.Context, start func() int64) iter.Seq2[Message, error] {
	type wireMessage struct {
		ID     int64           `json:"id"`
		Kind   string          `json:"kind"`
		From   string          `json:"from"`
		Topic  string          `json:"topic"`
		Data   json.RawMessage `json:"data"`
		SentAt string          `json:"sent_at"`
	}
	return func(yield func(Message, error) bool) {
		since := start()
		var bo backoff
		for {
			var page struct {
				Messages []wireMessage `json:"messages"`
				Next     int64         `json:"next"`
			}
			body := map[string]any{"since": since, "wait": seconds(s.o.wait)}
			_, retryAfter, err := s.call(ctx, "/api/v1/peer/pullsmart", s.Token, body, &page)
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				var e *Error
				if errors.As(err, &e) && e.Code == "cursor_ahead" && since > 0 {
					// The relay's store was restored or replaced: start
					// over from the oldest message it keeps (some may
					// come again: at-least-once).
					s.o.onError(fmt.Errorf("c2cvia: reading messages: %w; starting over", err))
					since = 0
					s.resetCursor()
					continue
				}
				if !transient(ctx, err) {
					yield(Message{}, err)
					return
				}
				s.o.onError(fmt.Errorf("c2cvia: reading messages: %w", err))
				if !sleep(ctx, max(bo.next(), retryAfter)) {
					return
				}
				continue
			}
			bo.reset()
			for _, w := range page.Messages {
				sent, _ := time.Parse(time.RFC3339Nano, w.SentAt)
				m := Message{ID: w.ID, Kind: w.Kind, From: w.From, Topic: w.Topic, Data: w.Data, SentAt: sent}
				since = m.ID
				s.delivered(m.ID)
				if !yield(m, nil) {
					return
				}
			}
			// next moves past what the relay looked at, so the next poll
			// does not scan it again.
			since = max(since, page.Next)
		}
	}
}

// resetCursor forgets the messages delivered, after the relay refused the
// cursor as ahead of its store.
func (s *Session) resetCursor() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cursor = 0
}

// delivered records id as delivered, for the next Messages. The cursor
// only moves forward: a replay with MessagesSince does not move it back.
func (s *Session) delivered(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cursor = max(s.cursor, id)
}
