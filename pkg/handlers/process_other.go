//go:build !unix

package handlers

import (
	"os"
	"os/exec"
)

// ownProcessGroup makes cancelling kill the command: there is no SIGTERM to send here.
func ownProcessGroup(cmd *exec.Cmd) {
	cmd.Cancel = func() error { return cmd.Process.Kill() }
}

// killProcessGroup does nothing: without process groups only the command itself is stopped.
func killProcessGroup(*os.Process) {}
