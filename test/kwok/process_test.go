package kwok

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The helper mode of this test binary: a process whose main thread exits on its own while
// another thread goes on holding a listening port. It is what a killed multi-threaded
// kube-apiserver looks like for a moment: the kernel shows its leader as a zombie while the
// other threads are still ending, and its sockets are released only when the last has.
const helperEnv = "KWOK_TEST_LEADER_EXITS"

func init() {
	if os.Getenv(helperEnv) != "" {
		// The main goroutine runs on the main thread until it is unlocked; keeping it locked
		// makes the exit below end the leader thread and nothing else.
		runtime.LockOSThread()
	}
}

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		leaderExits()
		return
	}
	os.Exit(m.Run())
}

func leaderExits() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		os.Exit(2)
	}
	go func() {
		runtime.LockOSThread() // another thread than the leader
		_, _ = os.Stdout.WriteString(l.Addr().String() + "\n")
		time.Sleep(time.Hour)
		_ = l.Close()
	}()
	time.Sleep(200 * time.Millisecond)
	// exit(2), not exit_group(2): only this thread ends.
	_, _, _ = syscall.RawSyscall(syscall.SYS_EXIT, 0, 0, 0)
}

func TestRunningWhileAThreadHoldsThePort(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^$") //nolint:gosec // this test binary
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-exited })

	addr, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("reading the helper's address: %v", err)
	}
	addr = strings.TrimSpace(addr)
	pid := cmd.Process.Pid
	deadline := time.Now().Add(10 * time.Second)
	for !leaderIsZombie(pid) {
		if time.Now().After(deadline) {
			t.Fatal("the helper's main thread did not exit")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if l, err := net.Listen("tcp", addr); err == nil {
		_ = l.Close()
		t.Fatalf("the helper does not hold %s", addr)
	}
	if !running(pid) {
		t.Fatal("running says a process has ended while one of its threads still holds a port")
	}

	if err := stopProcess(context.Background(), pid, 0); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the port is still held once stopProcess returned: %v", err)
	}
	_ = l.Close()
}

func leaderIsZombie(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	return strings.Contains(string(stat), ") Z ")
}

func TestWaitPortFree(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	ctx := context.Background()
	if err := waitPortFree(ctx, addr, 300*time.Millisecond); err == nil {
		t.Fatal("waitPortFree returned nil while the port was held")
	}
	go func() { time.Sleep(200 * time.Millisecond); _ = l.Close() }()
	if err := waitPortFree(ctx, addr, 5*time.Second); err != nil {
		t.Fatalf("waitPortFree once the port was released: %v", err)
	}
}

func TestSecurePort(t *testing.T) {
	for _, tc := range []struct {
		argv []string
		want string
	}{
		{[]string{"kube-apiserver", "--etcd-servers=x", "--secure-port=32764"}, "0.0.0.0:32764"},
		{[]string{"kube-apiserver", "--secure-port", "6443", "--bind-address=127.0.0.1"}, "127.0.0.1:6443"},
		{[]string{"kube-apiserver", "--bind-address", "::1", "--secure-port=1"}, "[::1]:1"},
		{[]string{"kube-apiserver"}, ""},
	} {
		if got := securePort(tc.argv); got != tc.want {
			t.Errorf("securePort(%q) = %q, want %q", tc.argv, got, tc.want)
		}
	}
}
