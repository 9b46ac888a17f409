// The sim forms' name-value objects (simHeaders, simQueryParams) in JSON,
// and the raw query and target rules: the query decoded as URLSearchParams
// does, and bytes that are not UTF-8 escaped.

package simhttp

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Values is simHeaders or simQueryParams: a name maps to a string, or to an
// array of strings when it repeats. Reading, any other JSON scalar (a
// number a SimClient put in simQueryParams) counts as its JSON text.
type Values map[string][]string

// MarshalJSON writes one value as a string and several as an array,
// names in order.
func (v Values) MarshalJSON() ([]byte, error) {
	names := make([]string, 0, len(v))
	size := 2
	for k, vals := range v {
		names = append(names, k)
		size += len(k) + 4
		for _, s := range vals {
			size += len(s) + 3
		}
	}
	sort.Strings(names)
	b := make([]byte, 0, size+size/8)
	b = append(b, '{')
	for i, k := range names {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendString(b, k)
		b = append(b, ':')
		vals := v[k]
		if len(vals) == 1 {
			b = appendString(b, vals[0])
			continue
		}
		b = append(b, '[')
		for j, s := range vals {
			if j > 0 {
				b = append(b, ',')
			}
			b = appendString(b, s)
		}
		b = append(b, ']')
	}
	return append(b, '}'), nil
}

// appendString appends s as a JSON string, escaping only what JSON
// requires (RFC 8259 7); invalid UTF-8 becomes U+FFFD, as encoding/json
// writes it.
func appendString(b []byte, s string) []byte {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, '\\', 'n')
		case '\r':
			b = append(b, '\\', 'r')
		case '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xF])
		}
		start = i + 1
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// UnmarshalJSON reads an object whose values are strings, arrays of
// strings or other scalars; null is no value.
func (v *Values) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	out := make(Values, len(raw))
	for k, r := range raw {
		r = bytes.TrimSpace(r)
		switch {
		case len(r) > 0 && r[0] == '"':
			out[k] = []string{scalarText(r)}
		case len(r) > 0 && r[0] == '[':
			var list []json.RawMessage
			if err := json.Unmarshal(r, &list); err != nil {
				return err
			}
			for _, e := range list {
				out[k] = append(out[k], scalarText(e))
			}
		case string(r) != "null":
			out[k] = []string{scalarText(r)}
		}
	}
	*v = out
	return nil
}

// scalarText is a JSON string's text, or any other value's JSON text. A
// string without escapes is read without a decoder.
func scalarText(r json.RawMessage) string {
	r = bytes.TrimSpace(r)
	if len(r) >= 2 && r[0] == '"' && bytes.IndexByte(r, '\\') < 0 {
		return string(r[1 : len(r)-1])
	}
	var s string
	if json.Unmarshal(r, &s) == nil {
		return s
	}
	return string(r)
}

// ParseQuery decodes a raw query as the URL standard's
// application/x-www-form-urlencoded parser does (and JavaScript's
// URLSearchParams): only "&" separates, "+" is a space, and a "%" that
// starts no escape stays as it is. Unlike url.ParseQuery it never drops a
// field.
func ParseQuery(raw string) Values {
	out := Values{}
	for _, field := range strings.Split(raw, "&") {
		if field == "" {
			continue
		}
		name, value, _ := strings.Cut(field, "=")
		name, value = formDecode(name), formDecode(value)
		out[name] = append(out[name], value)
	}
	return out
}

// formDecode is one name or value of a form: "+" is a space, escapes are
// decoded where valid, and invalid UTF-8 becomes U+FFFD.
func formDecode(s string) string {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '+':
			b = append(b, ' ')
		case c == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			n, _ := strconv.ParseUint(s[i+1:i+3], 16, 8)
			b = append(b, byte(n))
			i += 2
		default:
			b = append(b, c)
		}
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// EscapeInvalid percent-encodes the bytes of s that are not part of valid
// UTF-8, so a raw path or query always fits in JSON without losing a byte's
// meaning. Valid text, escapes included, is left as it is.
func EscapeInvalid(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			fmt.Fprintf(&b, "%%%02X", s[i])
		} else {
			b.WriteString(s[i : i+n])
		}
		i += n
	}
	return b.String()
}
