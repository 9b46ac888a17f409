//go:build unix

package main

import "golang.org/x/sys/unix"

// openFileLimit is the process's soft RLIMIT_NOFILE: the descriptors it
// may hold open. 0 when it cannot be read or is unlimited.
func openFileLimit() int {
	var rl unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == unix.RLIM_INFINITY || rl.Cur > 1<<30 {
		return 0
	}
	return int(rl.Cur)
}
