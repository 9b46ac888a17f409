// Package simhttp is the one mapping between HTTP messages and the relay's
// sim forms: an HTTP request and its sim_req, an HTTP response and its
// sim_res. The relay's /via/ gateway and the Go client both map through it,
// and the JavaScript SDK follows the same rules; the golden cases in the
// module's testdata/mapping hold both to them.
//
// The rules (docs/API.md, "Gateway"):
//
//   - Bodies travel as their exact bytes: a JSON string when they are valid
//     UTF-8, else base64 with simBodyEncoding "base64". Nothing is parsed or
//     re-encoded, so a signature over the bytes still verifies.
//   - simEndpoint is the path exactly as sent (escapes kept, nothing
//     cleaned) and simQuery the raw query; simQueryParams is the query
//     decoded as the URL standard's application/x-www-form-urlencoded parser
//     does, for SimServers that want fields.
//   - simHeaders holds the end-to-end headers, names in canonical form: a
//     value is a string, or an array of strings when the header repeats.
//     Hop-by-hop headers (RFC 9110 7.6.1, and those the Connection header
//     names) never travel. A header whose bytes are not UTF-8 travels with
//     one code point per byte, and simHeadersEncoding names it "latin1", so
//     its bytes can be rebuilt (the Fetch standard shows header values the
//     same way).
//   - A response is written following RFC 9110: no body for HEAD, 1xx, 204,
//     205 and 304; Content-Length is the body's length, except for HEAD and
//     304, where the length the handler declared is kept.
package simhttp

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Request is a sim_req: an HTTP request as the relay stores it.
type Request struct {
	Method          string            `json:"simMethod"`
	Endpoint        string            `json:"simEndpoint"`
	Query           *string           `json:"simQuery,omitempty"` // raw, without "?"; nil when a SimClient gave only simQueryParams
	QueryParams     Values            `json:"simQueryParams"`
	RouteParams     json.RawMessage   `json:"simRouteParams"`
	Headers         Values            `json:"simHeaders"`
	HeadersEncoding map[string]string `json:"simHeadersEncoding,omitempty"`
	Body            json.RawMessage   `json:"simBody"`
	BodyEncoding    string            `json:"simBodyEncoding,omitempty"`
}

// Response is a sim_res: an HTTP response as the relay stores it.
type Response struct {
	Status          int               `json:"simStatus"`
	Headers         Values            `json:"simHeaders"`
	HeadersEncoding map[string]string `json:"simHeadersEncoding,omitempty"`
	Body            json.RawMessage   `json:"simBody"`
	BodyEncoding    string            `json:"simBodyEncoding,omitempty"`
}

// hopByHop are the headers of one connection, never forwarded: RFC 9110
// 7.6.1, and the list net/http/httputil.ReverseProxy removes.
var hopByHop = map[string]bool{
	"Connection": true, "Proxy-Connection": true, "Keep-Alive": true,
	"Proxy-Authenticate": true, "Proxy-Authorization": true, "Te": true,
	"Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
}

// IsHopByHop reports whether the header name belongs to one connection:
// a hop-by-hop header, or one that a Connection value (conn) names.
func IsHopByHop(name string, conn []string) bool {
	name = http.CanonicalHeaderKey(name)
	if hopByHop[name] {
		return true
	}
	for _, v := range conn {
		for _, f := range strings.Split(v, ",") {
			if http.CanonicalHeaderKey(strings.TrimSpace(f)) == name {
				return true
			}
		}
	}
	return false
}

// FromHeader maps h to simHeaders and simHeadersEncoding, leaving out the
// hop-by-hop headers; names become canonical.
func FromHeader(h http.Header) (Values, map[string]string) {
	out := make(Values, len(h))
	var enc map[string]string
	conn := h.Values("Connection")
	for name, vals := range h {
		if len(vals) == 0 || IsHopByHop(name, conn) {
			continue
		}
		name = http.CanonicalHeaderKey(name)
		latin1 := false
		for _, v := range vals {
			latin1 = latin1 || !utf8.ValidString(v)
		}
		for _, v := range vals {
			if latin1 {
				v = isomorphicDecode(v)
			}
			out[name] = append(out[name], v)
		}
		if latin1 {
			if enc == nil {
				enc = map[string]string{}
			}
			enc[name] = "latin1"
		}
	}
	return out, enc
}

