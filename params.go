// Parameter decoding: one way in for every endpoint. Parameters come from the
// query string and from a POST body of JSON or form type; a body field wins.

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// params holds one call's parameters. A value from the query string or a form
// body is text; a value from a JSON body is raw JSON.
type params struct {
	call *call // the call record, if any: netParam notes the net in it
	text map[string]string
	json map[string]json.RawMessage
	auth string // the Authorization: Bearer credential, if any

	// octets is the raw body of an application/octet-stream POST, on the
	// one route that takes one (pushpart); nil otherwise.
	octets []byte
}

// jsonTextFields are object-valued: in the query or a form body they are JSON
// text. Every other text field that wants JSON (simBody) takes the text as a
// plain string.
var jsonTextFields = map[string]bool{
	"sim_req": true, "sim_res": true, "simHeaders": true,
	"simQueryParams": true, "simRouteParams": true, "data": true,
	"answers": true,
}

// decodeParams reads r's query and body under a maxBody limit. It never
// writes anything; every failure is an *apiError. The body's bytes stay
// held in the relay's --max-inflight-body budget until the call's release
// (never nil) is called. octets: the route also takes an
// application/octet-stream body, kept whole in params.octets.
func decodeParams(w http.ResponseWriter, r *http.Request, maxBody int64, octets bool) (p *params, release func(), err error) {
	hold, err := holdBody(r, maxBody)
	if err != nil {
		return nil, func() {}, err
	}
	p, err = decodeHeld(w, r, maxBody, octets, hold)
	if err != nil {
		hold.release()
		return nil, func() {}, err
	}
	return p, hold.release, nil
}

// decodeHeld is decodeParams once the body's share of the budget is held.
func decodeHeld(w http.ResponseWriter, r *http.Request, maxBody int64, octets bool, hold *bodyHold) (*params, error) {
	p := &params{call: callFrom(r.Context()), text: map[string]string{}, json: map[string]json.RawMessage{}}
	if a := r.Header.Get("Authorization"); len(a) > 7 && strings.EqualFold(a[:7], "bearer ") {
		p.auth = strings.TrimSpace(a[7:])
	}
	for k, vs := range r.URL.Query() {
		p.text[k] = vs[0]
	}
	if err := checkText(p.text); err != nil {
		return nil, err
	}
	if r.Method != http.MethodPost && r.Method != http.MethodPut && r.Method != http.MethodPatch {
		return p, nil
	}
	body, err := readHeld(w, r, maxBody, hold)
	if err != nil {
		return nil, err
	}
	mediaType, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if octets && err == nil && mediaType == "application/octet-stream" {
		p.octets = body
		if p.octets == nil {
			p.octets = []byte{}
		}
		return p, nil
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return p, nil
	}
	if err != nil {
		return nil, errMediaType
	}
	if !utf8.Valid(body) { // RFC 8259 8.1 for JSON; and the relay only ever emits UTF-8
		return nil, badRequest("invalid_body", "the body is not valid UTF-8 text")
	}
	switch mediaType {
	case "application/json":
		n, ok := jsonShape(body, maxJSONDepth)
		if !ok {
			return nil, errTooDeep
		}
		if n > maxMembers {
			return nil, badRequest("invalid_body", "the JSON body has %d names; a call takes at most %d", n, maxMembers)
		}
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(body, &fields); err != nil {
			var typeErr *json.UnmarshalTypeError
			if errors.As(err, &typeErr) {
				return nil, badRequest("invalid_body", "the JSON body must be an object")
			}
			return nil, errMalformedJSON
		}
		if fields == nil {
			return nil, badRequest("invalid_body", "the JSON body must be an object")
		}
		for k, v := range fields {
			delete(p.text, k)
			p.json[k] = v
		}
	case "application/x-www-form-urlencoded":
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, badRequest("invalid_body", "the form body is malformed: %v", err)
		}
		for k, vs := range form {
			p.text[k] = vs[0]
		}
		if err := checkText(p.text); err != nil {
			return nil, err
		}
	default:
		return nil, errMediaType
	}
	return p, nil
}

