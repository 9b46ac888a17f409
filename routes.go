// routes.go: every endpoint of the relay, in one list.

package main

import (
	"log/slog"
	"net/http"
)

func addRoutes(mux *http.ServeMux, log *slog.Logger, cfg config, st *store, lp *poller) {
	api := apiAdapter(log, cfg.MaxBody)

	mux.Handle("GET /healthz", handleHealthz(st))

	// Client API: SimClients, authenticated by the token from login.
	mux.Handle("GET /api/v1/client/login", api(handleLogin(st)))
	mux.Handle("POST /api/v1/client/login", api(handleLogin(st)))
	mux.Handle("POST /api/v1/client/pushreq", api(withToken(st, handlePushReq(st, lp.hub))))
	mux.Handle("GET /api/v1/client/check", api(withToken(st, handleCheck(st))))
	mux.Handle("POST /api/v1/client/check", api(withToken(st, handleCheck(st))))
	mux.Handle("GET /api/v1/client/pullres", api(withToken(st, handlePullRes(st, lp, false))))
	mux.Handle("POST /api/v1/client/pullres", api(withToken(st, handlePullRes(st, lp, false))))
	mux.Handle("GET /api/v1/client/pullsmart", api(withToken(st, handlePullRes(st, lp, true))))
	mux.Handle("POST /api/v1/client/pullsmart", api(withToken(st, handlePullRes(st, lp, true))))

	// Server API: the SimServer of a net, authenticated by the net's key.
	mux.Handle("GET /api/v1/server/pullreqsmart", api(handlePullReqSmart(st, lp, cfg)))
	mux.Handle("POST /api/v1/server/pullreqsmart", api(handlePullReqSmart(st, lp, cfg)))
	mux.Handle("POST /api/v1/server/pushres", api(handlePushRes(st, lp.hub)))
	mux.Handle("POST /api/v1/server/extend", api(handleExtend(st, cfg)))

	// Peer messaging: unicast, multicast and broadcast between the logins
	// of one net, authenticated by the token from login.
	mux.Handle("POST /api/v1/peer/send", api(withToken(st, handleSend(st, lp.hub, cfg, kindUnicast))))
	mux.Handle("POST /api/v1/peer/subscribe", api(withToken(st, handleSubscribe(st, true))))
	mux.Handle("POST /api/v1/peer/unsubscribe", api(withToken(st, handleSubscribe(st, false))))
	mux.Handle("POST /api/v1/peer/publish", api(withToken(st, handleSend(st, lp.hub, cfg, kindMulticast))))
	mux.Handle("POST /api/v1/peer/broadcast", api(withToken(st, handleSend(st, lp.hub, cfg, kindBroadcast))))
	mux.Handle("GET /api/v1/peer/pullsmart", api(withToken(st, handlePeerPull(st, lp))))
	mux.Handle("POST /api/v1/peer/pullsmart", api(withToken(st, handlePeerPull(st, lp))))
	mux.Handle("GET /api/v1/peer/stream", api(withToken(st, handleStream(log, st, lp, cfg.StreamKeepAlive)), "GET"))
	mux.Handle("GET /api/v1/peer/peers", api(withToken(st, handlePeers(st)), "GET"))
}
