//go:build !unix

// The open-file limit where the system has none to raise.

package bench

// raiseFDLimit has nothing to raise where there is no RLIMIT_NOFILE.
func raiseFDLimit(need uint64) error { return nil }
