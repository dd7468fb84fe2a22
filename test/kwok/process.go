package kwok

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// How this package restarts the kube-apiserver of a kwokctl cluster.
//
// kwokctl's binary runtime starts each component as a detached process (Setsid, its own
// session; kwok v0.8.0, pkg/utils/exec/cmd_other.go) in the cluster's folder, with the
// arguments it saved in the cluster's kwok.yaml, its output appended to
// logs/<component>.log, and records its pid in pids/<component>.pid (pkg/kwokctl/runtime/
// exec.go, ForkExec); `kwokctl delete cluster` and `kwokctl stop cluster` kill the pids of
// those files (ForkExecKill). The CLI can only stop and start the whole cluster
// (pkg/kwokctl/cmd/{stop,start}/cluster), which would restart etcd, the controller manager,
// the scheduler and kwok too; the runtime's StartComponent and StopComponent are not
// reachable from it.
//
// So StopAPIServer reads the running kube-apiserver's exact command from /proc/<pid>
// (cmdline, cwd, environ: what kwokctl really ran, whatever its configuration format),
// kills it (or terminates it, with a grace) and removes its pid file, as kwokctl does;
// StartAPIServer runs the same command again, appends to the same log, and writes the new pid
// to the same pid file, so that `kwokctl delete cluster` still stops it. The new process
// serves the same port with the same certificates and the same etcd data, so clients and
// kubeconfigs made before keep working once it is ready again.

// command is how a component was started, read from /proc while it ran.
type command struct {
	argv []string
	dir  string
	env  []string
}

// process is a component this package started.
type process struct {
	pid    int
	exited chan struct{}
}

func (p *process) waitExit(timeout time.Duration) {
	select {
	case <-p.exited:
	case <-time.After(timeout):
	}
}

func (c *Cluster) pidFile(component string) string {
	return filepath.Join(c.Dir(), "pids", component+".pid")
}

// PID returns the pid of a running component of the cluster (Etcd, KubeAPIServer,
// KubeControllerManager, KubeScheduler, KwokController), for example to meter its CPU time.
func (c *Cluster) PID(component string) (int, error) {
	raw, err := os.ReadFile(c.pidFile(component))
	if err != nil {
		return 0, fmt.Errorf("%s of kwok cluster %s is not running: %w", component, c.name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(raw)))
	if err != nil {
		return 0, fmt.Errorf("reading the pid of %s: %w", component, err)
	}
	if !running(pid) {
		return 0, fmt.Errorf("%s of kwok cluster %s (pid %d) is not running", component, c.name, pid)
	}
	if cmd, err := readCommand(pid); err == nil && filepath.Base(cmd.argv[0]) != component {
		return 0, fmt.Errorf("pid %d of %s's pid file runs %s", pid, component, cmd.argv[0])
	}
	return pid, nil
}

// RestartAPIServer kills the kube-apiserver (SIGKILL, as a crash would) and starts it again
// with the same command line and the same etcd data, then waits until it is ready. Objects,
// certificates and the port stay the same, so existing clients reconnect on their own; their
// watches break at once.
//
// It kills rather than terminates: on SIGTERM the kube-apiserver goes on serving (its
// /readyz red) and keeps its watches open while it drains, which took over 30 s here.
func (c *Cluster) RestartAPIServer(ctx context.Context) error {
	if err := c.StopAPIServer(ctx, 0); err != nil {
		return err
	}
	return c.StartAPIServer(ctx)
}

// StopAPIServer stops the kube-apiserver, for an outage as long as the test wants;
// StartAPIServer ends it. With grace 0 it kills the process (SIGKILL); otherwise it sends
// SIGTERM and kills the process if it has not ended after grace. The rest of the cluster
// keeps running (Create turns off the leader election that would make the controller
// manager and the scheduler exit during a long outage). It does nothing if the API server
// is already stopped by this package.
func (c *Cluster) StopAPIServer(ctx context.Context, grace time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped != nil {
		return nil
	}
	pid, err := c.PID(KubeAPIServer)
	if err != nil {
		return err
	}
	cmd, err := readCommand(pid)
	if err != nil {
		return fmt.Errorf("reading the kube-apiserver's command: %w", err)
	}
	if err := stopProcess(ctx, pid, grace); err != nil {
		return fmt.Errorf("stopping the kube-apiserver: %w", err)
	}
	if c.apiserver != nil {
		c.apiserver.waitExit(5 * time.Second)
		c.apiserver = nil
	}
	if err := os.Remove(c.pidFile(KubeAPIServer)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing the kube-apiserver's pid file: %w", err)
	}
	c.stopped = cmd
	return nil
}

