// The /via/ gateway: any plain HTTP client (curl, a browser, a webhook
// sender) reaches a net's SimServer as if it were a web server behind a
// reverse proxy. The request becomes a stored sim_req (internal/simhttp
// maps it, byte for byte), the connection is held until the SimServer
// answers, and the sim_res comes back as the HTTP response a web server
// would have sent (docs/API.md, "Gateway").

package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/c2cvia/c2cvia/internal/simhttp"
)

// viaPeer is the `from` of gateway requests; their result tokens have the
// peer_id "via:RID". Real peer_ids are 16 random characters, never these.
const viaPeer = "via"

// forwardedByProxies are the headers a reverse proxy writes about the
// client; from anyone but a trusted proxy they are dropped (X-Forwarded-For
// is appended to, -Host and -Proto replaced), so a client cannot pose as
// another.
var forwardedByProxies = []string{"Forwarded", "X-Real-Ip", "X-Forwarded-Port", "X-Forwarded-Server", "X-Forwarded-Ssl"}

// viaMode tells how a gateway request named its net.
type viaMode int

const (
	viaPath viaMode = iota // /via/NET/path on the relay's own origin
	viaHost                // NET.via.example.com/path: the net's own origin
)

// viaTarget is what a gateway request names, read from the request target
// exactly as sent: net/http's mux would clean "//" and dot segments and
// answer with a redirect, so withViaTarget reads it before the mux.
type viaTarget struct {
	net    string
	target string // path and query after /via/NET (path mode) or all of it (host mode); "" for /via/NET
	mode   viaMode
}

// prefix is what a path-mode SimServer's paths stand under on the relay.
func (t viaTarget) prefix() string {
	if t.mode == viaHost {
		return ""
	}
	return "/via/" + t.net
}

type viaTargetKey struct{}

// withViaTarget finds the gateway requests, by path (/via/NET/...) or by
// host (NET<suffix> with --via-host), and keeps their target as sent. The
// mux then sees a clean /via/NET/ or /via/NET, so the gateway is one route.
func withViaTarget(suffix string, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t, ok := parseViaTarget(r, suffix)
		if !ok {
			next.ServeHTTP(w, r)
			return
		}
		r = r.WithContext(context.WithValue(r.Context(), viaTargetKey{}, t))
		u := *r.URL
		u.Path, u.RawPath, u.RawQuery = "/via/"+t.net+"/", "", ""
		if t.target == "" {
			u.Path = "/via/" + t.net
		}
		r.URL = &u
		next.ServeHTTP(w, r)
	})
}

// parseViaTarget reads a gateway request's net and target. In path mode
// the net is the first segment after /via/, unescaped (/via/%64emo is net
// demo). In host mode host names are case-insensitive, so the net is the
// host's first label in lower case.
func parseViaTarget(r *http.Request, suffix string) (viaTarget, bool) {
	raw := r.RequestURI
	if !strings.HasPrefix(raw, "/") { // absolute-form or "*": as net/http parsed it
		raw = simhttp.TargetOf(r.URL)
	}
	if net, ok := hostNet(r.Host, suffix); ok {
		return viaTarget{net: net, target: raw, mode: viaHost}, true
	}
	rest, ok := strings.CutPrefix(raw, "/via/")
	if !ok {
		return viaTarget{}, false
	}
	end := strings.IndexAny(rest, "/?")
	if end < 0 {
		end = len(rest)
	}
	net, err := url.PathUnescape(rest[:end])
	if err != nil || !validName(net) {
		return viaTarget{}, false
	}
	target := rest[end:]
	if !strings.HasPrefix(target, "/") {
		target = "" // /via/NET or /via/NET?q: the root, redirected to /via/NET/
	}
	return viaTarget{net: net, target: target, mode: viaPath}, true
}

