package client_test

import (
	"io"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHTTPClientUserAgent: the handler behind the relay sees the
// User-Agent net/http would have sent it directly: Go-http-client/1.1 for
// a request without one, the request's own, none for an empty one.
func TestHTTPClientUserAgent(t *testing.T) {
	t.Parallel()
	net := testNet(t)
	serve(t, relayURL, net, testKey, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ua, ok := r.Header["User-Agent"]
		if !ok {
			_, _ = io.WriteString(w, "(none)")
			return
		}
		_, _ = io.WriteString(w, ua[0])
	}))
	s := login(t, relayURL, net)
	for _, tc := range []struct {
		name   string
		header http.Header
		want   string
	}{
		{"none", nil, "Go-http-client/1.1"},
		{"its own", http.Header{"User-Agent": {"inventory-sync/2.1"}}, "inventory-sync/2.1"},
		{"an empty one", http.Header{"User-Agent": {""}}, "(none)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, "http://c2cvia/", nil)
			require.NoError(t, err)
			for k, v := range tc.header {
				req.Header[k] = v
			}
			resp, err := s.HTTPClient().Do(req)
			require.NoError(t, err)
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			assert.Equal(t, tc.want, string(body))
		})
	}
}
