package loadtest

import (
	"os/exec"
	"syscall"
)

// setDeathSignal makes the kernel kill the child if the driver dies first.
func setDeathSignal(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
