// What the relay serves to browsers: the page at GET / that turns the
// visiting tab into a SimServer, and the JavaScript SDK it runs on, at
// /sdk/c2cvia.js. Both are embedded in the binary.

package main

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"html/template"
	"net/http"
	"time"
)

//go:embed sdk/c2cvia.js
var sdkJS []byte

// sdkETag is a strong validator from the content: it changes with the file.
var sdkETag = func() string {
	sum := sha256.Sum256(sdkJS)
	return `"` + hex.EncodeToString(sum[:16]) + `"`
}()

// handleSDK serves the SDK as an ES module. no-cache with the ETag: a
// browser revalidates each import (a 304 of no body), so the module never
// lags behind the relay that speaks its wire protocol after an upgrade.
func handleSDK() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/javascript; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
		h.Set("ETag", sdkETag)
		http.ServeContent(w, r, "c2cvia.js", time.Time{}, bytes.NewReader(sdkJS))
	})
}

//go:embed web/index.html
var pageSource string

var pageTemplate = template.Must(template.New("index.html").Parse(pageSource))

// handlePage renders the page once, at start: the only thing it takes from
// the config is the --via-host suffix, so the address it shares is right.
func handlePage(cfg config) http.Handler {
	var buf bytes.Buffer
	if err := pageTemplate.Execute(&buf, struct{ ViaHost string }{cfg.ViaHost}); err != nil {
		panic(err) // the template and its data are both fixed here
	}
	page := buf.Bytes()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-cache")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		w.Write(page)
	})
}