// readBody reads r's whole body, at most maxBody bytes: over it is 413
// body_too_large, a body that does not arrive within --read-body-timeout
// is 408 body_timeout, and one that cannot be read otherwise is 400
// unreadable_body. While it reads, the body holds its length in the
// relay's --max-inflight-body budget: 503 server_busy when that has no
// room within bodyWait. Every endpoint that reads a body reads it here,
// or through decodeParams, which keeps the hold until the call ends.
func readBody(w http.ResponseWriter, r *http.Request, maxBody int64) ([]byte, error) {
	if r.ContentLength > maxBody {
		return nil, errTooLarge // at once: no 100 Continue for a body refused anyway
	}
	hold, err := holdBody(r, maxBody)
	if err != nil {
		return nil, err
	}
	defer hold.release()
	return readHeld(w, r, maxBody, hold)
}

// readHeld reads r's body as readBody does, its share of the budget held
// (hold; nil: no budget). A body with a length is read into one buffer of
// that length, so the bytes it holds are the bytes held for it; one
// without gives back what it did not use.
func readHeld(w http.ResponseWriter, r *http.Request, maxBody int64, hold *bodyHold) ([]byte, error) {
	if r.ContentLength > maxBody {
		return nil, errTooLarge // at once: no 100 Continue for a body refused anyway
	}
	size := maxBody + 1 // the most a body of unknown length is read to (413 past maxBody)
	if r.ContentLength > 0 {
		size = r.ContentLength
	}
	body, err := readGrowing(http.MaxBytesReader(w, r.Body, maxBody), size, hold)
	if err == nil {
		return body, nil
	}
	if errors.Is(err, errServerBusy) || errors.Is(err, context.Canceled) {
		return nil, err
	}
	var tooLarge *http.MaxBytesError
	switch {
	case errors.As(err, &tooLarge):
		return nil, errTooLarge
	case errors.Is(err, os.ErrDeadlineExceeded):
		return nil, errBodyTimeout
	}
	return nil, badRequest("unreadable_body", "the body could not be read: %v", err)
}

// readGrowing reads all of body, at most size bytes (its Content-Length,
// or the limit plus one byte when it has none), holding in hold
// (--max-inflight-body) what it takes: the first holdStep bytes once they
// have arrived, then the rest of size before it is read into one buffer
// of that size. A sender that stalls in its first 64 KiB holds nothing;
// one that sent them has shown it sends, and holds its whole length.
func readGrowing(body io.Reader, size int64, hold *bodyHold) ([]byte, error) {
	if hold == nil {
		return io.ReadAll(body)
	}
	first := make([]byte, min(holdStep, size))
	n, err := io.ReadFull(body, first)
	if gerr := hold.grow(int64(n)); gerr != nil {
		return nil, gerr
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || (err == nil && int64(n) == size) {
		return first[:n], nil
	}
	if err != nil {
		return nil, err
	}
	if gerr := hold.grow(size - int64(n)); gerr != nil {
		return nil, gerr
	}
	buf := make([]byte, size)
	copy(buf, first)
	m, err := io.ReadFull(body, buf[n:])
	total := n + m
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) { // a body without a length, shorter than size
		hold.keep(int64(total))
		return buf[:total], nil
	}
	return buf[:total], err
}

// maxJSONDepth is how deeply JSON a client sends may nest: 100 levels of
// arrays and objects, far past any real document, and under SQLite's 1,000,
// past which its JSON functions (inspect's) call the text malformed.
const maxJSONDepth = 100

var errTooDeep = badRequest("invalid_body", "the JSON nests deeper than 100 arrays and objects")

