// Files the relay serves to browsers: the JavaScript SDK at /sdk/c2cvia.js.

package main

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
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