// hostNet returns the net that a host-mode Host names, if any: with suffix
// ".via.example.com", "Demo.via.example.com:8443" names "demo". The net is
// one DNS label: net "x.demo" would be served under net demo's host, and a
// site may set cookies for its parent domain, so dotted nets have no host.
func hostNet(host, suffix string) (string, bool) {
	if suffix == "" {
		return "", false
	}
	host, _ = splitHostPort(host)
	host = strings.TrimSuffix(host, ".")
	if len(host) <= len(suffix) || !strings.EqualFold(host[len(host)-len(suffix):], suffix) {
		return "", false
	}
	net := strings.ToLower(host[:len(host)-len(suffix)])
	return net, validName(net) && !strings.Contains(net, ".")
}

// splitHostPort splits host:port, leaving a bare host (or [v6]) alone.
func splitHostPort(hostport string) (host, port string) {
	i := strings.LastIndexByte(hostport, ':')
	if i < 0 || strings.HasSuffix(hostport, "]") {
		return hostport, ""
	}
	return hostport[:i], hostport[i+1:]
}

// isGateway reports whether r goes to the gateway (either mode).
func isGateway(r *http.Request) bool {
	_, ok := r.Context().Value(viaTargetKey{}).(viaTarget)
	return ok
}

// gateway serves /via/ requests.
type gateway struct {
	st         *store
	lp         *poller
	cfg        config
	held       *heldRequests // synchronous requests, while their callers wait
	answers    *answerBox
	preflights *preflights
	cors       corsPolicy
}

// preflights records the nets whose SimServer asked to see browser CORS
// preflights (pullreqsmart with preflight=true); the relay answers the
// others' itself. The latest poll of a net decides. On a shared store
// (PostgreSQL) the SimServer may poll another node: a change is written to
// the net's row before the poll goes on, and a node that has not seen the
// net's SimServer poll within the last window reads it from there.
type preflights struct {
	st      *store
	window  time.Duration // on PostgreSQL: how long this node's own record of a poll decides
	nets    sync.Map      // net -> preflightSeen
	written sync.Map      // net -> bool: what this node last wrote to the net's row
}

// preflightSeen is what a poll of the net on this node asked, and when.
type preflightSeen struct {
	forward bool
	at      time.Time
}

