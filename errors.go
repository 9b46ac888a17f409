// Errors at the HTTP edge and the single JSON error shape: every failure a
// client sees is an *apiError, the store's own errors become one through the
// storeErrors table, and writeError is the only place that turns one into a
// response.

package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"
)

// apiError is a failure with the status and code a client sees:
// {"error": {"code": "...", "message": "..."}}.
type apiError struct {
	Status     int
	Code       string
	Message    string
	RetryAfter time.Duration // 429, 503 and 507 only
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

// The fixed errors of the HTTP edge: what a call gets wrong before the
// store is asked. Handlers add their own 400s through badRequest.
var (
	errMissingToken  = newAPIError(http.StatusUnauthorized, "missing_token", "a token is required: Authorization: Bearer TOKEN or a token parameter")
	errMissingKey    = newAPIError(http.StatusUnauthorized, "missing_key", "a key is required: Authorization: Bearer KEY or a key parameter")
	errReadOnlyToken = newAPIError(http.StatusForbidden, "read_only_token", "this token only reads the result of one gateway request")
	errNoRoute       = newAPIError(http.StatusNotFound, "no_route", "no such endpoint; see /api/v1/...")
	errMethod        = newAPIError(http.StatusMethodNotAllowed, "method_not_allowed", "this endpoint does not take that method; see the Allow header")
	errTooLarge      = newAPIError(http.StatusRequestEntityTooLarge, "body_too_large", "the request body is over the size limit")
	errBodyTimeout   = newAPIError(http.StatusRequestTimeout, "body_timeout", "the request body did not arrive within the relay's --read-body-timeout")
	errMediaType     = newAPIError(http.StatusUnsupportedMediaType, "unsupported_media_type", "send application/json or application/x-www-form-urlencoded")
	errInternal      = newAPIError(http.StatusInternalServerError, "internal", "internal error; see the relay's log")
	errMsgTooLarge   = newAPIError(http.StatusRequestEntityTooLarge, "message_too_large", "data is over the message size limit")
	errInvalidNet    = badRequest("invalid_net", "net must be 1-64 characters of A-Z a-z 0-9 . _ -")
	errInvalidTopic  = badRequest("invalid_topic", "topic must be 1-64 characters of A-Z a-z 0-9 . _ -")
	errMalformedJSON = badRequest("malformed_json", "the body is not valid JSON")
	errTooManyPolls  = &apiError{Status: http.StatusTooManyRequests, Code: "too_many_polls",
		Message: "this token has as many long polls open as the relay allows; end one first", RetryAfter: time.Second}
	// errServerBusy: the call's body found no room in --max-inflight-body.
	errServerBusy = &apiError{Status: http.StatusServiceUnavailable, Code: "server_busy",
		Message: "the relay is reading as many request bodies as it allows; nothing was written; retry after Retry-After seconds", RetryAfter: time.Second}
)

// storeErrors is the one table from the store's errors to what a client
// sees. Retry-After is a hint for the quotas: a queue drains as its
// SimServer works, a login slot frees when a login expires, stored bytes
// leave with the janitor (--janitor-every).
var storeErrors = []struct {
	err error
	api *apiError
}{
	{errNotFound, newAPIError(http.StatusNotFound, "not_found", "no such request")},
	{errAnswered, newAPIError(http.StatusConflict, "already_answered", "the request was already answered")},
	{errLeaseLost, newAPIError(http.StatusConflict, "lease_lost", "the lease on this request ran out; it may have been handed out again")},
	{errExpired, newAPIError(http.StatusGone, "expired", "the request was not answered within its time to live")},
	{errFailed, newAPIError(http.StatusGone, "failed", "the request was handed out too many times without an answer")},
	{errCancelled, newAPIError(http.StatusGone, "cancelled", "the request was withdrawn by its caller; nobody waits for its answer")},
	{errAborted, newAPIError(http.StatusGone, "aborted", "the streamed answer's lease ran out before its last part; it ends where it stopped")},
	{errNoStream, newAPIError(http.StatusConflict, "no_stream", "pushpart continues an answer begun with pushres and more: true")},
	{errUnknownToken, newAPIError(http.StatusUnauthorized, "unknown_token", "the token is not known; log in again")},
	{errTokenExpired, newAPIError(http.StatusUnauthorized, "token_expired", "the token has expired; log in again")},
	{errWrongKey, newAPIError(http.StatusForbidden, "wrong_key", "this net is claimed by another key")},
	{errKeyTooShort, badRequest("weak_key", "a key must be at least 16 characters")},
	{errUnknownPeer, newAPIError(http.StatusNotFound, "unknown_peer", "no such peer in this net")},
	{errNotClaimed, newAPIError(http.StatusNotFound, "not_claimed", "no key has claimed this net")},
	{errCursorAhead, newAPIError(http.StatusConflict, "cursor_ahead",
		"the cursor is past the newest message the relay has (its store was restored or replaced): read again without since or Last-Event-ID")},
	{errQueueFull, &apiError{Status: http.StatusTooManyRequests, Code: "queue_full",
		Message: "this net has as many requests waiting for its SimServer as the relay allows, or this client address its share of them or of its gateway's; retry later", RetryAfter: time.Second}},
	{errNetFull, &apiError{Status: http.StatusTooManyRequests, Code: "net_full",
		Message: "this net has as many logins as the relay allows; retry when some expire", RetryAfter: time.Minute}},
	{errTooManySubs, &apiError{Status: http.StatusTooManyRequests, Code: "too_many_subscriptions",
		Message: "this login holds as many subscriptions as the relay allows (--max-subs; a closed one counts until its messages expire): unsubscribe from some, or retry later", RetryAfter: time.Minute}},
	{errStoreFull, &apiError{Status: http.StatusInsufficientStorage, Code: "store_full",
		Message: "the relay's store is at its storage budget; retry once expired entries are removed", RetryAfter: time.Minute}},
	{errNetStoreFull, &apiError{Status: http.StatusInsufficientStorage, Code: "net_store_full",
		Message: "this net stores as much as the relay allows, or its gateway requests their half of that; retry once its SimServer answers or entries expire", RetryAfter: time.Minute}},
	{errAddrStoreFull, &apiError{Status: http.StatusInsufficientStorage, Code: "addr_store_full",
		Message: "the requests and peer messages this client address sent take as much as the relay allows one address in the whole store, or its requests as much as it may have in this net's gateway; retry once they are answered or expire", RetryAfter: time.Minute}},
	{errUnservedStoreFull, &apiError{Status: http.StatusInsufficientStorage, Code: "unserved_store_full",
		Message: "no SimServer is polling this net, and it stores as many requests as the relay keeps for such a net; retry once its SimServer polls", RetryAfter: time.Minute}},
	{errStoreClosed, newAPIError(http.StatusServiceUnavailable, "shutting_down", "the relay is shutting down; try again shortly")},
	{errDiskFull, newAPIError(http.StatusInsufficientStorage, "disk_full",
		"the relay's disk is full: nothing was written; try again later")},
	{errStoreBusy, &apiError{Status: http.StatusServiceUnavailable, Code: "store_busy",
		Message: "the relay's store is held by another process (a purge); nothing was written; retry after Retry-After seconds", RetryAfter: time.Second}},
	{errStoreUnwritable, newAPIError(http.StatusServiceUnavailable, "store_unavailable",
		"the relay cannot write its store; nothing was written; try again later")},
}

// asAPIError is what a client sees of err: an *apiError as it is, a store
// error through storeErrors; nil for anything else (a relay fault).
func asAPIError(err error) *apiError {
	var e *apiError
	if errors.As(err, &e) {
		return e
	}
	for _, se := range storeErrors {
		if errors.Is(err, se.err) {
			return se.api
		}
	}
	// A read's failure on PostgreSQL (a connection an administrator ended,
	// a standby): what the writer's would be (storeFault).
	if f := pgFault(err); f != nil {
		return asAPIError(f)
	}
	return nil
}

// errRateLimited is a rate limit's refusal, with the bucket's own delay.
func errRateLimited(retryAfter time.Duration) *apiError {
	return &apiError{Status: http.StatusTooManyRequests, Code: "rate_limited",
		Message: "too many calls; retry after Retry-After seconds", RetryAfter: retryAfter}
}

func badRequest(code, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Code: code, Message: fmt.Sprintf(format, args...)}
}

