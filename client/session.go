// Session: a SimClient's login, and peer messaging between the logins of a
// net.

package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// Session is a login to a net: the SimClient side of the relay. Its
// methods are safe for concurrent use, except that one Messages iteration
// at a time should read the messages.
//
// When a call meets the relay's 401 token_expired (ErrTokenExpired), the
// Session logs in to its net again by itself, subscribes again to the
// topics it had subscribed, and makes the call once more; Token, PeerID
// and ExpiresAt then return the new login's, and a running Messages goes
// on after its last message. What belonged to the old login does not
// carry over: messages sent to its peer_id after it expired reach nobody
// (its peers learn the new one from Peers or a message), and the answer to
// a request pushed under the old token can only be read with that token:
// an HTTPClient request waiting for its answer then fails with
// ErrTokenExpired, unless net/http would send it again (GET, HEAD,
// OPTIONS, TRACE, or with an Idempotency-Key header), which is pushed
// again under the new login.
type Session struct {
	Net string // the net logged in to

	relay
	o   options
	net string // Net as the relay named it: a new login's

	relogin sync.Mutex // held while logging in again, so that calls that meet the expiry at once log in once

	mu        sync.Mutex
	token     string
	peerID    string
	expiresAt time.Time
	cursor    int64               // the highest message id delivered so far
	topics    map[string]struct{} // subscribed, to subscribe again after a new login
}

// Token is the login's token, the secret that only its holder uses: it
// reads the answers to its requests and its messages.
func (s *Session) Token() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.token
}

// PeerID is the login's public id, which other peers send to. A new login
// after the token expired has a new one.
func (s *Session) PeerID() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peerID
}

// ExpiresAt is when the login's token stops working (the relay's
// --token-ttl after the login, 24 h by default).
func (s *Session) ExpiresAt() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.expiresAt
}

// Login logs in to net on the relay at relayURL. Options WithHTTPClient,
// WithWait, WithRetries, WithBackoff, WithLogger and WithErrorLog apply to
// the Session. A login refused for now (429 net_full, 5xx) or that meets a
// network error is retried; one refused for good (400 invalid_net) is an
// *Error at once.
func Login(ctx context.Context, relayURL, net string, opts ...Option) (*Session, error) {
	o := newOptions(opts)
	s := &Session{net: net, relay: newRelay(relayURL, o.httpClient), o: o, topics: map[string]struct{}{}}
	named, err := s.logIn(ctx)
	if err != nil {
		return nil, err
	}
	s.Net, s.net = named, named // neither changes after Login: a new login is to the same net
	return s, nil
}

// logIn logs in to s.net, makes that login the session's, and returns
// the net's name as the relay gives it.
func (s *Session) logIn(ctx context.Context) (string, error) {
	var out struct {
		Token     string `json:"token"`
		PeerID    string `json:"peer_id"`
		Net       string `json:"net"`
		ExpiresAt string `json:"expires_at"`
	}
	err := retry(ctx, &s.o, true, func() error {
		_, _, err := s.call(ctx, "/api/v1/client/login", "", map[string]string{"net": s.net}, &out)
		return err
	})
	if err != nil {
		return "", err
	}
	expires, err := time.Parse(time.RFC3339Nano, out.ExpiresAt)
	if err != nil {
		return "", fmt.Errorf("c2cvia: login: expires_at %q: %w", out.ExpiresAt, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.token, s.peerID, s.expiresAt = out.Token, out.PeerID, expires
	return out.Net, nil
}

// renew logs in again after a call with the token old met token_expired,
// unless another call has done so meanwhile, and subscribes the new login
// to the topics the old one had.
func (s *Session) renew(ctx context.Context, old string) error {
	s.relogin.Lock()
	defer s.relogin.Unlock()
	if s.Token() != old {
		return nil
	}
	oldPeer := s.PeerID()
	if _, err := s.logIn(ctx); err != nil {
		return err
	}
	token := s.Token()
	s.o.log(slog.LevelInfo, "logged in again: the token expired", nil, "net", s.net, "peer_id", s.PeerID(), "old_peer_id", oldPeer)
	for _, topic := range s.subscribed() {
		err := retry(ctx, &s.o, true, func() error {
			_, _, err := s.call(ctx, "/api/v1/peer/subscribe", token, map[string]string{"topic": topic}, nil)
			return err
		})
		if err != nil {
			s.o.log(slog.LevelError, "subscribing again after a new login", err, "net", s.net, "topic", topic)
		}
	}
	return nil
}

// subscribed is the topics subscribed, sorted.
func (s *Session) subscribed() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(maps.Keys(s.topics))
}

// do POSTs body to path with the session's token (authed) and decodes a
// 2xx reply into out; it returns the reply's status.
func (s *Session) do(ctx context.Context, path string, body, out any) (int, error) {
	status, _, err := s.authed(ctx, true, func(token string) (int, error) {
		status, _, err := s.call(ctx, path, token, body, out)
		return status, err
	})
	return status, err
}

// authed makes call with the session's token, retried while it is refused
// for now (WithRetries, WithBackoff; a network error only if resend), and
// once more after a new login when the token has expired. It returns the
// token of the last try.
func (s *Session) authed(ctx context.Context, resend bool, call func(token string) (int, error)) (status int, token string, err error) {
	for renewed := false; ; renewed = true {
		token = s.Token()
		err = retry(ctx, &s.o, resend, func() error {
			var err error
			status, err = call(token)
			return err
		})
		if renewed || !tokenExpired(err) {
			return status, token, err
		}
		if lerr := s.renew(ctx, token); lerr != nil {
			return status, token, fmt.Errorf("%w; logging in again: %w", err, lerr)
		}
	}
}

// HTTPClient returns a client that sends every request to the net's
// SimServer through the relay, as net/http's transport would send it (a
// request without a User-Agent gets Go-http-client/1.1; an empty one
// sends none). A URL's path and query are the target and
// its host the Host: "http://c2cvia/items/7" reaches the SimServer's
// /items/7 with Host c2cvia. Redirects within that host are followed as
// net/http follows them; one to another host is not (the SimServer is no
// other host): the client returns the redirect itself. A request no
// SimServer answered within the relay's time to live fails with
// ErrExpired. A pushreq refused for now is retried (WithRetries), and
// after a network error too if net/http would send the request again.
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
	_, err := s.do(ctx, "/api/v1/peer/send", map[string]any{"to": peerID, "data": data}, &out)
	return out.ID, err
}

