package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// BenchmarkGatewayMapping: the gateway's own work for one request of a
// browser's shape (a dozen headers, a small JSON body) and its answer:
// mapping the request to its sim_req, and the sim_res to the response.
// The store and the wait are not in it.
func BenchmarkGatewayMapping(b *testing.B) {
	g := &gateway{cfg: config{MaxBody: 1 << 20}}
	simRes := []byte(`{"simStatus":200,"simHeaders":{"Content-Type":"application/json","Cache-Control":"no-store","Set-Cookie":["a=1","b=2"]},"simBody":"{\"ok\":true,\"items\":[1,2,3]}"}`)
	body := `{"name":"lamp","price":12.5,"tags":["a","b"]}`
	b.ReportAllocs()
	for b.Loop() {
		req := httptest.NewRequest(http.MethodPost, "/via/shop/api/items?x=1&y=2", strings.NewReader(body))
		for _, h := range [][2]string{{"Content-Type", "application/json"}, {"Accept", "application/json"},
			{"Accept-Language", "en-GB,en;q=0.9"}, {"Accept-Encoding", "gzip, deflate, br"}, {"User-Agent", "Mozilla/5.0 (X11; Linux x86_64)"},
			{"Origin", "https://app.example"}, {"Referer", "https://app.example/page"}, {"Cookie", "sid=abc123"},
			{"Sec-Fetch-Mode", "cors"}, {"Sec-Fetch-Site", "cross-site"}, {"Connection", "keep-alive"}} {
			req.Header.Set(h[0], h[1])
		}
		t := viaTarget{net: "shop", target: "/api/items?x=1&y=2"}
		if _, err := g.simRequest(httptest.NewRecorder(), req, t); err != nil {
			b.Fatal(err)
		}
		if err := g.writeAnswer(httptest.NewRecorder(), req, t, simRes); err != nil {
			b.Fatal(err)
		}
	}
}