// writeJSON writes v as a JSON response with the given status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v) // the client may be gone; nothing to do about it
}

// writeError answers err in the JSON error shape. Anything that is not an
// *apiError is a relay fault: logged in full, answered as a bare 500.
func writeError(w http.ResponseWriter, r *http.Request, log *slog.Logger, err error) {
	e := asAPIError(err)
	if e == nil {
		log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		e = errInternal
	} else if log != nil && (isWriteFault(err) || errors.Is(err, errStoreBusy)) {
		log.Warn("request failed", "method", r.Method, "path", r.URL.Path, "code", e.Code, "err", err)
	}
	if n := retryAfterSeconds(e); n > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(n))
	}
	writeJSON(w, e.Status, struct {
		Error errorBody `json:"error"`
	}{errorBody{Code: e.Code, Message: e.Message}})
}

// errorBody is the error shape's inner object. Status and RetryAfter
// (seconds) are the HTTP status and Retry-After, given only where one reply
// holds several outcomes (pullreqsmart's answers).
type errorBody struct {
	Code       string `json:"code"`
	Message    string `json:"message"`
	Status     int    `json:"status,omitempty"`
	RetryAfter int    `json:"retry_after,omitempty"`
}

// retryAfterSeconds is e's Retry-After in whole seconds, rounded up; 0 for
// none.
func retryAfterSeconds(e *apiError) int {
	return int((e.RetryAfter + time.Second - 1) / time.Second)
}

func newAPIError(status int, code, message string) *apiError {
	return &apiError{Status: status, Code: code, Message: message}
}