// Subscribe makes the session receive what is published on topic from now
// on (and its new login, should the token expire). A login may hold a
// limited number of topics (the relay's --max-subs): past it, 429
// too_many_subscriptions.
func (s *Session) Subscribe(ctx context.Context, topic string) error {
	if _, err := s.do(ctx, "/api/v1/peer/subscribe", map[string]string{"topic": topic}, nil); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.topics[topic] = struct{}{}
	return nil
}

// Unsubscribe stops what Subscribe started.
func (s *Session) Unsubscribe(ctx context.Context, topic string) error {
	s.mu.Lock()
	delete(s.topics, topic)
	s.mu.Unlock()
	_, err := s.do(ctx, "/api/v1/peer/unsubscribe", map[string]string{"topic": topic}, nil)
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
	_, err := s.do(ctx, path, body, &out)
	return out.ID, out.Receivers, err
}

// Peer is a login of a net, as Peers lists it.
type Peer struct {
	PeerID   string    // what Send takes
	LastSeen time.Time // its last call to the relay
}

// Peers lists the logins of the session's net seen in the last 5 minutes,
// most recent first, the session's own first of all.
func (s *Session) Peers(ctx context.Context) ([]Peer, error) {
	var out struct {
		Peers []struct {
			PeerID   string `json:"peer_id"`
			LastSeen string `json:"last_seen"`
		} `json:"peers"`
	}
	_, _, err := s.authed(ctx, true, func(token string) (int, error) {
		status, _, err := s.get(ctx, "/api/v1/peer/peers", token, &out)
		return status, err
	})
	if err != nil {
		return nil, err
	}
	peers := make([]Peer, 0, len(out.Peers))
	for _, p := range out.Peers {
		seen, err := time.Parse(time.RFC3339Nano, p.LastSeen)
		if err != nil {
			return nil, fmt.Errorf("c2cvia: peers: last_seen %q: %w", p.LastSeen, err)
		}
		peers = append(peers, Peer{PeerID: p.PeerID, LastSeen: seen})
	}
	return peers, nil
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
// network errors and refusals for now (retried without end, with
// WithBackoff's delays), across a new login when the token expires, and
// across calls. The first call starts with the oldest message the relay
// has kept. It ends when ctx is done, yielding no error for that, or when
// the relay refuses for good (unknown_token, say): it yields that *Error,
// then ends.
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
		bo := s.o.backoff()
		renewed := false // a new login has been tried since the last poll that worked
		for {
			var page struct {
				Messages []wireMessage `json:"messages"`
				Next     int64         `json:"next"`
			}
			body := map[string]any{"since": since, "wait": seconds(s.o.wait)}
			token := s.Token()
			_, _, err := s.call(ctx, "/api/v1/peer/pullsmart", token, body, &page)
			if ctx.Err() != nil {
				return
			}
			if err != nil && tokenExpired(err) && !renewed {
				renewed = true
				lerr := s.renew(ctx, token)
				if lerr == nil {
					continue // after the last message, with the new token
				}
				err = fmt.Errorf("%w; logging in again: %w", err, lerr)
				if transient(ctx, lerr) {
					renewed = false // the next poll meets the expiry again and tries again
				}
			}
			if err != nil {
				var e *Error
				if errors.As(err, &e) && e.Code == "cursor_ahead" && since > 0 {
					// The relay's store was restored or replaced: start
					// over from the oldest message it keeps (some may
					// come again: at-least-once).
					s.o.log(slog.LevelWarn, "reading messages: starting over", err, "net", s.net)
					since = 0
					s.resetCursor()
					continue
				}
				if !transient(ctx, err) && !(tokenExpired(err) && !renewed) {
					yield(Message{}, err)
					return
				}
				s.o.log(slog.LevelWarn, "reading messages: retrying", err, "net", s.net)
				if !sleep(ctx, bo.next(retryAfter(err))) {
					return
				}
				continue
			}
			renewed = false
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
