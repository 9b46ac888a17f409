// The /via/ gateway: any plain HTTP client (curl, a browser, a webhook
// sender) reaches a net's SimServer. The request becomes a stored sim_req,
// the connection is held until the SimServer answers, and the sim_res comes
// back as a real HTTP response.

package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// viaPeer is the `from` of gateway requests; their result tokens have the
// peer_id "via:RID". Real peer_ids are 16 random characters, never these.
const viaPeer = "via"

// sandboxCSP is added to every path-mode reply: all nets share the relay's
// origin, so a page served by one net must not script the others.
const sandboxCSP = "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads"

// hopByHop are the headers that belong to one connection, not to the request
// or response (RFC 9110 7.6.1); they never cross the gateway.
var hopByHop = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Te": true, "Trailer": true,
	"Transfer-Encoding": true, "Upgrade": true,
}

func isHopByHop(name string, conn []string) bool {
	name = http.CanonicalHeaderKey(name)
	if hopByHop[name] || strings.HasPrefix(name, "Proxy-") {
		return true
	}
	for _, v := range conn { // headers that the Connection header names
		for _, f := range strings.Split(v, ",") {
			if http.CanonicalHeaderKey(strings.TrimSpace(f)) == name {
				return true
			}
		}
	}
	return false
}

// viaMode tells how a gateway request named its net.
type viaMode int

const (
	viaPath viaMode = iota // /via/NET/path on the relay's own origin
	viaHost                // NET.via.example.com/path: the net's own origin
)

// gateway serves /via/ requests.
type gateway struct {
	st      *store
	lp      *poller
	cfg     config
	answers *answerBox
}

// answerBox hands a SimServer's answer from pushres to the gateway request
// waiting for it, in memory, after the answer is committed.
type answerBox struct {
	mu      sync.Mutex
	waiting map[string]chan []byte // rid -> its waiting gateway request
}

func newAnswerBox() *answerBox { return &answerBox{waiting: map[string]chan []byte{}} }

// expect makes rid's answer deliverable; done forgets it.
func (b *answerBox) expect(rid string) (answer <-chan []byte, done func()) {
	ch := make(chan []byte, 1)
	b.mu.Lock()
	b.waiting[rid] = ch
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		delete(b.waiting, rid)
		b.mu.Unlock()
	}
}

// deliver gives rid's committed sim_res to the gateway request waiting for
// it, if one is.
func (b *answerBox) deliver(rid string, simRes []byte) {
	b.mu.Lock()
	ch := b.waiting[rid]
	b.mu.Unlock()
	if ch != nil {
		select {
		case ch <- simRes:
		default: // delivered already: an answer is accepted once
		}
	}
}

// handleVia serves `ANY /via/{net}/{path...}`.
func (g *gateway) handleVia(w http.ResponseWriter, r *http.Request) error {
	net := r.PathValue("net")
	if !validName(net) {
		return errInvalidNet
	}
	// The escaped path keeps %2F and friends as the client sent them.
	prefix := "/via/" + net
	endpoint := strings.TrimPrefix(r.URL.EscapedPath(), prefix)
	if !strings.HasPrefix(endpoint, "/") {
		endpoint = "/" + strings.TrimPrefix(r.URL.Path, prefix)
	}
	mode := viaPath
	if r.Context().Value(viaHostMode{}) != nil {
		mode = viaHost
	}
	return g.forward(w, r, net, endpoint, mode)
}

// handleViaRoot sends /via/NET to /via/NET/, where relative links resolve.
func handleViaRoot(w http.ResponseWriter, r *http.Request) error {
	if !validName(r.PathValue("net")) {
		return errInvalidNet
	}
	target := r.URL.EscapedPath() + "/"
	if r.URL.RawQuery != "" {
		target += "?" + r.URL.RawQuery
	}
	http.Redirect(w, r, target, http.StatusPermanentRedirect)
	return nil
}