// StartAPIServer starts the kube-apiserver that StopAPIServer stopped, with the same
// command, and waits until it is ready (at most two minutes, or until ctx ends).
func (c *Cluster) StartAPIServer(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped == nil {
		if _, err := c.PID(KubeAPIServer); err == nil {
			return nil
		}
		return errors.New("starting the kube-apiserver: it was not stopped by StopAPIServer, so its command is unknown")
	}
	cmd := c.stopped
	// However the old process ended, its port must be free before the new one binds it.
	if addr := securePort(cmd.argv); addr != "" {
		if err := waitPortFree(ctx, addr, 30*time.Second); err != nil {
			return fmt.Errorf("starting the kube-apiserver: %w", err)
		}
	}
	logPath := c.logPath(KubeAPIServer)
	log, err := os.OpenFile(logPath, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644) //nolint:gosec // the cluster's own log
	if err != nil {
		return fmt.Errorf("opening the kube-apiserver's log: %w", err)
	}
	run := exec.Command(cmd.argv[0], cmd.argv[1:]...) //nolint:gosec // the command kwokctl ran
	run.Dir, run.Env = cmd.dir, cmd.env
	run.Stdout, run.Stderr = log, log
	// Detached like kwokctl's own: it belongs to the cluster, which Delete ends.
	run.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := run.Start(); err != nil {
		_ = log.Close()
		return fmt.Errorf("starting the kube-apiserver: %w", err)
	}
	p := &process{pid: run.Process.Pid, exited: make(chan struct{})}
	go func() {
		_ = run.Wait() // reaps it when it ends, whoever stops it
		_ = log.Close()
		close(p.exited)
	}()
	c.apiserver, c.stopped = p, nil
	if err := os.WriteFile(c.pidFile(KubeAPIServer), []byte(strconv.Itoa(p.pid)), 0o600); err != nil {
		return fmt.Errorf("writing the kube-apiserver's pid file: %w", err)
	}

	switch err := c.waitReady(ctx, 2*time.Minute, p.exited); {
	case errors.Is(err, errExited):
		return fmt.Errorf("the restarted kube-apiserver exited; its log: %s%s", logPath, logTail(logPath))
	case err != nil:
		return fmt.Errorf("the restarted kube-apiserver is not ready: %w", err)
	}
	return nil
}

// readCommand reads a process's arguments, working folder and environment from /proc.
func readCommand(pid int) (*command, error) {
	proc := "/proc/" + strconv.Itoa(pid)
	raw, err := os.ReadFile(proc + "/cmdline")
	if err != nil {
		return nil, fmt.Errorf("reading the command line of pid %d: %w", pid, err)
	}
	argv := splitNUL(raw)
	if len(argv) == 0 {
		return nil, fmt.Errorf("pid %d has no command line", pid)
	}
	dir, err := os.Readlink(proc + "/cwd")
	if err != nil {
		return nil, fmt.Errorf("reading the working folder of pid %d: %w", pid, err)
	}
	env, err := os.ReadFile(proc + "/environ")
	if err != nil {
		return nil, fmt.Errorf("reading the environment of pid %d: %w", pid, err)
	}
	return &command{argv: argv, dir: dir, env: splitNUL(env)}, nil
}

func splitNUL(b []byte) []string {
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 {
		return nil
	}
	return strings.Split(string(b), "\x00")
}

// running reports whether a process exists and has not ended. A process kwokctl started
// has been re-parented, and its new parent may be slow to reap it: a zombie counts as ended.
// But a killed multi-threaded process shows its leader as a zombie while its other threads
// are still ending, and its sockets are released only when the last has: so it has ended
// only when every thread has.
func running(pid int) bool {
	proc := "/proc/" + strconv.Itoa(pid)
	if threadRunning(proc + "/stat") {
		return true
	}
	threads, _ := filepath.Glob(proc + "/task/*/stat")
	return slices.ContainsFunc(threads, threadRunning)
}

// threadRunning reports whether the thread of a /proc stat file exists and is not a zombie.
func threadRunning(path string) bool {
	stat, err := os.ReadFile(path) //nolint:gosec // a /proc file
	if err != nil {
		return false
	}
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return false
	}
	fields := strings.Fields(string(stat[end+1:]))
	return len(fields) > 0 && fields[0] != "Z" && fields[0] != "X"
}

// stopProcess sends SIGTERM and waits for the process to end; after grace it sends SIGKILL.
// With grace 0 it sends SIGKILL at once.
func stopProcess(ctx context.Context, pid int, grace time.Duration) error {
	sig := syscall.SIGTERM
	if grace <= 0 {
		sig = syscall.SIGKILL
	}
	if err := syscall.Kill(pid, sig); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return fmt.Errorf("signalling pid %d: %w", pid, err)
	}
	deadline := time.Now().Add(grace)
	killed := sig == syscall.SIGKILL
	if killed {
		deadline = time.Now().Add(10 * time.Second)
	}
	for running(pid) {
		if !killed && time.Now().After(deadline) {
			if err := syscall.Kill(pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
				return fmt.Errorf("killing pid %d: %w", pid, err)
			}
			killed, deadline = true, time.Now().Add(10*time.Second)
		} else if killed && time.Now().After(deadline) {
			return fmt.Errorf("pid %d survived SIGKILL", pid)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for pid %d to end: %w", pid, context.Cause(ctx))
		case <-time.After(20 * time.Millisecond):
		}
	}
	return nil
}

// logTail returns the last lines of a log file, indented, for an error message.
func logTail(path string) string {
	b, err := os.ReadFile(path) //nolint:gosec // the cluster's own log
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return "\n  " + strings.Join(lines[max(0, len(lines)-5):], "\n  ")
}

// securePort returns the address a kube-apiserver command listens on (its --bind-address,
// 0.0.0.0 by default, and --secure-port), or "" if the command does not name its port.
func securePort(argv []string) string {
	host, port := "0.0.0.0", ""
	for i := 1; i < len(argv); i++ {
		name, value, found := strings.Cut(argv[i], "=")
		if !found && i+1 < len(argv) && (name == "--secure-port" || name == "--bind-address") {
			i++
			value = argv[i]
		}
		switch name {
		case "--secure-port":
			port = value
		case "--bind-address":
			host = value
		}
	}
	if port == "" {
		return ""
	}
	return net.JoinHostPort(host, port)
}

// waitPortFree waits until addr can be listened on, so that a restarted server does not
// fail to bind a port its predecessor's socket still holds.
func waitPortFree(ctx context.Context, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		l, err := net.Listen("tcp", addr)
		if err == nil {
			return l.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("port %s is still in use: %w", addr, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