// jsonShape reads, in one pass and without decoding, how deeply JSON text
// b nests arrays and objects and how many names its outermost object has
// (0 when b is not an object). It stops counting past maxDepth: then ok is
// false. b need not be valid: the decoder judges that.
func jsonShape(b []byte, maxDepth int) (members int, ok bool) {
	depth, inString, escaped := 0, false, false
	for _, c := range b {
		switch {
		case escaped:
			escaped = false
		case inString:
			switch c {
			case '\\':
				escaped = true
			case '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '[' || c == '{':
			if depth++; depth > maxDepth {
				return members, false
			}
		case c == ']' || c == '}':
			depth--
		case c == ':' && depth == 1:
			members++
		}
	}
	return members, true
}

// jsonDepthOK reports whether JSON text b nests at most max arrays and
// objects deep.
func jsonDepthOK(b []byte, max int) bool {
	_, ok := jsonShape(b, max)
	return ok
}

// objectMembers counts the members of the JSON object b at its own level
// (its names), without decoding it: a check that costs no memory before a
// decode that would cost some per name.
func objectMembers(b []byte) int {
	n, _ := jsonShape(b, math.MaxInt)
	return n
}

// maxMembers bounds the names of an object the relay decodes name by name:
// a call's JSON body, and simHeaders, simQueryParams and simRouteParams. A
// thousand is far above what a request carries (a browser sends about 20
// headers), and an object of 80,000 short names in 1 MiB would cost the
// relay some 20 MB to decode.
const maxMembers = 1000

// checkText refuses text parameters (query, form) that are not valid UTF-8
// or hold a NUL: they would be stored, and printed, as they came.
func checkText(text map[string]string) error {
	for k, v := range text {
		if !utf8.ValidString(k) || !utf8.ValidString(v) || strings.ContainsRune(k+v, 0) {
			return badRequest("invalid_param", "parameters must be UTF-8 text without NUL")
		}
	}
	return nil
}

// has reports whether the parameter was given at all.
func (p *params) has(name string) bool {
	_, inText := p.text[name]
	_, inJSON := p.json[name]
	return inText || inJSON
}

// str returns a string parameter; ok is false when it is absent.
func (p *params) str(name string) (s string, ok bool, err error) {
	if raw, found := p.json[name]; found {
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", false, badRequest("invalid_param", "%s must be a string", name)
		}
		return s, true, nil
	}
	s, ok = p.text[name]
	return s, ok, nil
}

// number returns a numeric parameter, given as a JSON number or as text.
func (p *params) number(name string) (f float64, ok bool, err error) {
	var text string
	if raw, found := p.json[name]; found {
		if err := json.Unmarshal(raw, &f); err == nil {
			return f, true, nil
		}
		if err := json.Unmarshal(raw, &text); err != nil {
			return 0, false, badRequest("invalid_param", "%s must be a number", name)
		}
	} else if text, ok = p.text[name]; !ok {
		return 0, false, nil
	}
	f, err = strconv.ParseFloat(strings.TrimSpace(text), 64)
	if err != nil {
		return 0, false, badRequest("invalid_param", "%s must be a number", name)
	}
	return f, true, nil
}

// rawJSON returns a parameter as JSON. Object-valued fields given as text are
// parsed as JSON text; any other text becomes a JSON string.
func (p *params) rawJSON(name string) (json.RawMessage, bool, error) {
	if raw, ok := p.json[name]; ok {
		return raw, true, nil
	}
	text, ok := p.text[name]
	if !ok {
		return nil, false, nil
	}
	if jsonTextFields[name] {
		if !json.Valid([]byte(text)) {
			return nil, false, badRequest("malformed_json", "%s is not valid JSON text", name)
		}
		if !jsonDepthOK([]byte(text), maxJSONDepth) {
			return nil, false, errTooDeep
		}
		return json.RawMessage(text), true, nil
	}
	raw, err := json.Marshal(text)
	return raw, true, err
}

// credential returns the bearer credential or the named parameter.
func (p *params) credential(name string) (string, error) {
	if p.auth != "" {
		return p.auth, nil
	}
	s, _, err := p.str(name)
	return s, err
}

// requiredStr returns a string parameter that must be present and non-empty.
func (p *params) requiredStr(name string) (string, error) {
	s, ok, err := p.str(name)
	if err != nil {
		return "", err
	}
	if !ok || s == "" {
		return "", badRequest("missing_param", "%s is required", name)
	}
	return s, nil
}

// intIn returns an integer parameter in [lo, hi], or def when absent.
func (p *params) intIn(name string, lo, hi, def int) (int, error) {
	f, ok, err := p.number(name)
	if err != nil || !ok {
		return def, err
	}
	if f != float64(int(f)) || f < float64(lo) || f > float64(hi) {
		return 0, badRequest("invalid_param", "%s must be a whole number from %d to %d", name, lo, hi)
	}
	return int(f), nil
}

// boolean returns a true/false parameter: a JSON boolean, or the text
// true, false, 1 or 0; def when absent.
func (p *params) boolean(name string, def bool) (bool, error) {
	if raw, found := p.json[name]; found {
		var b bool
		if err := json.Unmarshal(raw, &b); err != nil {
			return false, badRequest("invalid_param", "%s must be true or false", name)
		}
		return b, nil
	}
	text, ok := p.text[name]
	if !ok {
		return def, nil
	}
	switch text {
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, badRequest("invalid_param", "%s must be true or false", name)
}

// cursor returns a message cursor (a message id, 0 or more) given as a JSON
// integer or as decimal text; 0 when absent. Parsed as an integer, not a
// float, so ids past 2^53 stay exact.
func (p *params) cursor(name string) (int64, error) {
	text, ok := p.text[name]
	if raw, found := p.json[name]; found {
		ok = true
		var s string
		if json.Unmarshal(raw, &s) == nil {
			text = s
		} else {
			text = string(raw)
		}
	}
	if !ok {
		return 0, nil
	}
	return parseCursor(name, text)
}

// offset returns a byte offset into a streamed answer's body: a whole
// number, 0 or more, given as a JSON integer or decimal text; 0 when
// absent, unless required (400 missing_param).
func (p *params) offset(required bool) (int64, error) {
	raw := string(bytes.TrimSpace(p.json["offset"]))
	given := p.text["offset"] != "" || (raw != "" && raw != "null" && raw != `""`)
	if required && !given {
		return 0, badRequest("missing_param", "offset is required: the body bytes committed before this part")
	}
	n, err := p.cursor("offset")
	if err != nil {
		return 0, badRequest("invalid_param", "offset must be a whole number of bytes, 0 or more")
	}
	return n, nil
}

// list returns a list of strings: a JSON array of strings, or
// comma-separated text; 1 to max of them (400 otherwise).
func (p *params) list(name string, max int) ([]string, error) {
	var out []string
	if raw, found := p.json[name]; found {
		if err := json.Unmarshal(raw, &out); err != nil {
			var s string
			if json.Unmarshal(raw, &s) != nil {
				return nil, badRequest("invalid_param", "%s must be an array of strings", name)
			}
			out = strings.Split(s, ",")
		}
	} else if text, ok := p.text[name]; ok {
		out = strings.Split(text, ",")
	}
	if len(out) == 0 || len(out) > max {
		return nil, badRequest("invalid_param", "%s must name 1 to %d items", name, max)
	}
	for i := range out {
		if out[i] = strings.TrimSpace(out[i]); out[i] == "" || len(out[i]) > 64 {
			return nil, badRequest("invalid_param", "%s holds an empty or overlong item", name)
		}
	}
	return out, nil
}

// parseCursor reads a cursor from decimal text; empty text is 0.
func parseCursor(name, text string) (int64, error) {
	if text = strings.TrimSpace(text); text == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(text, 10, 64)
	if err != nil || n < 0 {
		return 0, badRequest("invalid_param", "%s must be a message id: a whole number, 0 or more", name)
	}
	return n, nil
}

// seconds returns a duration given in (possibly fractional) seconds, at least
// zero, clamped to max; def when absent.
func (p *params) seconds(name string, def, max time.Duration) (time.Duration, error) {
	f, ok, err := p.number(name)
	if err != nil {
		return 0, err
	}
	if !ok {
		return min(def, max), nil
	}
	if f < 0 || f != f || f > 1e9 {
		return 0, badRequest("invalid_param", "%s must be a number of seconds, 0 or more", name)
	}
	return min(time.Duration(f*float64(time.Second)), max), nil
}

// validName reports whether s is a valid net or topic name:
// 1-64 characters of [A-Za-z0-9._-].
func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// netParam returns the validated net parameter.
func (p *params) netParam() (string, error) {
	net, ok, err := p.str("net")
	if err != nil {
		return "", err
	}
	if !ok || net == "" {
		return "", badRequest("missing_param", "net is required")
	}
	if !validName(net) {
		return "", errInvalidNet
	}
	if p.call != nil {
		p.call.net = net
	}
	return net, nil
}
