// The one status rule: what makes a request queued, delivered, answered,
// expired or failed. A request's status moves:
//
//	queued --lease--> delivered --pushres--> answered
//	                  |  ^
//	                  |  +-- lease ran out: handed out again, attempt + 1
//	                  +----- last lease (--max-attempts) ran out: failed
//	queued or delivered past --req-ttl: expired
//	queued or delivered, withdrawn by its caller: cancelled
//
// The store writes down queued, delivered and answered when they happen.
// Expired and failed are decided from the clock on every read, so they hold
// the moment they are due; the janitor writes them down later. The rule is
// written twice, in SQL (statusSQL) for the queries that select by status
// and in Go (statusAt) for a row already read; TestStatusRule holds the two
// to the same answers.

package main

const (
	statusQueued    = "queued"
	statusDelivered = "delivered"
	statusAnswered  = "answered"
	statusExpired   = "expired"
	statusFailed    = "failed"
	// statusCancelled is a request its caller withdrew before it was
	// answered. It is stored as failed, with cancelled_at set, so that the
	// indexes and the janitor treat it as finished.
	statusCancelled = "cancelled"
)

// The states of a streamed answer (docs/API.md, "Streamed answers and
// cancellation"). The store writes down open and complete; aborted (its
// lease ran out before the last part) and cancelled (its caller withdrew
// it) are decided on read, like expired.
const (
	streamOpen      = "open"
	streamComplete  = "complete"
	streamAborted   = "aborted"
	streamCancelled = "cancelled"
)

// statusSQL is a requests row's status at the time bound to the parameter
// now (Unix ms), given the parameter maxAttempts (--max-attempts): the
// stored status, or failed once the last allowed lease ran out before the
// request's TTL, or expired once its TTL passed unanswered. Parameters are
// named by the caller as its statement numbers them, such as "?2".
//
// Queries that select rows by status compare statusSQL with the status they
// want, and may add conditions it implies (status = 'queued') so that
// SQLite can use the partial indexes, which are built on the stored status.
func statusSQL(now, maxAttempts string) string {
	return `(CASE
		WHEN status = 'failed' AND cancelled_at IS NOT NULL THEN 'cancelled'
		WHEN status = 'delivered' AND attempt >= ` + maxAttempts + ` AND lease_expires_at <= ` + now + `
		     AND lease_expires_at < expires_at THEN 'failed'
		WHEN status IN ('queued', 'delivered') AND expires_at <= ` + now + ` THEN 'expired'
		ELSE status END)`
}

// requestTimes are the columns of a requests row that statusAt reads.
type requestTimes struct {
	stored    string // the status column
	attempt   int
	expiresAt int64 // ms
	leaseExp  int64 // ms; 0 when no lease is out (lease_expires_at NULL)
	cancelled bool  // cancelled_at is set
}

// statusAt is statusSQL for a row already read: its status at now (Unix
// ms), and changesAt, the moment its status changes by itself (a lease
// running out for the last time, or the TTL), 0 if it never does.
func statusAt(r requestTimes, now int64, maxAttempts int) (status string, changesAt int64) {
	switch r.stored {
	case statusQueued:
		if r.expiresAt <= now {
			return statusExpired, 0
		}
		return statusQueued, r.expiresAt
	case statusDelivered:
		lastLease := r.attempt >= maxAttempts && r.leaseExp != 0 && r.leaseExp < r.expiresAt
		switch {
		case lastLease && r.leaseExp <= now:
			return statusFailed, 0
		case r.expiresAt <= now:
			return statusExpired, 0
		case lastLease:
			return statusDelivered, r.leaseExp
		}
		return statusDelivered, r.expiresAt
	case statusFailed:
		if r.cancelled {
			return statusCancelled, 0
		}
	}
	return r.stored, 0 // answered, expired, failed and cancelled are final
}

// streamAt is the state of an answered request's stream at now (Unix ms):
// "" for an answer posted whole (stored is NULL), else open, complete,
// aborted or cancelled; changesAt is when an open stream is aborted unless
// a part or an extend renews its lease (0 otherwise).
func streamAt(stored string, cancelled bool, leaseExp, now int64) (state string, changesAt int64) {
	switch {
	case stored == "" || stored == streamComplete:
		return stored, 0
	case cancelled:
		return streamCancelled, 0
	case leaseExp <= now:
		return streamAborted, 0
	}
	return streamOpen, leaseExp
}

// wasStatus is the stored status of an unanswered request from its attempt:
// a request is stored as queued until its first lease, and delivered after.
func wasStatus(attempt int) string {
	if attempt == 0 {
		return statusQueued
	}
	return statusDelivered
}
