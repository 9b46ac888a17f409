// sim_req and sim_res: validation and normalisation. What is stored is what a
// client sent, with defaults filled in and every value kept as raw JSON, so
// numbers, unicode and nesting come back with the same JSON meaning.

package main

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/c2cvia/c2cvia/internal/simhttp"
	"golang.org/x/net/http/httpguts"
)

// simReqFields and simResFields are the fields that may stand at top level
// of a pushreq or pushres instead of inside sim_req or sim_res.
var (
	simReqFields = []string{"simEndpoint", "simMethod", "simQuery", "simHeaders", "simHeadersEncoding", "simBody", "simQueryParams", "simRouteParams", "simBodyEncoding"}
	simResFields = []string{"simStatus", "simHeaders", "simHeadersEncoding", "simBody", "simBodyEncoding"}
)

// simObject gathers a sim_req or sim_res from params: the named object
// parameter, or else its fields at top level. Giving both is an error.
func simObject(p *params, name string, fields []string) (map[string]json.RawMessage, error) {
	topLevel := false
	for _, f := range fields {
		topLevel = topLevel || p.has(f)
	}
	raw, ok, err := p.rawJSON(name)
	if err != nil {
		return nil, err
	}
	if ok {
		if topLevel {
			return nil, badRequest("invalid_"+name, "give %s or its fields at top level, not both", name)
		}
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(raw, &obj); err != nil || obj == nil {
			return nil, badRequest("invalid_"+name, "%s must be a JSON object", name)
		}
		return obj, nil
	}
	obj := map[string]json.RawMessage{}
	for _, f := range fields {
		v, ok, err := p.rawJSON(f)
		if err != nil {
			return nil, err
		}
		if ok {
			obj[f] = v
		}
	}
	return obj, nil
}

// simEnvelope is the body limit of pushreq and pushres: a sim_req or
// sim_res whose body is maxBody bytes in base64, with 64 KiB for the rest
// (headers, endpoint, query).
func simEnvelope(maxBody int64) int64 {
	return int64(base64.StdEncoding.EncodedLen(int(maxBody))) + 64<<10
}

// normalizeSimReq validates a sim_req and returns it as stored: simEndpoint
// required, simMethod defaulting to POST, objects defaulting to {} and
// simBody to null.
func normalizeSimReq(obj map[string]json.RawMessage) ([]byte, error) {
	bad := func(format string, args ...any) error { return badRequest("invalid_sim_req", format, args...) }
	var endpoint string
	if raw, ok := obj["simEndpoint"]; !ok {
		return nil, bad("simEndpoint is required")
	} else if json.Unmarshal(raw, &endpoint) != nil || endpoint == "" {
		return nil, bad("simEndpoint must be a non-empty string such as \"/items/7\"")
	} else if strings.ContainsRune(endpoint, 0) {
		return nil, bad("simEndpoint must hold no NUL")
	}
	if raw, ok := obj["simMethod"]; ok {
		var m string
		if json.Unmarshal(raw, &m) != nil || !validMethod(m) {
			return nil, bad("simMethod must be an HTTP method such as \"GET\"")
		}
	} else {
		obj["simMethod"] = json.RawMessage(`"POST"`)
	}
	if raw, ok := obj["simQuery"]; ok {
		var q string
		if json.Unmarshal(raw, &q) != nil || strings.ContainsAny(q, "# \t\r\n") {
			return nil, bad("simQuery must be a string: the raw query without \"?\", such as \"a=1&b=2\"")
		}
	}
	if err := checkHeaders(obj, bad); err != nil {
		return nil, err
	}
	for _, f := range []string{"simQueryParams", "simRouteParams"} {
		if err := defaultObject(obj, f, bad); err != nil {
			return nil, err
		}
	}
	if err := checkBody(obj, bad); err != nil {
		return nil, err
	}
	return encodeSim(obj)
}

// normalizeSimRes validates a sim_res: simStatus 100-599 (default 200),
// simHeaders an object of strings, simBody any JSON (default null).
func normalizeSimRes(obj map[string]json.RawMessage) ([]byte, error) {
	bad := func(format string, args ...any) error { return badRequest("invalid_sim_res", format, args...) }
	if raw, ok := obj["simStatus"]; ok {
		// A form or query gives the status as text: "200" counts as 200.
		text := string(bytes.TrimSpace(raw))
		var quoted string
		if json.Unmarshal(raw, &quoted) == nil {
			text = quoted
		}
		n, err := strconv.Atoi(text)
		if err != nil || n < 100 || n > 599 {
			return nil, bad("simStatus must be an integer from 100 to 599")
		}
		obj["simStatus"] = json.RawMessage(strconv.Itoa(n))
	} else {
		obj["simStatus"] = json.RawMessage(`200`)
	}
	if err := checkHeaders(obj, bad); err != nil {
		return nil, err
	}
	if err := checkBody(obj, bad); err != nil {
		return nil, err
	}
	return encodeSim(obj)
}

