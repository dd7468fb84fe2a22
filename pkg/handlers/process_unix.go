//go:build unix

package handlers

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
)

// ownProcessGroup starts the command in a process group of its own, so that stopping it
// reaches the processes it starts too (the children of a shell script, say), and so that
// a Ctrl-C in the agent's terminal reaches only the agent, which then drains gracefully.
// Cancelling sends the group SIGTERM; exec.Cmd's WaitDelay sends SIGKILL later.
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error {
		if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM); err != nil {
			if errors.Is(err, syscall.ESRCH) {
				return os.ErrProcessDone
			}
			return os.NewSyscallError("kill", err)
		}
		return nil
	}
}

// killProcessGroup kills what is left of the command's process group once the command
// has been waited for.
func killProcessGroup(p *os.Process) {
	// ESRCH, the usual answer, means nothing was left.
	_ = syscall.Kill(-p.Pid, syscall.SIGKILL)
}
