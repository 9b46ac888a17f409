// The relay's failures as *Error, and the sentinels callers test them
// against with errors.Is.

package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Error is a failure the relay reported: its HTTP status and the code and
// message of its JSON error shape. A reply that is not that shape (a proxy's
// 502 page, say) gets the code "http_<status>". RetryAfter is the reply's
// Retry-After (whole seconds, as the relay sends it), 0 when it had none.
//
// errors.Is(err, target) holds for an *Error target that names the same
// Code, or, for a target without a Code, the same Status: the Err*
// variables of this package are such targets. errors.As(err, &e) with e a *Error reaches the
// whole failure.
type Error struct {
	Status     int
	Code       string
	Message    string
	RetryAfter time.Duration
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("c2cvia: %d: %s", e.Status, e.Message)
	}
	return fmt.Sprintf("c2cvia: %d %s: %s", e.Status, e.Code, e.Message)
}

// Is reports whether e is what target names: the same code when target has
// one, else the same status (so ErrGone matches every 410).
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	switch {
	case !ok || t == nil:
		return false
	case t.Code != "":
		return e.Code == t.Code
	default:
		return t.Status != 0 && e.Status == t.Status
	}
}

// The failures callers act on, for errors.Is. Each matches the relay's
// code of the same name (README, "Error codes"); ErrGone and ErrStorageFull
// match every code of their status. Only the code counts, never the
// message or Retry-After.
var (
	// ErrTokenExpired (401 token_expired): the login ran out (--token-ttl,
	// 24 h by default). A Session logs in again by itself once per call
	// that meets it; a caller sees it only when that fails too.
	ErrTokenExpired = &Error{Status: http.StatusUnauthorized, Code: "token_expired", Message: "the token has expired"}
	// ErrUnknownToken (401 unknown_token): the relay does not know the
	// token (its store was replaced, or the login was purged): log in again.
	ErrUnknownToken = &Error{Status: http.StatusUnauthorized, Code: "unknown_token", Message: "unknown token"}
	// ErrWrongKey (403 wrong_key): the net is claimed by another key.
	ErrWrongKey = &Error{Status: http.StatusForbidden, Code: "wrong_key", Message: "the net is claimed by another key"}
	// ErrNotFound (404 not_found): an unknown rid, or another token's.
	ErrNotFound = &Error{Status: http.StatusNotFound, Code: "not_found", Message: "not found"}
	// ErrUnknownPeer (404 unknown_peer): Send to a peer_id not logged in
	// to the net.
	ErrUnknownPeer = &Error{Status: http.StatusNotFound, Code: "unknown_peer", Message: "no such peer in this net"}
	// ErrAnswered (409 already_answered): the request has its answer.
	ErrAnswered = &Error{Status: http.StatusConflict, Code: "already_answered", Message: "already answered"}
	// ErrExpired (410 expired): no SimServer answered the request within
	// the relay's time to live.
	ErrExpired = &Error{Status: http.StatusGone, Code: "expired", Message: "the request expired"}
	// ErrCancelled (410 cancelled): the request was withdrawn by its
	// caller. It is the context.Cause of a Serve handler's context then.
	ErrCancelled = &Error{Status: http.StatusGone, Code: "cancelled", Message: "the request was withdrawn"}
	// ErrGone matches every 410: expired, failed, cancelled and aborted.
	ErrGone = &Error{Status: http.StatusGone, Message: "the request is over"}
	// ErrRateLimited (429 rate_limited): too many calls from one address,
	// token, net or gateway; retried by itself.
	ErrRateLimited = &Error{Status: http.StatusTooManyRequests, Code: "rate_limited", Message: "rate limited"}
	// ErrQueueFull (429 queue_full): the net holds as many waiting
	// requests as the relay allows; retried by itself.
	ErrQueueFull = &Error{Status: http.StatusTooManyRequests, Code: "queue_full", Message: "the net's queue is full"}
	// ErrNetFull (429 net_full): the net has as many logins as the relay
	// allows; Login retries it by itself.
	ErrNetFull = &Error{Status: http.StatusTooManyRequests, Code: "net_full", Message: "the net has all the logins it may"}
	// ErrServerBusy (503 server_busy): the relay holds as many request
	// bodies as it allows; retried by itself.
	ErrServerBusy = &Error{Status: http.StatusServiceUnavailable, Code: "server_busy", Message: "the relay is busy"}
	// ErrStorageFull matches every 507: a storage budget is spent
	// (store_full, net_store_full, addr_store_full, unserved_store_full)
	// or the disk is full (disk_full); retried by itself.
	ErrStorageFull = &Error{Status: http.StatusInsufficientStorage, Message: "the relay's storage is full"}
)

// replyError turns a failed reply into an *Error.
func replyError(status int, header http.Header, body []byte) *Error {
	var retryAfter time.Duration
	if s, err := strconv.Atoi(header.Get("Retry-After")); err == nil && s >= 0 {
		retryAfter = time.Duration(s) * time.Second
	}
	var shape struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(body, &shape) == nil && shape.Error.Code != "" {
		return &Error{Status: status, Code: shape.Error.Code, Message: shape.Error.Message, RetryAfter: retryAfter}
	}
	msg := strings.TrimSpace(string(body))
	if len(msg) > 200 {
		msg = msg[:200]
	}
	if msg == "" {
		msg = http.StatusText(status)
	}
	return &Error{Status: status, Code: "http_" + strconv.Itoa(status), Message: msg, RetryAfter: retryAfter}
}

// retryAfter is err's Retry-After, 0 for none.
func retryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}

// transient reports whether err may go away by itself: a network error,
// or a relay status of 5xx, 429 or 408. A cancelled context is not.
func transient(ctx context.Context, err error) bool {
	if ctx.Err() != nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Status >= 500 || e.Status == http.StatusTooManyRequests || e.Status == http.StatusRequestTimeout
	}
	return true
}

// tokenExpired reports whether err is the relay's token_expired.
func tokenExpired(err error) bool { return errors.Is(err, ErrTokenExpired) }
