// The page at GET /: it explains the relay and turns the visiting tab into a
// SimServer with the JavaScript SDK.

package main

import (
	"bytes"
	_ "embed"
	"html/template"
	"net/http"
)

//go:embed web/index.html
var pageSource string

var pageTemplate = template.Must(template.New("index.html").Parse(pageSource))

// handlePage renders the page once, at start: the only thing it learns from
// the config is the --via-host suffix, so the share address it shows is right.
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