// ToHeader maps simHeaders back to an http.Header, hop-by-hop headers left
// out and latin1 values turned back into their bytes.
func ToHeader(v Values, enc map[string]string) (http.Header, error) {
	h := make(http.Header, len(v))
	latin1 := map[string]bool{}
	for name, e := range enc {
		if e != "latin1" {
			return nil, fmt.Errorf("simHeadersEncoding[%q] must be \"latin1\"", name)
		}
		latin1[http.CanonicalHeaderKey(name)] = true
	}
	var conn []string
	for name, vals := range v {
		if http.CanonicalHeaderKey(name) == "Connection" {
			conn = vals
		}
	}
	for name, vals := range v {
		if IsHopByHop(name, conn) {
			continue
		}
		key := http.CanonicalHeaderKey(name)
		for _, s := range vals {
			if latin1[key] {
				b, ok := isomorphicEncode(s)
				if !ok {
					return nil, fmt.Errorf("simHeaders[%q] is marked latin1 but has a character above U+00FF", name)
				}
				s = b
			}
			h[key] = append(h[key], s)
		}
	}
	return h, nil
}

// isomorphicDecode maps each byte to the code point of the same value.
func isomorphicDecode(s string) string {
	r := make([]rune, len(s))
	for i := 0; i < len(s); i++ {
		r[i] = rune(s[i])
	}
	return string(r)
}

// isomorphicEncode is isomorphicDecode's inverse; ok is false for a code
// point above U+00FF.
func isomorphicEncode(s string) (string, bool) {
	b := make([]byte, 0, len(s))
	for _, r := range s {
		if r > 0xFF {
			return "", false
		}
		b = append(b, byte(r))
	}
	return string(b), true
}

// EncodeBody is simBody and simBodyEncoding for the exact bytes b: null for
// none, a JSON string for valid UTF-8, else base64.
func EncodeBody(b []byte) (body json.RawMessage, encoding string) {
	if len(b) == 0 {
		return json.RawMessage("null"), ""
	}
	if utf8.Valid(b) {
		out, _ := Marshal(string(b))
		return out, ""
	}
	out, _ := Marshal(base64.StdEncoding.EncodeToString(b))
	return out, "base64"
}

// DecodeBody is the bytes of a simBody: base64 decoded, a string as its
// UTF-8 text, null (or nothing) as none. Any other JSON value, which a
// SimClient's own pushreq may carry, is its compact JSON text (as the relay
// stores it); then isJSON is true
// and the caller labels it application/json unless it has a type. An object
// whose Content-Type (in h) is a form is written as a form.
func DecodeBody(raw json.RawMessage, encoding string, h http.Header) (b []byte, isJSON bool, err error) {
	raw = bytes.TrimSpace(raw)
	if encoding == "base64" {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, false, errors.New("simBody must be a base64 string when simBodyEncoding is base64")
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, false, fmt.Errorf("simBody is not valid base64: %w", err)
		}
		return b, false, nil
	}
	if encoding != "" {
		return nil, false, fmt.Errorf("simBodyEncoding must be \"base64\", not %q", encoding)
	}
	if len(raw) == 0 || string(raw) == "null" {
		return nil, false, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []byte(s), false, nil
	}
	if raw[0] == '{' && MediaType(h.Get("Content-Type")) == "application/x-www-form-urlencoded" {
		var form Values
		if json.Unmarshal(raw, &form) == nil {
			return []byte(url.Values(form).Encode()), false, nil
		}
	}
	var compact bytes.Buffer
	if err := json.Compact(&compact, raw); err != nil {
		return nil, false, fmt.Errorf("simBody: %w", err)
	}
	return compact.Bytes(), true, nil
}

