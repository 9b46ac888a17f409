// The crash soak's check of gateway requests acknowledged with 202, against
// a fake relay that lost one and mixed up another: the check must say so.

package bench

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCheckViaAckedFindsLoss(t *testing.T) {
	answers := map[string]viaAnswer{ // rid -> what the fake relay has at its Location
		"kept":  viaEcho(http.MethodGet, "/async/0/0?n=0", nil),
		"mixed": viaEcho(http.MethodGet, "/async/0/1?n=1", nil), // another request's answer
		"late":  viaEcho(http.MethodPost, "/slow/0/7?n=7", []byte(`{"n":7}`)),
	}
	pending := map[string]int{"late": 1} // rid -> pullsmart calls that still find it pending
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rid := r.URL.Query().Get("rid")
		a, ok := answers[rid]
		switch {
		case !ok || r.URL.Query().Get("token") != "tok-"+rid:
			http.Error(w, `{"error":{"code":"not_found"}}`, http.StatusNotFound)
		case r.URL.Path == "/api/v1/client/pullsmart" && pending[rid] > 0:
			pending[rid]--
			w.WriteHeader(http.StatusAccepted)
		case r.URL.Path == "/api/v1/client/pullsmart":
			w.WriteHeader(http.StatusOK)
		case r.URL.Path == "/api/v1/client/result":
			for name, vals := range a.header() {
				w.Header()[name] = vals
			}
			w.WriteHeader(a.status)
			_, _ = w.Write(a.body)
		}
	}))
	defer srv.Close()
	relay := newSoakRelay(SoakOptions{})
	base := srv.URL
	relay.base.Store(&base)
	close(*relay.up.Load())

	acked := func(rid string, want viaAnswer) *viaAcked {
		loc := "/api/v1/client/result?" + url.Values{"rid": {rid}, "token": {"tok-" + rid}}.Encode()
		return &viaAcked{what: rid, location: loc, want: want}
	}
	var rep SoakReport
	err := checkViaAcked(t.Context(), relay, []*viaAcked{
		acked("kept", answers["kept"]),
		acked("gone", viaEcho(http.MethodGet, "/async/0/2?n=2", nil)), // acknowledged, then lost
		acked("mixed", viaEcho(http.MethodGet, "/async/0/3?n=3", nil)),
		acked("late", answers["late"]),
		{what: "wrong during the load", wrong: "read another answer"},
	}, &rep)
	require.NoError(t, err)
	assert.Equal(t, 2, rep.ViaAsyncAnswered, "kept and late")
	require.Len(t, rep.Lost, 3, "%q", rep.Lost)
	assert.Contains(t, rep.Lost[0], "gone: read 1 at its Location: got 404")
	assert.Contains(t, rep.Lost[1], "mixed: read 1 at its Location: got 200 (X-Soak-Echo \"GET /async/0/1?n=1\")")
	assert.Equal(t, "read another answer", rep.Lost[2])
	assert.Zero(t, pending["late"], "waited for with pullsmart")
}
