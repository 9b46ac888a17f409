// Unexported parts of the package that the tests in client_test, which own
// the relay, reach into.

package client

import (
	"context"
	"time"
)

// Call makes one call to the relay as every function of the package does,
// with the default HTTP client, and returns what its answer decodes to:
// the status, Retry-After, and an *Error for a failure.
func Call(ctx context.Context, relayURL, path, bearer string, body, out any) (status int, retryAfter time.Duration, err error) {
	return newRelay(relayURL, defaultHTTPClient).call(ctx, path, bearer, body, out)
}

// CloseIdleConnections closes the default HTTP client's idle connections,
// whose goroutines would otherwise look like leaks.
func CloseIdleConnections() { defaultHTTPClient.CloseIdleConnections() }

// SetToken makes token the session's, as a test's stand-in for a login the
// relay does not know.
func SetToken(s *Session, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.token = token
}

// Backoff is the delay before retry n (0-based) from initial doubling to
// at most max, at least retryAfter.
func Backoff(n int, initial, max, retryAfter time.Duration) time.Duration {
	return backoffDelay(n, initial, max, retryAfter)
}