func (p *preflights) set(net string, forward bool) {
	if p.st == nil || !p.st.pg {
		if forward {
			p.nets.Store(net, preflightSeen{forward: true})
		} else {
			p.nets.Delete(net)
		}
		return
	}
	p.nets.Store(net, preflightSeen{forward: forward, at: p.st.now()})
	if was, ok := p.written.Load(net); ok && was.(bool) == forward {
		return
	}
	// Remembered once a row took it: the first poll of a net claims it
	// after this, and the next one writes it.
	p.st.write(context.Background(), func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE nets SET forward_preflights = ? WHERE name = ?`, forward, net)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 1 {
			p.written.Store(net, forward)
		}
		return nil
	})
}

func (p *preflights) forward(ctx context.Context, net string) bool {
	v, ok := p.nets.Load(net)
	if p.st == nil || !p.st.pg {
		return ok
	}
	if ok && p.st.now().Sub(v.(preflightSeen).at) <= p.window {
		return v.(preflightSeen).forward // its SimServer polls this node
	}
	var on bool
	err := p.st.r.QueryRowContext(ctx, `SELECT forward_preflights FROM nets WHERE name = ?`, net).Scan(&on)
	return err == nil && on
}

// answerBox hands a SimServer's answer from pushres (or a poll's answers)
// to the calls waiting for it in memory, after the answer is committed:
// a /via/ request, and its owner's pullsmart.
type answerBox struct {
	mu      sync.Mutex
	waiting map[string][]chan boxedAnswer // rid -> its waiting calls
}

// boxedAnswer is a committed sim_res; streamed: it is the head of an
// answer whose body comes in parts, read from the store.
type boxedAnswer struct {
	simRes   []byte
	streamed bool
}

func newAnswerBox() *answerBox { return &answerBox{waiting: map[string][]chan boxedAnswer{}} }

// expect makes rid's answer deliverable to the caller; done forgets it.
func (b *answerBox) expect(rid string) (answer <-chan boxedAnswer, done func()) {
	ch := make(chan boxedAnswer, 1)
	b.mu.Lock()
	b.waiting[rid] = append(b.waiting[rid], ch)
	b.mu.Unlock()
	return ch, func() {
		b.mu.Lock()
		defer b.mu.Unlock()
		w := slices.DeleteFunc(b.waiting[rid], func(c chan boxedAnswer) bool { return c == ch })
		if len(w) == 0 {
			delete(b.waiting, rid)
		} else {
			b.waiting[rid] = w
		}
	}
}

// deliver gives rid's committed sim_res (or a streamed answer's head) to
// the calls waiting for it, if any.
func (b *answerBox) deliver(rid string, simRes []byte, streamed bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, ch := range b.waiting[rid] {
		select {
		case ch <- boxedAnswer{simRes, streamed}:
		default: // delivered already: an answer is accepted once
		}
	}
}

// handleVia serves `ANY /via/{net}/{path...}` and its host-mode twin.
func (g *gateway) handleVia(w http.ResponseWriter, r *http.Request) error {
	t, ok := r.Context().Value(viaTargetKey{}).(viaTarget)
	if !ok {
		return errInvalidNet
	}
	if isPreflight(r) && !g.preflights.forward(r.Context(), t.net) {
		g.cors.preflight(w, r)
		return nil
	}
	return g.forward(w, r, t)
}

// handleViaRoot sends /via/NET to /via/NET/, where relative links resolve.
func handleViaRoot(w http.ResponseWriter, r *http.Request) error {
	t, ok := r.Context().Value(viaTargetKey{}).(viaTarget)
	if !ok {
		return errInvalidNet
	}
	target := "/via/" + t.net + "/"
	if _, q, ok := strings.Cut(r.RequestURI, "?"); ok {
		target += "?" + q
	}
	http.Redirect(w, r, target, http.StatusPermanentRedirect)
	return nil
}

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

// forward stores the request as a sim_req for t's net and answers with the
// SimServer's sim_res: at once when it comes within the wait, else 504, or
// 202 with a Location to fetch it later when the client asked (Prefer).
func (g *gateway) forward(w http.ResponseWriter, r *http.Request, t viaTarget) error {
	simReq, err := g.simRequest(w, r, t)
	if err != nil {
		return err
	}
	pref := parsePrefer(r.Header)
	storeAndForward := pref.async || pref.wait >= 0
	if !storeAndForward && !g.st.pg {
		// On a shared store (PostgreSQL) a SimServer polling another node
		// must see it: it is stored, as below.
		return g.forwardHeld(w, r, t, simReq)
	}
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
	owner, secret, expiresAt, err := g.st.pushDetached(ctx, t.net, rid, viaPeer, senderAddr(r), simReq, storeAndForward)
	if err != nil {
		return err
	}
	g.lp.hub.notify(netSignal(t.net))

	// The request was just stored as queued: until a wake-up (an answer, or
	// its last lease handed out) or its TTL, nothing is read from the store.
	req := requestState{status: statusQueued}
	first := true
	_, err = g.lp.poll(ctx, pollVia, tokenSignal(owner.Hash), wait, func() (bool, time.Time, error) {
		select {
		case a := <-answer:
			req.status, req.simRes = statusAnswered, a.simRes
			if a.streamed {
				req.stream = streamOpen
			}
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
		if ctx.Err() != nil {
			g.withdraw(ctx, owner, rid) // the caller went away: nobody waits for the answer
		}
		return err
	}
	if req.status == statusAnswered {
		if req.stream != "" {
			readToEnd, err := g.writeStream(w, r, t, owner, rid, req.simRes, true)
			if readToEnd && !storeAndForward {
				g.st.dropAnswered(rid) // read to its end by its one reader; its parts go with it
			}
			return err
		}
		if !storeAndForward {
			// No token reads it: once its answer, in hand, is written, nobody
			// can. Queued before the answer goes out, so the caller's next
			// request finds its budget back.
			g.st.dropAnswered(rid)
		}
		return g.writeAnswer(w, r, t, req.simRes)
	}
	if err := req.gone(); err != nil {
		return err
	}
	if !storeAndForward && g.lp.stopping() {
		return errStoreClosed // the request is stored; the SimServer gets it after the restart
	}
	if !storeAndForward {
		return newAPIError(http.StatusGatewayTimeout, "gateway_timeout", fmt.Sprintf(
			"no SimServer of net %q answered within %s", t.net, wait))
	}
	w.Header().Set("Location", g.resultURL(r, t, rid, secret))
	if pref.async {
		w.Header().Set("Preference-Applied", "respond-async")
	} else {
		w.Header().Set("Preference-Applied", "wait="+strconv.Itoa(int(pref.wait/time.Second)))
	}
	writeJSON(w, http.StatusAccepted, struct {
		RID    string `json:"rid"`
		Status string `json:"status"`
	}{rid, req.status})
	return nil
}

// forwardHeld is forward for a synchronous request: acknowledged only by
// its answer, it is held in memory while its caller waits (held.go), and
// handed to the store only when the wait ends without an answer (504:
// it stays for its SimServer), at shutdown, or when its SimServer begins
// a streamed answer.
func (g *gateway) forwardHeld(w http.ResponseWriter, r *http.Request, t viaTarget, simReq []byte) error {
	h := g.held.newHeld(t.net, newRID(), senderAddr(r), simReq)
	// Its answer comes through the box (postAnswers), whether it is held
	// or the store has it by then.
	box, done := g.answers.expect(h.rid)
	defer done()
	if err := g.held.hold(h); err != nil {
		return err
	}
	g.lp.hub.notify(netSignal(t.net))
	answered := func() (boxedAnswer, bool) {
		select {
		case a := <-box:
			return a, true
		default:
			return boxedAnswer{}, false
		}
	}

	ctx := r.Context()
	var answer boxedAnswer
	var ok bool
	state := heldQueued
	_, err := g.lp.pollMemory(ctx, pollVia, tokenSignal(h.owner.Hash), g.cfg.ViaTimeout, func() (bool, time.Time, error) {
		if answer, ok = answered(); ok {
			return true, time.Time{}, nil
		}
		var next time.Time
		state, next = g.held.status(h)
		switch state {
		case heldQueued, heldDelivered, heldStored: // stored: its answer comes through the box
			return false, next, nil
		case heldAnswered:
			answer, ok = <-box, true // taken: postAnswers hands it over at once
		}
		return true, time.Time{}, nil
	})
	if err != nil {
		if ctx.Err() != nil {
			g.leaveHeld(ctx, h) // the caller went away: nobody waits for the answer
		}
		return err
	}
	if !ok {
		switch state {
		case heldFailed:
			return errFailed
		case heldExpired:
			return errExpired
		}
		// The wait ran out, or the relay is shutting down: from here on
		// the request is the store's (docs/API.md, "Gateway").
		if err := g.held.store(ctx, h); err != nil {
			g.leaveHeld(ctx, h) // refused (a budget): its SimServer's watch is told
			return err
		}
		answer, ok = answered() // it may have come meanwhile: the caller is still here
	}
	switch {
	case ok && answer.streamed:
		// Its SimServer began a streamed answer: the store has it.
		readToEnd, err := g.writeStream(w, r, t, h.owner, h.rid, answer.simRes, true)
		if readToEnd {
			g.st.dropAnswered(h.rid) // read to its end by its one reader; its parts go with it
		}
		return err
	case ok:
		if g.held.wasStored(h) {
			g.st.dropAnswered(h.rid) // in hand now: nobody can read it again
		}
		return g.writeAnswer(w, r, t, answer.simRes)
	case g.lp.stopping():
		return errStoreClosed // the request is stored; the SimServer gets it after the restart
	}
	return newAPIError(http.StatusGatewayTimeout, "gateway_timeout", fmt.Sprintf(
		"no SimServer of net %q answered within %s", t.net, g.cfg.ViaTimeout))
}

// leaveHeld withdraws h, whose caller went away: from memory, or from the
// store if it holds it now.
func (g *gateway) leaveHeld(ctx context.Context, h *heldRequest) {
	wasDelivered, stored := g.held.withdraw(h)
	if stored {
		g.withdraw(ctx, h.owner, h.rid)
		return
	}
	if wasDelivered {
		g.lp.hub.notify(watchSignal(h.net)) // its SimServer's watch names it
	}
}

// resultURL is the capability URL of a stored-and-forwarded request
// (GET /api/v1/client/result). In host mode the net's host serves only the
// net, so the URL names the suffix host (via.example.com), which must reach
// the relay too.
func (g *gateway) resultURL(r *http.Request, t viaTarget, rid, secret string) string {
	u := url.URL{Path: "/api/v1/client/result", RawQuery: url.Values{"rid": {rid}, "token": {secret}}.Encode()}
	if t.mode == viaHost {
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

// simRequest maps a plain HTTP request to the stored sim_req: the exact
// target, headers and body (simhttp), plus what a reverse proxy adds:
// X-Forwarded-For (appended), -Host, -Proto, and in path mode -Prefix.
// X-Forwarded-Host and -Proto from a trusted proxy (--trust-proxy) are
// kept; from anyone else they are replaced.
func (g *gateway) simRequest(w http.ResponseWriter, r *http.Request, t viaTarget) ([]byte, error) {
	body, err := readBody(w, r, g.cfg.MaxBody)
	if err != nil {
		return nil, err
	}
	h := r.Header.Clone()
	peer, _ := splitHostPort(r.RemoteAddr)
	peer = strings.Trim(peer, "[]")
	if prior := h.Values("X-Forwarded-For"); len(prior) > 0 {
		peer = strings.Join(prior, ", ") + ", " + peer
	}
	h.Set("X-Forwarded-For", peer)
	fromProxy := g.fromTrustedProxy(r)
	if !fromProxy {
		for _, name := range forwardedByProxies {
			h.Del(name)
		}
	}
	if h.Get("X-Forwarded-Host") == "" || !fromProxy {
		h.Set("X-Forwarded-Host", r.Host)
	}
	if h.Get("X-Forwarded-Proto") == "" || !fromProxy {
		proto := "http"
		if r.TLS != nil {
			proto = "https"
		}
		h.Set("X-Forwarded-Proto", proto)
	}
	if t.mode == viaPath {
		h.Set("X-Forwarded-Prefix", t.prefix())
	} else {
		h.Del("X-Forwarded-Prefix")
	}
	return encodeJSON(simhttp.FromRequest(r.Method, t.target, r.Host, h, body))
}

// fromTrustedProxy reports whether r's connection comes from a proxy named
// by --trust-proxy.
func (g *gateway) fromTrustedProxy(r *http.Request) bool {
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	return err == nil && isTrusted(peer.Addr().Unmap(), g.cfg.TrustProxy)
}

// handleResult serves the capability URL of a stored-and-forwarded gateway
// request: 202 while it is pending, then the SimServer's response itself,
// written as the gateway writes it (on the relay's origin, so with path
// mode's rules); 410 once expired or failed.
func handleResult(st *store, g *gateway) func(http.ResponseWriter, *http.Request, *params, token) error {
	return func(w http.ResponseWriter, r *http.Request, p *params, t token) error {
		rid, req, err := ownRequest(r, st, p, t)
		if err != nil {
			return err
		}
		if req.status == statusAnswered {
			st.markPulled(req)
			if req.stream != "" {
				// Its request was handed over to the store with the 202: a reader
				// that hangs up withdraws nothing.
				_, err := g.writeStream(w, r, viaTarget{net: req.net, mode: viaPath}, t, rid, req.simRes, false)
				return err
			}
			return g.writeAnswer(w, r, viaTarget{net: req.net, mode: viaPath}, req.simRes)
		}
		if err := req.gone(); err != nil {
			return err
		}
		w.Header().Set("Retry-After", "1")
		writeJSON(w, http.StatusAccepted, struct {
			RID    string `json:"rid"`
			Status string `json:"status"`
		}{rid, req.status})
		return nil
	}
}

// writeStream writes a streamed answer to a gateway caller: the head at
// once, then each part as it is committed, read from the store at most
// viaWriteBytes at a time and flushed, so the caller reads events as they
// happen and a large answer passes in bounded memory. A stream that ends
// aborted or cancelled ends the caller's body early: the connection is
// closed without the body's end, as a reverse proxy does when its
// upstream dies. withdrawOnLeave marks the synchronous caller, the
// answer's one reader: when it goes away it withdraws the request, and
// the parts it has been written are dropped from the store as it goes.
// readToEnd: the caller was written the whole body, to its last part.
func (g *gateway) writeStream(w http.ResponseWriter, r *http.Request, t viaTarget, owner token, rid string, head []byte, withdrawOnLeave bool) (readToEnd bool, err error) {
	status, body, err := g.writeHead(w, r, t, head, true)
	if err != nil {
		return false, err
	}
	ctx := r.Context()
	// leave withdraws the request when its one reader is gone for good:
	// it went away, a write to it failed (its connection is then closed),
	// or it reads no body.
	leave := func() {
		if withdrawOnLeave {
			g.withdraw(ctx, owner, rid)
		}
	}
	rc := http.NewResponseController(w)
	if _, err := w.Write(body); err == nil {
		err = rc.Flush()
	}
	if err != nil || simhttp.Bodyless(r.Method, status) {
		leave()
		return false, nil
	}
	offset := int64(len(body))
	dropped := int64(0) // parts before this were dropped once written (dropRead)
	for {
		var req requestState
		found, err := g.lp.wait(ctx, tokenSignal(owner.Hash), g.lp.clock.Now().Add(g.lp.maxWait), func() (bool, time.Time, error) {
			var err error
			if req, err = g.st.requestForOwner(ctx, owner, rid); err != nil {
				return false, time.Time{}, err
			}
			return req.stream != streamOpen || req.bodyBytes > offset, req.next(), nil
		})
		switch {
		case ctx.Err() != nil:
			leave()
			panic(http.ErrAbortHandler)
		case err != nil || g.lp.stopping():
			panic(http.ErrAbortHandler) // the head is out: only an early end tells the caller
		case !found:
			continue // a long stall: wait again, as long as the stream's lease holds
		}
		for offset < req.bodyBytes {
			part, err := g.st.readBody(ctx, req.seq, offset, viaWriteBytes)
			if err == nil && len(part) == 0 {
				err = fmt.Errorf("stream %s: %d bytes committed, none readable at offset %d", rid, req.bodyBytes, offset)
			}
			if err == nil {
				if _, err = w.Write(part); err == nil {
					err = rc.Flush()
				}
			}
			if err != nil {
				leave() // gone, or too slow for --write-timeout: its connection is closed
				panic(http.ErrAbortHandler)
			}
			offset += int64(len(part))
			if withdrawOnLeave && offset > dropped && (offset-dropped >= maxReadBytes || offset == req.bodyBytes) {
				// Its one reader has these: they need no keeping, and give
				// their budget back for the parts to come.
				g.st.dropRead(req.seq, offset)
				dropped = offset
			}
		}
		switch req.stream {
		case streamComplete:
			return true, nil
		case streamAborted, streamCancelled:
			panic(http.ErrAbortHandler)
		}
	}
}

// withdraw cancels rid for its gateway caller, who went away before its
// answer was complete (docs/API.md, "Cancellation"). The caller's context
// is done: the write outlives it.
func (g *gateway) withdraw(ctx context.Context, owner token, rid string) {
	net, held, err := g.st.cancel(context.WithoutCancel(ctx), owner, rid)
	if err != nil {
		return // answered, expired or failed meanwhile: nothing to withdraw
	}
	g.lp.hub.notify(tokenSignal(owner.Hash))
	if held {
		g.lp.hub.notify(watchSignal(net))
	}
}
