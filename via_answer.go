// How the /via/ gateway writes a SimServer's answer: RFC 9110's body
// rules (simhttp), and what the answer may set on an origin that other nets
// share (path mode) or on a net's own host under a shared suffix (host
// mode).

package main

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"

	"github.com/c2cvia/c2cvia/internal/simhttp"
)

// sandboxCSP is added to every path-mode reply: all nets share the relay's
// origin, so a page served by one net must not script the others.
const sandboxCSP = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"

// originWide are the response headers whose effect reaches the whole
// origin, not the one response: in path mode, where every net shares the
// relay's origin, a net must not set them (cookies, storage wiping, reporting,
// service-worker scope, transport policy, client hints).
var originWide = map[string]bool{
	"Set-Cookie": true, "Set-Cookie2": true, "Clear-Site-Data": true,
	"Nel": true, "Report-To": true, "Reporting-Endpoints": true,
	"Service-Worker-Allowed": true, "Strict-Transport-Security": true,
	"Alt-Svc": true, "Accept-Ch": true, "Critical-Ch": true,
	"Origin-Agent-Cluster": true, "Public-Key-Pins": true,
	"Public-Key-Pins-Report-Only": true, "Expect-Ct": true,
	"Set-Login": true, "Activate-Storage-Access": true, "Observe-Browsing-Topics": true,
	// Credentialed CORS would lend the shared origin's credentials to
	// whichever origin the net names.
	"Access-Control-Allow-Credentials": true,
}

// writeAnswer writes a stored sim_res as the HTTP response to r, as the
// web server behind a reverse proxy would have: simhttp applies RFC 9110's
// body rules, and an answer without Content-Type is sent without one (not
// sniffed). In path mode, where all nets share the relay's origin, the
// origin-wide headers are dropped, the sandbox CSP is added, and a
// root-relative Location or Refresh URL, or one naming the relay's own
// origin, is put under /via/NET. In host mode
// what reaches past the net's own host is dropped: a cookie for another
// domain, and Clear-Site-Data's "cookies" (cookies are shared by every host
// under the suffix unless it is a public suffix). The SimServer's headers
// replace the relay's, except Vary, which gains Origin whenever
// Access-Control-Allow-Origin names an origin.
func (g *gateway) writeAnswer(w http.ResponseWriter, r *http.Request, t viaTarget, simRes []byte) error {
	_, body, err := g.writeHead(w, r, t, simRes, false)
	if err != nil {
		return err
	}
	_, _ = w.Write(body)
	return nil
}

// writeHead writes the status and headers of a sim_res as writeAnswer
// does, and returns the status written and the body bytes to write after
// them. streamed: the sim_res is the head of an answer whose body comes
// in parts (simhttp.Response.HTTPHead).
func (g *gateway) writeHead(w http.ResponseWriter, r *http.Request, t viaTarget, simRes []byte, streamed bool) (int, []byte, error) {
	var res simhttp.Response
	if err := json.Unmarshal(simRes, &res); err != nil {
		return 0, nil, err
	}
	httpResponse := res.HTTPResponse
	if streamed {
		httpResponse = res.HTTPHead
	}
	status, h, body, err := httpResponse(r.Method)
	if nf := (*simhttp.NotFinalError)(nil); errors.As(err, &nf) {
		return 0, nil, newAPIError(http.StatusBadGateway, "bad_gateway", nf.Error())
	} else if err != nil {
		return 0, nil, newAPIError(http.StatusBadGateway, "bad_gateway", "the SimServer's answer cannot be written: "+err.Error())
	}
	out := w.Header()
	vary := out.Values("Vary")
	for name, vals := range h {
		if t.mode == viaPath && originWide[name] {
			continue
		}
		switch name {
		case "Vary":
			vary = vals
		case "Location":
			vals = []string{underPrefix(strings.TrimSpace(vals[0]), r.Host, t)}
		case "Refresh":
			vals = []string{refreshUnderPrefix(vals[0], r.Host, t)}
		case "Set-Cookie":
			if vals = ownCookies(vals, r.Host, t); len(vals) == 0 {
				continue
			}
		case "Clear-Site-Data":
			if vals = ownSiteData(vals, t); len(vals) == 0 {
				continue
			}
		}
		out[name] = vals
	}
	if _, ok := h["Content-Type"]; !ok {
		out["Content-Type"] = nil // as sent: net/http would sniff one
	}
	if o := out.Get("Access-Control-Allow-Origin"); o != "" && o != "*" && !varies(vary, "Origin") {
		vary = append(vary, "Origin")
	}
	if len(vary) > 0 {
		out["Vary"] = vary
	}
	if t.mode == viaPath {
		out.Add("Content-Security-Policy", sandboxCSP)
	}
	w.WriteHeader(status)
	return status, body, nil
}

