package client_test

import (
	"os/exec"
	"syscall"
)

// endWithTests has the kernel send the relay SIGTERM when the test binary
// ends in any way, a -timeout panic or a kill included, so that no relay
// outlives its tests.
func endWithTests(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
