// The mappings between net/http and the relay's sim_req and sim_res, both
// ways, as the SDK design (shared with the JavaScript SDK) lays them down.

package client

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Headers that carry the relay's side of a request to a Serve handler:
// the sender's peer_id ("via" for the gateway) and the request's rid.
const (
	headerFrom = "C2cvia-From"
	headerRID  = "C2cvia-Rid"
)

// simMessage is a sim_req or sim_res as it comes from the relay; each side
// reads its own fields.
type simMessage struct {
	Endpoint string                     `json:"simEndpoint"`
	Method   string                     `json:"simMethod"`
	Headers  map[string]json.RawMessage `json:"simHeaders"`
	Query    map[string]json.RawMessage `json:"simQueryParams"`
	Status   int                        `json:"simStatus"`
	Body     json.RawMessage            `json:"simBody"`
	Encoding string                     `json:"simBodyEncoding"`
}

// outgoing is a sim_req or sim_res as this package sends it: simBody is a
// string, or a json.RawMessage spliced in as written; nil is null.
type outgoing struct {
	Endpoint string         `json:"simEndpoint,omitempty"`
	Method   string         `json:"simMethod,omitempty"`
	Status   int            `json:"simStatus,omitempty"`
	Headers  map[string]any `json:"simHeaders"`
	Query    map[string]any `json:"simQueryParams,omitempty"`
	Route    map[string]any `json:"simRouteParams,omitempty"`
	Body     any            `json:"simBody"`
	Encoding string         `json:"simBodyEncoding,omitempty"`
}

// hopByHop are the headers of one connection (RFC 9110 7.6.1); they never
// travel through the relay.
var hopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Te": true, "Trailer": true,
	"Transfer-Encoding": true, "Upgrade": true, "Proxy-Connection": true,
}

// simHeaders turns h into simHeaders: one value as a string, a repeated
// header as an array; hop-by-hop headers and Content-Length are left out.
func simHeaders(h http.Header) map[string]any {
	out := make(map[string]any, len(h))
	for name, vals := range h {
		if hopByHop[http.CanonicalHeaderKey(name)] || strings.EqualFold(name, "Content-Length") || len(vals) == 0 {
			continue
		}
		if len(vals) == 1 {
			out[name] = vals[0]
		} else {
			out[name] = vals
		}
	}
	return out
}

// httpHeader turns simHeaders into an http.Header; a value is a string or
// an array of strings (anything else is skipped: the relay refuses it).
func httpHeader(m map[string]json.RawMessage) http.Header {
	h := make(http.Header, len(m))
	for name, raw := range m {
		for _, v := range stringList(raw, false) {
			h.Add(name, v)
		}
	}
	return h
}

// stringList reads a string or an array of strings. With anyValue, other
// JSON (a number in simQueryParams, say) counts as its JSON text.
func stringList(raw json.RawMessage, anyValue bool) []string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []string{s}
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return list
	}
	if anyValue && len(raw) > 0 && string(raw) != "null" {
		return []string{string(raw)}
	}
	return nil
}

// mediaType is the lower-case media type of a Content-Type value.
func mediaType(contentType string) string {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt, _, _ = strings.Cut(contentType, ";")
		mt = strings.ToLower(strings.TrimSpace(mt))
	}
	return mt
}

func isJSONType(mt string) bool { return mt == "application/json" || strings.HasSuffix(mt, "+json") }

// encodeRequestBody is simBody for a request a SimClient sends: JSON as
// raw JSON (every digit kept), the text types as a string, anything else
// as base64. Without a Content-Type, valid UTF-8 is a string.
func encodeRequestBody(contentType string, body []byte) (simBody any, encoding string) {
	if len(body) == 0 {
		return nil, ""
	}
	mt := mediaType(contentType)
	if isJSONType(mt) && json.Valid(body) {
		return json.RawMessage(body), ""
	}
	text := mt == "" || strings.HasPrefix(mt, "text/")
	switch mt {
	case "application/x-www-form-urlencoded", "application/xml", "application/javascript":
		text = true
	}
	if text && utf8.Valid(body) {
		return string(body), ""
	}
	return base64.StdEncoding.EncodeToString(body), "base64"
}

// encodeResponseBody is simBody for a handler's response: empty is null,
// a text-like type (text/*, JSON, XML, JavaScript, forms) with valid UTF-8
// is a string (JSON too, so no digit is ever lost), anything else base64.
func encodeResponseBody(contentType string, body []byte) (simBody any, encoding string) {
	if len(body) == 0 {
		return nil, ""
	}
	mt := mediaType(contentType)
	text := strings.HasPrefix(mt, "text/") || isJSONType(mt) || strings.HasSuffix(mt, "+xml") ||
		strings.Contains(mt, "javascript")
	switch mt {
	case "application/xml", "application/x-www-form-urlencoded":
		text = true
	}
	if text && utf8.Valid(body) {
		return string(body), ""
	}
	return base64.StdEncoding.EncodeToString(body), "base64"
}

// decodeBody is the bytes of a simBody: base64 decoded, a JSON string as
// its text, null as none, any other JSON value as its JSON text (then
// Content-Type: application/json unless h has one). With form, an object
// under Content-Type application/x-www-form-urlencoded is encoded as a form.
func decodeBody(m *simMessage, h http.Header, form bool) ([]byte, error) {
	raw := bytes.TrimSpace(m.Body)
	if m.Encoding == "base64" {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, fmt.Errorf("simBody is not a base64 string: %w", err)
		}
		return base64.StdEncoding.DecodeString(s)
	}
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []byte(s), nil
	}
	if form && raw[0] == '{' && mediaType(h.Get("Content-Type")) == "application/x-www-form-urlencoded" {
		var obj map[string]json.RawMessage
		if json.Unmarshal(raw, &obj) == nil {
			return []byte(formValues(obj).Encode()), nil
		}
	}
	if h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/json")
	}
	return raw, nil
}

// formValues reads an object of fields: a value is a string or an array of
// strings (the key repeats).
func formValues(obj map[string]json.RawMessage) url.Values {
	v := make(url.Values, len(obj))
	for k, raw := range obj {
		for _, s := range stringList(raw, true) {
			v.Add(k, s)
		}
	}
	return v
}

// bodyless reports whether a status never has a body.
func bodyless(status int) bool {
	return status == http.StatusNoContent || status == http.StatusResetContent || status == http.StatusNotModified
}

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
