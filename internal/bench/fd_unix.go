//go:build unix

// The open-file limit, where there is one: the idle and broadcast scenarios
// and the poll holder need a descriptor per poll or peer.

package bench

import (
	"fmt"
	"syscall"
)

// raiseFDLimit makes sure this process may open need files: the soft limit
// goes up to the hard one (Go does that at start), and the hard one too when
// allowed (as root).
func raiseFDLimit(need uint64) error {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return err
	}
	if uint64(rl.Cur) >= need {
		return nil
	}
	want := rl
	want.Cur = max(rl.Cur, need)
	want.Max = max(rl.Max, need)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err == nil {
		return nil
	}
	want = rl
	want.Cur = rl.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil || rl.Max < need {
		return fmt.Errorf("needs about %d open files and the limit is %d: raise it (ulimit -n) or lower --polls", need, rl.Max)
	}
	return nil
}
