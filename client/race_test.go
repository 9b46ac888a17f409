//go:build race

package client_test

// raceEnabled: this test binary runs under the race detector, so TestMain
// builds the relay with -race too and reuses the packages this build
// compiled (modernc.org/sqlite above all) instead of compiling them again.
const raceEnabled = true
