//go:build !unix

package main

// openFileLimit is not read on this system: --max-conns 0 sets no total cap.
func openFileLimit() int { return 0 }
