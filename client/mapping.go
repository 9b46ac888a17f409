// The mappings between net/http and the relay's sim_req and sim_res go
// through internal/simhttp, which the relay's /via/ gateway uses too: a
// request reaches a handler the same way whichever way it entered.

package client

import (
	"io"
	"net/http"
	"strconv"
)

// Headers that carry the relay's side of a request to a Serve handler:
// the sender's peer_id ("via" for the gateway) and the request's rid.
const (
	headerFrom = "C2cvia-From"
	headerRID  = "C2cvia-Rid"
)

// readBody reads and closes a request body, which may be nil.
func readBody(body io.ReadCloser) ([]byte, error) {
	if body == nil || body == http.NoBody {
		return nil, nil
	}
	defer body.Close()
	return io.ReadAll(body)
}

// statusLine is resp.Status as net/http fills it: "201 Created".
func statusLine(code int) string {
	return strconv.Itoa(code) + " " + http.StatusText(code)
}