// hostNet returns the net that a host-mode Host names, if any: with suffix
// ".via.example.com", "demo.via.example.com:8443" names "demo".
func hostNet(host, suffix string) (string, bool) {
	if suffix == "" {
		return "", false
	}
	host, _ = splitHostPort(host)
	if len(host) <= len(suffix) || !strings.EqualFold(host[len(host)-len(suffix):], suffix) {
		return "", false
	}
	net := host[:len(host)-len(suffix)]
	return net, validName(net)
}

// splitHostPort splits host:port, leaving a bare host (or [v6]) alone.
func splitHostPort(hostport string) (host, port string) {
	i := strings.LastIndexByte(hostport, ':')
	if i < 0 || strings.HasSuffix(hostport, "]") {
		return hostport, ""
	}
	return hostport[:i], hostport[i+1:]
}

// viaHostMode marks a request that named its net by host (host mode).
type viaHostMode struct{}

// withViaHost serves hosts NET<suffix> as the gateway in host mode: the
// request is rewritten to /via/NET/path, so it takes the one /via/ route.
func withViaHost(suffix string, next http.Handler) http.Handler {
	if suffix == "" {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		net, ok := hostNet(r.Host, suffix)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), viaHostMode{}, true))
		u := *r.URL
		u.Path = "/via/" + net + u.Path
		if u.RawPath != "" {
			u.RawPath = "/via/" + net + u.RawPath
		}
		r.URL = &u
		next.ServeHTTP(w, r)
	})
}

// isGateway reports whether r goes to the gateway (either mode).
func isGateway(r *http.Request) bool { return strings.HasPrefix(r.URL.Path, "/via/") }

// preference is what a client asked for with Prefer (RFC 7240).
type preference struct {
	async bool          // respond-async
	wait  time.Duration // wait=N; -1 when not given
}

func parsePrefer(h http.Header) preference {
	p := preference{wait: -1}
	for _, v := range h.Values("Prefer") {
		for _, pref := range strings.Split(v, ",") {
			name, val, _ := strings.Cut(strings.TrimSpace(pref), "=")
			name = strings.ToLower(strings.TrimSpace(name))
			val = strings.Trim(strings.TrimSpace(strings.SplitN(val, ";", 2)[0]), `"`)
			switch name {
			case "respond-async":
				p.async = true
			case "wait":
				if n, err := strconv.ParseUint(val, 10, 32); err == nil {
					p.wait = time.Duration(n) * time.Second
				}
			}
		}
	}
	return p
}

// forward stores the request as a sim_req for net and answers with the
// SimServer's sim_res: at once when it comes within the wait, else 504, or
// 202 with a Location to fetch it later when the client asked (Prefer).
func (g *gateway) forward(w http.ResponseWriter, r *http.Request, net, endpoint string, mode viaMode) error {
	simReq, err := gatewayRequest(w, r, endpoint, g.cfg.MaxBody)
	if err != nil {
		return err
	}
	pref := parsePrefer(r.Header)
	storeAndForward := pref.async || pref.wait >= 0
	wait := g.cfg.ViaTimeout
	if pref.wait >= 0 {
		wait = min(wait, pref.wait)
	}
	if pref.async && pref.wait < 0 {
		wait = 0
	}

	// The answer comes in memory from pushres (answerBox), so waiting costs
	// no read of the store; only a change by time (expiry, a last lease
	// running out) is read from it. The box is ready before the request is
	// stored: no answer can come before it.
	ctx := r.Context()
	rid := newRID()
	answer, done := g.answers.expect(rid)
	defer done()
	owner, secret, expiresAt, err := g.st.pushDetached(ctx, net, rid, viaPeer, simReq, storeAndForward)
	if err != nil {
		return err
	}
	g.lp.hub.notify(netSignal(net))

	// The request was just stored as queued: until a wake-up (an answer, or
	// its last lease handed out) or its TTL, nothing is read from the store.
	req := requestState{status: statusQueued}
	first := true
	_, err = g.lp.poll(ctx, pollVia, tokenSignal(owner.Hash), wait, func() (bool, time.Time, error) {
		select {
		case req.simRes = <-answer:
			req.status = statusAnswered
			return true, time.Time{}, nil
		default:
		}
		if first {
			first = false
			return false, time.UnixMilli(expiresAt), nil
		}
		var err error
		if req, err = g.st.requestForOwner(ctx, owner, rid); err != nil {
			return false, time.Time{}, err
		}
		switch req.status {
		case statusAnswered, statusExpired, statusFailed:
			return true, time.Time{}, nil
		}
		return false, req.next(), nil
	})
	if err != nil {
		return err
	}
	switch req.status {
	case statusAnswered:
		return writeSimRes(w, req.simRes, mode)
	case statusExpired:
		return errExpired
	case statusFailed:
		return errFailed
	}
	if !storeAndForward && g.lp.stopping() {
		return errStoreClosed // the request is stored; the SimServer gets it after the restart
	}
	if !storeAndForward {
		return newAPIError(http.StatusGatewayTimeout, "gateway_timeout", fmt.Sprintf(
			"no SimServer of net %q answered within %s", net, wait))
	}
	w.Header().Set("Location", g.resultURL(r, mode, rid, secret))
	w.Header().Set("Preference-Applied", "respond-async")
	writeJSON(w, http.StatusAccepted, struct {
		RID    string `json:"rid"`
		Status string `json:"status"`
	}{rid, req.status})
	return nil
}

