// Package operator runs the operator (cmd/manager) as its own process for tests and the
// benchmark: built once, started with a kubeconfig and free loopback ports for its metrics
// and probes, waited for until ready, and stopped gracefully (SIGTERM) or killed as a crash
// would (SIGKILL). A separate process is what a real deployment runs: its own client rate
// limits, caches, leader election and memory, which an in-process manager shares with the
// test. The process dies with the test process, so an interrupted run leaves none behind.
package operator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/aihub-dev/hive-operator/test/testenv"
)

// Options say how to run the operator.
type Options struct {
	// Binary is the manager's executable, from Build.
	Binary string
	// Kubeconfig is the path of the kubeconfig the operator uses (KUBECONFIG).
	Kubeconfig string
	// Namespaces the operator manages (--namespaces); empty for all.
	Namespaces []string

	// LeaderElect turns on leader election (--leader-elect), with its Lease in
	// LeaderElectionNamespace. The durations, when set, replace the manager's defaults
	// (15 s, 10 s, 2 s).
	LeaderElect                               bool
	LeaderElectionNamespace                   string
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration

	// QPS and Burst are the operator's client rate limits (--kube-api-qps,
	// --kube-api-burst); zero keeps the manager's defaults.
	QPS, Burst int
	// Pprof serves Go's profiles on a free port (PprofAddr).
	Pprof bool
	// LogPath is the file the operator's output goes to; default a new file in the
	// temporary folder (LogPath tells which).
	LogPath string
	// LogLevel is --zap-log-level; default "info".
	LogLevel string
	// ExtraArgs are more flags for the manager.
	ExtraArgs []string
	// Env is added to the process's environment (KEY=value).
	Env []string
}

// Process is a running operator.
type Process struct {
	cmd        *exec.Cmd
	pid        int
	metricsURL string
	readyURL   string
	pprofAddr  string
	logPath    string
	logFile    *os.File
	started    time.Time
	exited     chan struct{}
	exitErr    error
}

// Build builds cmd/manager of the module at root into dir and returns the binary's path.
func Build(ctx context.Context, root, dir string) (string, error) {
	return testenv.Build(ctx, root, dir, "manager")
}

// freePort returns a TCP port free on the loopback interface right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, fmt.Errorf("finding a free port: %s is not a TCP address", l.Addr())
	}
	return addr.Port, nil
}

// args returns the manager's flags for o with the ports chosen.
func (o *Options) args(metricsPort, probePort int, pprofAddr string) []string {
	level := o.LogLevel
	if level == "" {
		level = "info"
	}
	args := []string{
		"--leader-elect=" + strconv.FormatBool(o.LeaderElect),
		"--metrics-secure=false",
		"--metrics-bind-address=127.0.0.1:" + strconv.Itoa(metricsPort),
		"--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(probePort),
		"--namespaces=" + strings.Join(o.Namespaces, ","),
		"--zap-log-level=" + level,
	}
	if o.LeaderElect {
		if o.LeaderElectionNamespace != "" {
			args = append(args, "--leader-election-namespace="+o.LeaderElectionNamespace)
		}
		for flag, d := range map[string]time.Duration{
			"--leader-elect-lease-duration": o.LeaseDuration,
			"--leader-elect-renew-deadline": o.RenewDeadline,
			"--leader-elect-retry-period":   o.RetryPeriod,
		} {
			if d > 0 {
				args = append(args, flag+"="+d.String())
			}
		}
	}
	if o.QPS > 0 {
		args = append(args, "--kube-api-qps="+strconv.Itoa(o.QPS))
	}
	if o.Burst > 0 {
		args = append(args, "--kube-api-burst="+strconv.Itoa(o.Burst))
	}
	if pprofAddr != "" {
		args = append(args, "--pprof-bind-address="+pprofAddr)
	}
	return append(args, o.ExtraArgs...)
}

// Start starts the operator. Its metrics are served on plain HTTP (--metrics-secure=false)
// and its probes on free ports of 127.0.0.1. It is killed (SIGKILL) if the test process
// dies first.
func Start(o Options) (*Process, error) {
	if o.Binary == "" || o.Kubeconfig == "" {
		return nil, errors.New("starting the operator: Binary and Kubeconfig are required")
	}
	metricsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	probePort, err := freePort()
	if err != nil {
		return nil, err
	}
	p := &Process{
		metricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort),
		readyURL:   fmt.Sprintf("http://127.0.0.1:%d/readyz", probePort),
		exited:     make(chan struct{}),
	}
	if o.Pprof {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		p.pprofAddr = "127.0.0.1:" + strconv.Itoa(port)
	}
	if o.LogPath == "" {
		f, err := os.CreateTemp("", "hive-operator-*.log")
		if err != nil {
			return nil, fmt.Errorf("creating the operator's log: %w", err)
		}
		p.logFile = f
	} else if p.logFile, err = os.Create(o.LogPath); err != nil {
		return nil, fmt.Errorf("creating the operator's log: %w", err)
	}
	p.logPath = p.logFile.Name()

	cmd := exec.Command(o.Binary, o.args(metricsPort, probePort, p.pprofAddr)...) //nolint:gosec // the binary the test built
	cmd.Env = append(append(os.Environ(), "KUBECONFIG="+o.Kubeconfig), o.Env...)
	cmd.Stdout, cmd.Stderr = p.logFile, p.logFile
	cmd.SysProcAttr = sysProcAttr()
	p.started = time.Now()
	// Pdeathsig fires when the OS thread that forked the child ends, not the process, and Go
	// ends a thread whose goroutine exits while locked to it. So the child is forked and
	// waited for by a goroutine that holds its thread for the child's whole life: no other
	// goroutine can run, lock and end that thread meanwhile.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.exitErr = cmd.Wait()
		_ = p.logFile.Close()
		close(p.exited)
	}()
	if err := <-started; err != nil {
		_ = p.logFile.Close()
		return nil, fmt.Errorf("starting the operator: %w", err)
	}
	p.cmd, p.pid = cmd, cmd.Process.Pid
	return p, nil
}

