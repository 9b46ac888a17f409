// Unexported parts of the package that the tests in client_test, which own
// the relay, reach into.

package client

// CloseIdleConnections closes the default HTTP client's idle connections,
// whose goroutines would otherwise look like leaks.
func CloseIdleConnections() { defaultHTTPClient.CloseIdleConnections() }
