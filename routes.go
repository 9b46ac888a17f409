// routes.go: every endpoint of the relay, in one list.

package main

import (
	"log/slog"
	"net/http"
	"path/filepath"
)

func addRoutes(mux *http.ServeMux, log *slog.Logger, cfg config, st *store, lp *poller, met *metrics, pres *presence, held *heldRequests) {
	api := apiAdapter(log, cfg.MaxBody)
	// pushreq and pushres carry a body of up to --max-body after base64,
	// as the gateway stores the largest request it accepts.
	sims := apiAdapter(log, simEnvelope(cfg.MaxBody))
	parts := octetsAdapter(log, simEnvelope(cfg.MaxBody))                // raw bytes, or JSON with base64
	answers := newAnswerBox()                                            // pushres hands answers to waiting /via/ requests
	preflights := &preflights{st: st, window: servedWithin(cfg.MaxWait)} // pullreqsmart records which SimServers want CORS preflights
	gw := &gateway{st: st, lp: lp, cfg: cfg, held: held, answers: answers, preflights: preflights, cors: newCORSPolicy(cfg.CORSOrigin)}

	mux.Handle("GET /healthz", handleHealthz(st, func() (int64, bool) {
		if st.pg {
			return 0, false // the database's disk is the server's to watch
		}
		return diskFree(filepath.Dir(cfg.DB))
	}))
	if cfg.Metrics {
		mux.Handle("GET /metrics", met.handler(log))
	}

	// Client API: SimClients, authenticated by the token from login.
	mux.Handle("GET /api/v1/client/login", api(handleLogin(st)))
	mux.Handle("POST /api/v1/client/login", api(handleLogin(st)))
	mux.Handle("POST /api/v1/client/pushreq", sims(withSender(st, handlePushReq(st, lp.hub))))
	mux.Handle("POST /api/v1/client/cancel", api(withToken(st, handleCancel(st, lp.hub)), "POST"))
	mux.Handle("GET /api/v1/client/check", api(withToken(st, handleCheck(st))))
	mux.Handle("POST /api/v1/client/check", api(withToken(st, handleCheck(st))))
	mux.Handle("GET /api/v1/client/pullres", api(withToken(st, handlePullRes(st, lp, answers, false))))
	mux.Handle("POST /api/v1/client/pullres", api(withToken(st, handlePullRes(st, lp, answers, false))))
	mux.Handle("GET /api/v1/client/pullsmart", api(withToken(st, handlePullRes(st, lp, answers, true))))
	mux.Handle("POST /api/v1/client/pullsmart", api(withToken(st, handlePullRes(st, lp, answers, true))))
	// The capability URL of a store-and-forward /via/ request: its HTTP answer.
	mux.Handle("GET /api/v1/client/result", api(withToken(st, handleResult(st, gw)), "GET"))

	// Server API: the SimServer of a net, authenticated by the net's key.
	// A POST may carry answers to post first, as pushres's body may be large.
	mux.Handle("GET /api/v1/server/pullreqsmart", api(handlePullReqSmart(st, lp, pres, cfg, preflights, answers, held)))
	mux.Handle("POST /api/v1/server/pullreqsmart", sims(handlePullReqSmart(st, lp, pres, cfg, preflights, answers, held)))
	mux.Handle("POST /api/v1/server/pushres", sims(handlePushRes(st, lp.hub, answers, held, cfg)))
	// A streamed answer's further parts, and the SimServer's watch on the
	// requests it holds (docs/API.md, "Streamed answers and cancellation").
	mux.Handle("POST /api/v1/server/pushpart", parts(handlePushPart(st, lp.hub, held, cfg)))
	mux.Handle("POST /api/v1/server/watch", api(handleWatch(st, lp, held)))
	mux.Handle("POST /api/v1/server/extend", api(handleExtend(st, lp.hub, held, cfg)))
	mux.Handle("POST /api/v1/server/release", api(handleRelease(st)))

	// Gateway: any plain HTTP client reaches the net's SimServer, every method.
	// withViaTarget (server.go) keeps the target as sent, also in host mode.
	mux.Handle("/via/{net}/{path...}", errorAdapter(log, chargingVia(gw.handleVia)))
	mux.Handle("/via/{net}", errorAdapter(log, handleViaRoot))

	// Peer messaging: unicast, multicast and broadcast between the logins
	// of one net, authenticated by the token from login.
	mux.Handle("POST /api/v1/peer/send", api(withSender(st, handleSend(st, lp.hub, cfg, kindUnicast))))
	mux.Handle("POST /api/v1/peer/subscribe", api(withSender(st, handleSubscribe(st, true))))
	mux.Handle("POST /api/v1/peer/unsubscribe", api(withSender(st, handleSubscribe(st, false))))
	mux.Handle("POST /api/v1/peer/publish", api(withSender(st, handleSend(st, lp.hub, cfg, kindMulticast))))
	mux.Handle("POST /api/v1/peer/broadcast", api(withSender(st, handleSend(st, lp.hub, cfg, kindBroadcast))))
	mux.Handle("GET /api/v1/peer/pullsmart", api(withSender(st, handlePeerPull(st, lp))))
	mux.Handle("POST /api/v1/peer/pullsmart", api(withSender(st, handlePeerPull(st, lp))))
	mux.Handle("GET /api/v1/peer/stream", api(withSender(st, handleStream(log, st, lp)), "GET"))
	mux.Handle("GET /api/v1/peer/peers", api(withSender(st, handlePeers(st)), "GET"))

	// Web: the page that turns a tab into a SimServer, and the SDK it runs on.
	mux.Handle("GET /{$}", handlePage(cfg))
	mux.Handle("GET /sdk/c2cvia.js", handleSDK())
}
