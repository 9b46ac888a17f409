//go:build race

package main

// raceEnabled: this test binary runs under the race detector, so binaries
// the tests build use it too and share the build cache.
const raceEnabled = true