func defaultObject(obj map[string]json.RawMessage, field string, bad func(string, ...any) error) error {
	raw, ok := obj[field]
	if !ok || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		obj[field] = json.RawMessage(`{}`)
		return nil
	}
	if n := objectMembers(raw); n > maxMembers {
		return bad("%s has %d names; at most %d", field, n, maxMembers)
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return bad("%s must be a JSON object", field)
	}
	return nil
}

// checkHeaders requires simHeaders to map names (tokens) to strings or
// arrays of strings without control characters (but tab): they become real
// HTTP headers on the way out of the gateway, where a NUL would be written
// raw, and in a handler's request, which net/http would refuse.
// simHeadersEncoding, when given, marks headers "latin1": their values are
// bytes written one code point per byte, so none may pass U+00FF.
func checkHeaders(obj map[string]json.RawMessage, bad func(string, ...any) error) error {
	if err := defaultObject(obj, "simHeaders", bad); err != nil {
		return err
	}
	var m map[string]json.RawMessage
	_ = json.Unmarshal(obj["simHeaders"], &m)
	values := map[string][]string{}
	for name, v := range m {
		var s string
		var list []string
		switch {
		case json.Unmarshal(v, &s) == nil:
			list = []string{s}
		case json.Unmarshal(v, &list) != nil:
			return bad("simHeaders[%q] must be a string or an array of strings", name)
		}
		if !simhttp.IsToken(name) { // RFC 9110 5.1
			return bad("simHeaders[%q] is not a header name", name)
		}
		for _, v := range list {
			if !httpguts.ValidHeaderFieldValue(v) { // no control character but tab (RFC 9110 5.5)
				return bad("simHeaders[%q] holds a control character (NUL, CR, LF and the like)", name)
			}
		}
		values[http.CanonicalHeaderKey(name)] = append(values[http.CanonicalHeaderKey(name)], list...)
	}
	raw, ok := obj["simHeadersEncoding"]
	if !ok {
		return nil
	}
	var enc map[string]string
	if json.Unmarshal(raw, &enc) != nil {
		return bad(`simHeadersEncoding must be an object such as {"X-Name": "latin1"}`)
	}
	for name, e := range enc {
		if e != "latin1" {
			return bad(`simHeadersEncoding[%q] must be "latin1"`, name)
		}
		for _, v := range values[http.CanonicalHeaderKey(name)] {
			for _, r := range v {
				if r > 0xFF {
					return bad("simHeaders[%q] is marked latin1 but has a character above U+00FF", name)
				}
			}
		}
	}
	return nil
}

// checkBody defaults simBody to null and checks simBodyEncoding: only
// "base64", and then simBody must be a base64 string.
func checkBody(obj map[string]json.RawMessage, bad func(string, ...any) error) error {
	if _, ok := obj["simBody"]; !ok {
		obj["simBody"] = json.RawMessage(`null`)
	}
	raw, ok := obj["simBodyEncoding"]
	if !ok {
		return nil
	}
	var enc, body string
	if json.Unmarshal(raw, &enc) != nil || enc != "base64" {
		return bad(`simBodyEncoding must be "base64"`)
	}
	if json.Unmarshal(obj["simBody"], &body) != nil {
		return bad("simBody must be a base64 string when simBodyEncoding is base64")
	}
	if _, err := base64.StdEncoding.DecodeString(body); err != nil {
		return bad("simBody is not valid base64: %v", err)
	}
	return nil
}

// validMethod reports whether m is an HTTP method token (RFC 9110), 1-32 chars.
func validMethod(m string) bool { return simhttp.ValidMethod(m) }

// encodeSim writes obj compactly without HTML escaping. Values are raw JSON
// and pass through untouched, numbers included.
func encodeSim(obj map[string]json.RawMessage) ([]byte, error) { return encodeJSON(obj) }

// encodeJSON marshals v compactly without HTML escaping ("<" stays "<").
func encodeJSON(v any) ([]byte, error) { return simhttp.Marshal(v) }