// MediaType is the lower-case media type of a Content-Type value, "" when
// there is none.
func MediaType(contentType string) string {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		mt, _, _ = strings.Cut(contentType, ";")
		mt = strings.ToLower(strings.TrimSpace(mt))
	}
	return mt
}

// Target is the request target (RFC 9112 3.2) that a handler's request
// gets: simEndpoint and simQuery, or when a SimClient gave only
// simQueryParams, those encoded in name order.
func (r *Request) Target() string {
	endpoint := r.Endpoint
	if !strings.HasPrefix(endpoint, "/") {
		endpoint = "/" + endpoint
	}
	query := ""
	if r.Query != nil {
		query = *r.Query
	} else if len(r.QueryParams) > 0 {
		query = url.Values(r.QueryParams).Encode()
	}
	if query == "" {
		return endpoint
	}
	return endpoint + "?" + query
}

// FromRequest is the sim_req of an HTTP request that target names (path
// and query exactly as sent) with the exact body bytes. Host is h's Host
// value or, for a server-side request, the host given apart; the body's
// Content-Length travels as sent.
func FromRequest(method, target, host string, h http.Header, body []byte) Request {
	endpoint, query, _ := strings.Cut(target, "?")
	endpoint, query = EscapeInvalid(endpoint), EscapeInvalid(query)
	headers, enc := FromHeader(h)
	if host != "" {
		headers["Host"] = []string{host}
		if !utf8.ValidString(host) {
			headers["Host"] = []string{isomorphicDecode(host)}
			if enc == nil {
				enc = map[string]string{}
			}
			enc["Host"] = "latin1"
		}
	}
	r := Request{
		Method:          method,
		Endpoint:        endpoint,
		Query:           &query,
		QueryParams:     ParseQuery(query),
		RouteParams:     json.RawMessage("{}"),
		Headers:         headers,
		HeadersEncoding: enc,
	}
	r.Body, r.BodyEncoding = EncodeBody(body)
	return r
}

// HTTPRequest rebuilds the request a web server would have handed its
// handler: method, target (r.URL and r.RequestURI as parsed from it), Host
// (r.Host; gone from the header map, as net/http does), headers and the
// exact body, with ContentLength its length. The caller sets the context
// and RemoteAddr.
func (r *Request) HTTPRequest() (*http.Request, error) {
	method := r.Method
	if method == "" {
		method = http.MethodPost
	}
	if !ValidMethod(method) {
		return nil, fmt.Errorf("the method %q is not an HTTP method", method)
	}
	target := r.Target()
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return nil, fmt.Errorf("the request target %q: %w", target, err)
	}
	h, err := ToHeader(r.Headers, r.HeadersEncoding)
	if err != nil {
		return nil, err
	}
	body, isJSON, err := DecodeBody(r.Body, r.BodyEncoding, h)
	if err != nil {
		return nil, err
	}
	if isJSON && h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/json")
	}
	host := h.Get("Host")
	h.Del("Host")
	req := &http.Request{
		Method:     method,
		URL:        u,
		Proto:      "HTTP/1.1",
		ProtoMajor: 1,
		ProtoMinor: 1,
		Header:     h,
		Body:       http.NoBody,
		Host:       host,
		RequestURI: target,
	}
	if len(body) > 0 || h.Get("Content-Length") != "" {
		req.ContentLength = int64(len(body))
		h.Set("Content-Length", strconv.Itoa(len(body)))
	}
	if len(body) > 0 {
		req.Body = readCloser{bytes.NewReader(body)}
	}
	return req, nil
}

type readCloser struct{ *bytes.Reader }

func (readCloser) Close() error { return nil }

// ValidMethod reports whether m is an HTTP method: a token (RFC 9110 9.1)
// of at most 32 characters.
func ValidMethod(m string) bool { return len(m) <= 32 && IsToken(m) }

// IsToken reports whether s is a token (RFC 9110 5.6.2), as methods and
// header names are.
func IsToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// FromResponse is the sim_res of a handler's response: status, headers
// (Content-Length only when the handler set it) and the exact body.
func FromResponse(status int, h http.Header, body []byte) Response {
	headers, enc := FromHeader(h)
	res := Response{Status: status, Headers: headers, HeadersEncoding: enc}
	res.Body, res.BodyEncoding = EncodeBody(body)
	return res
}

