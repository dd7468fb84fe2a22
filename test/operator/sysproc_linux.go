package operator

import "syscall"

// sysProcAttr makes the kernel kill the process (SIGKILL) when its parent dies.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