// resultURL is the capability URL that fetches a stored-and-forwarded
// answer through pullsmart. In host mode the net's host serves only the
// net, so the URL names the suffix host (via.example.com), which must reach
// the relay too.
func (g *gateway) resultURL(r *http.Request, mode viaMode, rid, secret string) string {
	u := url.URL{Path: "/api/v1/client/pullsmart", RawQuery: url.Values{"rid": {rid}, "token": {secret}}.Encode()}
	if mode == viaHost {
		u.Scheme = "http"
		if r.TLS != nil {
			u.Scheme = "https"
		}
		u.Host = strings.TrimPrefix(g.cfg.ViaHost, ".")
		if _, port := splitHostPort(r.Host); port != "" {
			u.Host += ":" + port
		}
	}
	return u.String()
}

// gatewayRequest maps a plain HTTP request to a stored sim_req.
func gatewayRequest(w http.ResponseWriter, r *http.Request, endpoint string, maxBody int64) ([]byte, error) {
	body, err := readBody(w, r, maxBody)
	if err != nil {
		return nil, err
	}
	obj := map[string]any{
		"simEndpoint":    endpoint,
		"simMethod":      r.Method,
		"simHeaders":     gatewayHeaders(r),
		"simQueryParams": valuesObject(r.URL.Query()),
		"simRouteParams": map[string]any{},
		"simBody":        nil,
	}
	if len(body) > 0 {
		obj["simBody"], obj["simBodyEncoding"] = gatewayBody(r.Header.Get("Content-Type"), body)
		if obj["simBodyEncoding"] == "" {
			delete(obj, "simBodyEncoding")
		}
	}
	return encodeJSON(obj)
}

// gatewayHeaders keeps the end-to-end headers: one value as a string,
// repeated ones as an array. Like a reverse proxy, the gateway appends the
// client's address to X-Forwarded-For, so the SimServer knows who asked.
func gatewayHeaders(r *http.Request) map[string]any {
	out := make(map[string]any, len(r.Header)+1)
	conn := r.Header.Values("Connection")
	for name, vals := range r.Header {
		if isHopByHop(name, conn) {
			continue
		}
		if len(vals) == 1 {
			out[name] = vals[0]
		} else {
			out[name] = vals
		}
	}
	if host, _ := splitHostPort(r.RemoteAddr); host != "" {
		host = strings.Trim(host, "[]")
		if prior := r.Header.Values("X-Forwarded-For"); len(prior) > 0 {
			host = strings.Join(prior, ", ") + ", " + host
		}
		out["X-Forwarded-For"] = host
	}
	return out
}

// valuesObject turns a query or form into an object: a value is a string,
// or an array of strings when the name repeats.
func valuesObject(v url.Values) map[string]any {
	out := make(map[string]any, len(v))
	for k, vals := range v {
		if len(vals) == 1 {
			out[k] = vals[0]
		} else {
			out[k] = vals
		}
	}
	return out
}