// NotFinalError is HTTPResponse's error for a sim_res whose status is no
// final HTTP status (a 1xx, or past 999): nothing a caller can be given.
type NotFinalError struct{ Status int }

func (e *NotFinalError) Error() string {
	return fmt.Sprintf("the SimServer answered %d, which is not a final HTTP status", e.Status)
}

// TargetOf is the request target (RFC 9112 3.2) of u: its escaped path
// ("/" when it has none) and its raw query, as net/http sends them.
func TargetOf(u *url.URL) string {
	target := u.EscapedPath()
	if target == "" {
		target = "/"
	}
	if u.RawQuery != "" || u.ForceQuery {
		target += "?" + u.RawQuery
	}
	return target
}

// Bodyless reports whether a response with this status to this method has
// no body (RFC 9110 6.4.1, 9.3.2, 15.3.6).
func Bodyless(method string, status int) bool {
	return method == http.MethodHead || status < 200 || status == http.StatusNoContent ||
		status == http.StatusResetContent || status == http.StatusNotModified
}

// HTTPResponse is what a caller gets for res in answer to method: the
// status, the end-to-end headers, and the body to write, following RFC
// 9110's rules; a *NotFinalError for a status under 200 or past 999. Content-Length is the body's length; for HEAD and 304 the
// length the handler declared is kept (or none); 1xx and 204 have none,
// and 205 has 0. A JSON simBody other than a string gets Content-Type
// application/json unless the headers name a type.
func (res *Response) HTTPResponse(method string) (status int, h http.Header, body []byte, err error) {
	return res.httpResponse(method, false)
}

// HTTPHead is HTTPResponse for the head of an answer whose body comes in
// parts (docs/API.md, "Streamed answers and cancellation"): the status
// and headers to write before the parts, and the head's own body bytes
// (usually none) to write first. The body's length is not known yet, so
// Content-Length is the one the SimServer declared, or none (the body is
// then chunked); the other rules are HTTPResponse's.
func (res *Response) HTTPHead(method string) (status int, h http.Header, body []byte, err error) {
	return res.httpResponse(method, true)
}

func (res *Response) httpResponse(method string, streamed bool) (status int, h http.Header, body []byte, err error) {
	status = res.Status
	if status == 0 {
		status = http.StatusOK
	}
	if status < 200 || status > 999 {
		return 0, nil, nil, &NotFinalError{Status: status}
	}
	if h, err = ToHeader(res.Headers, res.HeadersEncoding); err != nil {
		return 0, nil, nil, err
	}
	body, isJSON, err := DecodeBody(res.Body, res.BodyEncoding, h)
	if err != nil {
		return 0, nil, nil, err
	}
	if isJSON && h.Get("Content-Type") == "" {
		h.Set("Content-Type", "application/json")
	}
	declared := h.Get("Content-Length")
	h.Del("Content-Length")
	switch {
	case status < 200 || status == http.StatusNoContent:
	case status == http.StatusResetContent:
		h.Set("Content-Length", "0")
	case method == http.MethodHead || status == http.StatusNotModified:
		if n, err := strconv.ParseUint(declared, 10, 63); err == nil {
			h.Set("Content-Length", strconv.FormatUint(n, 10))
		} else if method == http.MethodHead && status != http.StatusNotModified && len(body) > 0 {
			h.Set("Content-Length", strconv.Itoa(len(body)))
		}
	case streamed:
		if n, err := strconv.ParseUint(declared, 10, 63); err == nil {
			h.Set("Content-Length", strconv.FormatUint(n, 10))
		}
	default:
		h.Set("Content-Length", strconv.Itoa(len(body)))
	}
	if Bodyless(method, status) {
		body = nil
	}
	return status, h, body, nil
}

// Marshal is json.Marshal as the relay writes sim forms: compact, without
// HTML escaping ("<" stays "<"), a json.RawMessage inside as written, so
// numbers keep every digit.
func Marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}
