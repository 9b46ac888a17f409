// A long poll held open on a raw connection, for BenchmarkLongPollStack:
// the request is sent and the reply never read, so the client side costs
// next to nothing.

package main

import (
	"io"
	"net"
	"net/url"
	"testing"

	"github.com/stretchr/testify/require"
)

// dialIdlePoll connects to the relay at base (http://HOST:PORT) and sends
// a pullsmart with token and a long wait (the relay clamps it to its
// --max-wait); the caller closes the connection to end the poll.
func dialIdlePoll(tb testing.TB, base, token string) net.Conn {
	tb.Helper()
	u, err := url.Parse(base)
	require.NoError(tb, err)
	c, err := net.Dial("tcp", u.Host)
	require.NoError(tb, err)
	_, err = io.WriteString(c, "GET /api/v1/client/pullsmart?wait=3600 HTTP/1.1\r\nHost: "+u.Host+
		"\r\nAuthorization: Bearer "+token+"\r\n\r\n")
	require.NoError(tb, err)
	return c
}
