//go:build unix

package main

import "golang.org/x/sys/unix"

// diskFree is the space an unprivileged process may still use on the file
// system that holds dir, in bytes; ok is false when it cannot be read.
func diskFree(dir string) (free int64, ok bool) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, false
	}
	return int64(st.Bavail) * int64(st.Bsize), true
}