// PID is the process's id.
func (p *Process) PID() int { return p.pid }

// MetricsURL is the operator's Prometheus endpoint, http://127.0.0.1:<port>/metrics.
func (p *Process) MetricsURL() string { return p.metricsURL }

// ReadyURL is the operator's readiness probe, http://127.0.0.1:<port>/readyz.
func (p *Process) ReadyURL() string { return p.readyURL }

// PprofAddr is where Go's profiles are served (host:port), or "" without Options.Pprof.
func (p *Process) PprofAddr() string { return p.pprofAddr }

// LogPath is the file holding the operator's output.
func (p *Process) LogPath() string { return p.logPath }

// Started is when the process started.
func (p *Process) Started() time.Time { return p.started }

// Exited is closed once the process has ended.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Alive returns nil while the process runs, and an error with its exit status and the end
// of its log once it has ended.
func (p *Process) Alive() error {
	select {
	case <-p.exited:
		return fmt.Errorf("the operator exited (%w); its log: %s%s", p.exitError(), p.logPath, p.LogTail(5))
	default:
		return nil
	}
}

// exitError is how the process ended, once it has.
func (p *Process) exitError() error {
	if p.exitErr == nil {
		return errors.New("exit status 0")
	}
	return p.exitErr
}

// LogTail returns the last n lines of the operator's log, indented, for error messages.
func (p *Process) LogTail(n int) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return "\n  " + strings.Join(lines[max(0, len(lines)-n):], "\n  ")
}

// WaitReady polls /readyz until it answers 200 (the caches have synced) and returns the
// time since the process started. It fails when the process exits, after timeout, or when
// ctx ends.
func (p *Process) WaitReady(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.readyURL, nil)
		if err != nil {
			return 0, fmt.Errorf("building the readiness request: %w", err)
		}
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(p.started), nil
			}
		}
		if err := p.Alive(); err != nil {
			return 0, err
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("the operator was not ready within %s; its log: %s%s", timeout, p.logPath, p.LogTail(5))
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("waiting for the operator: %w", context.Cause(ctx))
		case <-p.exited:
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// Kill ends the process at once with SIGKILL, as a crash or a node failure would (no
// lease released, no request finished), and waits for it to end.
func (p *Process) Kill() error {
	select {
	case <-p.exited:
		return nil
	default:
	}
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("killing the operator: %w", err)
	}
	<-p.exited
	return nil
}

// Stop ends the process as Kubernetes would: SIGTERM, then SIGKILL if it has not ended
// after 30 seconds. It returns an error if the process did not exit cleanly.
func (p *Process) Stop() error {
	select {
	case <-p.exited:
	default:
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			return fmt.Errorf("stopping the operator: %w", err)
		}
		select {
		case <-p.exited:
		case <-time.After(30 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.exited
			return fmt.Errorf("the operator did not stop within 30 s of SIGTERM and was killed; its log: %s%s", p.logPath, p.LogTail(5))
		}
	}
	if p.exitErr != nil {
		return fmt.Errorf("the operator stopped with %w; its log: %s%s", p.exitErr, p.logPath, p.LogTail(5))
	}
	return nil
}

// Metric scrapes the process's metrics and returns the samples of one family summed by the
// value of a label (by "" when label is ""): rest_client_requests_total by "method", say.
func (p *Process) Metric(ctx context.Context, family, label string) (map[string]float64, error) {
	return Scrape(ctx, p.metricsURL, family, label)
}

// Scrape reads the Prometheus metrics at url (the operator's, etcd's...) and returns the
// samples of one family summed by the value of a label, as Metric does.
func Scrape(ctx context.Context, url, family, label string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", url, err)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("scraping %s: %w", url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scraping %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parsing the metrics of %s: %w", url, err)
	}
	out := map[string]float64{}
	for _, m := range families[family].GetMetric() {
		key := ""
		for _, l := range m.GetLabel() {
			if l.GetName() == label {
				key = l.GetValue()
			}
		}
		out[key] += m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetUntyped().GetValue()
	}
	return out, nil
}
