// Secrets and ids: tokens, rids and peer ids are random and URL-safe;
// tokens and keys are stored only as their SHA-256 hash.

package main

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
)

// randomID returns n random bytes as unpadded base64url (4/3 n characters).
func randomID(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// 256-bit tokens, 128-bit rids: unguessable. 96-bit peer ids are public and
// need only be unique.
func newToken() string  { return randomID(32) }
func newRID() string    { return randomID(16) }
func newPeerID() string { return randomID(12) }

// secretHash is how a token or key is kept at rest. A plain SHA-256 suffices:
// tokens are random, and keys must be long (16+ characters).
func secretHash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}