// gatewayBody turns a request body into simBody: parsed JSON for JSON, an
// object for a form, a string for text, else base64 (then the encoding is
// "base64").
func gatewayBody(contentType string, body []byte) (simBody any, encoding string) {
	mt, _, _ := mime.ParseMediaType(contentType)
	switch {
	case mt == "application/json" || strings.HasSuffix(mt, "+json"):
		if json.Valid(body) && jsonDepthOK(body, maxJSONDepth) { // else stored as text
			return json.RawMessage(body), ""
		}
	case mt == "application/x-www-form-urlencoded":
		if form, err := url.ParseQuery(string(body)); err == nil {
			return valuesObject(form), ""
		}
	}
	if isText(mt) && utf8.Valid(body) {
		return string(body), ""
	}
	return base64.StdEncoding.EncodeToString(body), "base64"
}

// isText reports whether a media type is text: text/*, JSON, XML, forms
// and scripts. Anything else (images, octet streams, unknown) is binary.
func isText(mt string) bool {
	switch {
	case strings.HasPrefix(mt, "text/"), strings.HasSuffix(mt, "+json"), strings.HasSuffix(mt, "+xml"):
		return true
	}
	switch mt {
	case "application/json", "application/xml", "application/javascript",
		"application/x-www-form-urlencoded", "application/graphql":
		return true
	}
	return false
}

// writeSimRes writes a stored sim_res as the HTTP response.
func writeSimRes(w http.ResponseWriter, simRes []byte, mode viaMode) error {
	var res struct {
		Status   int                        `json:"simStatus"`
		Headers  map[string]json.RawMessage `json:"simHeaders"`
		Body     json.RawMessage            `json:"simBody"`
		Encoding string                     `json:"simBodyEncoding"`
	}
	if err := json.Unmarshal(simRes, &res); err != nil {
		return err
	}
	if res.Status < 200 {
		return newAPIError(http.StatusBadGateway, "bad_gateway", fmt.Sprintf(
			"the SimServer answered %d, which is not a final HTTP status", res.Status))
	}

	var body []byte
	var s string
	switch {
	case res.Encoding == "base64":
		_ = json.Unmarshal(res.Body, &s)
		body, _ = base64.StdEncoding.DecodeString(s) // checked on pushres
	case len(res.Body) == 0 || string(res.Body) == "null":
	case json.Unmarshal(res.Body, &s) == nil:
		body = []byte(s)
	default:
		body = res.Body
		if _, ok := headerValue(res.Headers, "Content-Type"); !ok {
			w.Header().Set("Content-Type", "application/json")
		}
	}

	h := w.Header()
	var conn []string
	if v, ok := headerValue(res.Headers, "Connection"); ok {
		conn = v
	}
	set := map[string]bool{}
	for name, raw := range res.Headers {
		name = http.CanonicalHeaderKey(name)
		if isHopByHop(name, conn) || name == "Content-Length" {
			continue
		}
		if mode == viaPath && name == "Set-Cookie" {
			continue
		}
		if !set[name] { // the SimServer's value replaces the relay's (CORS)
			h.Del(name)
			set[name] = true
		}
		vals, _ := headerStrings(raw)
		for _, v := range vals {
			h.Add(name, v)
		}
	}
	if mode == viaPath {
		h.Add("Content-Security-Policy", sandboxCSP)
	}
	if res.Status != http.StatusNoContent && res.Status != http.StatusNotModified {
		h.Set("Content-Length", strconv.Itoa(len(body)))
	}
	w.WriteHeader(res.Status)
	_, _ = w.Write(body)
	return nil
}

// headerValue finds a header in simHeaders whatever its case.
func headerValue(headers map[string]json.RawMessage, name string) ([]string, bool) {
	for k, raw := range headers {
		if strings.EqualFold(k, name) {
			return headerStrings(raw)
		}
	}
	return nil, false
}

// headerStrings reads a simHeaders value: a string or an array of strings.
func headerStrings(raw json.RawMessage) ([]string, bool) {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return []string{s}, true
	}
	var list []string
	if json.Unmarshal(raw, &list) == nil {
		return list, true
	}
	return nil, false
}