// underPrefix puts a root-relative Location (/login) under the net's path
// prefix, as a reverse proxy that mounts an app under a path does; so too
// an absolute one that names the relay's own origin (host, as the caller
// asked for it), which a handler builds from its request's URL. A Location
// that already starts with the prefix, or names another host, is left.
func underPrefix(loc, host string, t viaTarget) string {
	p := t.prefix()
	if p == "" {
		return loc
	}
	if u, err := url.Parse(loc); err == nil && u.IsAbs() && u.User == nil && u.Host != "" && strings.EqualFold(u.Host, host) &&
		(u.Scheme == "http" || u.Scheme == "https") {
		origin := loc[:len(u.Scheme)+len("://")+len(u.Host)]
		rest := loc[len(origin):]
		if rest == "" {
			rest = "/"
		}
		if strings.HasPrefix(rest, "/") {
			return origin + underPrefix(rest, "", t)
		}
		return loc
	}
	if !strings.HasPrefix(loc, "/") || strings.HasPrefix(loc, "//") ||
		loc == p || strings.HasPrefix(loc, p+"/") || strings.HasPrefix(loc, p+"?") {
		return loc
	}
	return p + loc
}

// refreshUnderPrefix puts the URL of a Refresh header ("5; url=/next")
// under the net's prefix, as underPrefix does for Location.
func refreshUnderPrefix(v, host string, t viaTarget) string {
	delay, rest, ok := strings.Cut(v, ";")
	if !ok {
		return v
	}
	rest = strings.TrimSpace(rest)
	if len(rest) < 4 || !strings.EqualFold(rest[:3], "url") {
		return v
	}
	u := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(rest[3:]), "="))
	u = strings.Trim(u, `"'`)
	return delay + "; url=" + underPrefix(u, host, t)
}

// ownCookies keeps, in host mode, the cookies that stay on the net's own
// host: one with a Domain attribute naming any other domain (its parent,
// and so every net) is dropped.
func ownCookies(cookies []string, host string, t viaTarget) []string {
	if t.mode != viaHost {
		return cookies
	}
	host, _ = splitHostPort(host)
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	var kept []string
	for _, c := range cookies {
		own := true
		for _, attr := range strings.Split(c, ";")[1:] {
			name, value, _ := strings.Cut(strings.TrimSpace(attr), "=")
			if strings.EqualFold(strings.TrimSpace(name), "domain") {
				d := strings.TrimSuffix(strings.TrimPrefix(strings.ToLower(strings.TrimSpace(value)), "."), ".")
				own = own && d == host
			}
		}
		if own {
			kept = append(kept, c)
		}
	}
	return kept
}

// ownSiteData drops, in host mode, the Clear-Site-Data types that reach
// past the net's origin: "cookies" (the whole registrable domain) and "*".
func ownSiteData(vals []string, t viaTarget) []string {
	if t.mode != viaHost {
		return vals
	}
	var kept []string
	for _, v := range vals {
		for _, typ := range strings.Split(v, ",") {
			typ = strings.TrimSpace(typ)
			if typ != "" && typ != `"cookies"` && typ != `"*"` {
				kept = append(kept, typ)
			}
		}
	}
	if len(kept) == 0 {
		return nil
	}
	return []string{strings.Join(kept, ", ")}
}

// varies reports whether the Vary values name field (or "*").
func varies(vary []string, field string) bool {
	for _, v := range vary {
		for _, f := range strings.Split(v, ",") {
			if f = strings.TrimSpace(f); f == "*" || strings.EqualFold(f, field) {
				return true
			}
		}
	}
	return false
}
