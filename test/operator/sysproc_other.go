//go:build !linux

package operator

import "syscall"

// sysProcAttr sets nothing: only Linux can kill a child when its parent dies, so elsewhere
// an interrupted test may leave the operator running.
func sysProcAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{} }
