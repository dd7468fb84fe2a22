package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// operatorOptions say how to run the operator process.
type operatorOptions struct {
	binary     string
	kubeconfig string
	namespaces []string
	logPath    string
	qps, burst int
	pprof      bool
}

// operator is a running manager process.
type operator struct {
	cmd        *exec.Cmd
	pid        int
	metricsURL string
	readyURL   string
	pprofAddr  string
	logPath    string
	started    time.Time
	exited     chan struct{}
	exitErr    error
	logFile    *os.File
}

// freePort returns a TCP port free on the loopback interface right now.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// buildOperator builds cmd/manager into dir.
func buildOperator(ctx context.Context, root, dir string) (string, error) {
	bin := filepath.Join(dir, "manager")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/manager")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building the operator: %w: %s", err, out)
	}
	return bin, nil
}

// startOperator starts the manager process. It dies with the bench (SIGKILL when the bench's
// process ends), so it never outlives an interrupted run.
func startOperator(o operatorOptions) (*operator, error) {
	metricsPort, err := freePort()
	if err != nil {
		return nil, err
	}
	probePort, err := freePort()
	if err != nil {
		return nil, err
	}
	args := []string{
		"--leader-elect=false",
		"--metrics-secure=false",
		"--metrics-bind-address=127.0.0.1:" + strconv.Itoa(metricsPort),
		"--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(probePort),
		"--namespaces=" + strings.Join(o.namespaces, ","),
		"--kube-api-qps=" + strconv.Itoa(o.qps),
		"--kube-api-burst=" + strconv.Itoa(o.burst),
		"--zap-log-level=info",
	}
	op := &operator{
		metricsURL: fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort),
		readyURL:   fmt.Sprintf("http://127.0.0.1:%d/readyz", probePort),
		logPath:    o.logPath,
		exited:     make(chan struct{}),
	}
	if o.pprof {
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		op.pprofAddr = "127.0.0.1:" + strconv.Itoa(port)
		args = append(args, "--pprof-bind-address="+op.pprofAddr)
	}
	logFile, err := os.Create(o.logPath)
	if err != nil {
		return nil, fmt.Errorf("creating the operator's log: %w", err)
	}
	op.logFile = logFile
	cmd := exec.Command(o.binary, args...) //nolint:gosec // the binary the bench just built
	cmd.Env = append(os.Environ(), "KUBECONFIG="+o.kubeconfig)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	op.started = time.Now()
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		return nil, fmt.Errorf("starting the operator: %w", err)
	}
	op.cmd, op.pid = cmd, cmd.Process.Pid
	go func() {
		op.exitErr = cmd.Wait()
		close(op.exited)
	}()
	return op, nil
}

// alive returns an error once the process has exited.
func (op *operator) alive() error {
	select {
	case <-op.exited:
		return fmt.Errorf("the operator exited (%w); its log: %s%s", op.exitErr, op.logPath, op.logTail())
	default:
		return nil
	}
}

func (op *operator) logTail() string {
	b, err := os.ReadFile(op.logPath)
	if err != nil || len(b) == 0 {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return "\n  " + strings.Join(lines[max(0, len(lines)-5):], "\n  ")
}

// waitReady polls /readyz until it answers 200 and returns the time since the process
// started.
func (op *operator) waitReady(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, op.readyURL, nil)
		if err != nil {
			return 0, fmt.Errorf("building the readiness request: %w", err)
		}
		if resp, err := client.Do(req); err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(op.started), nil
			}
		}
		if err := op.alive(); err != nil {
			return 0, err
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("the operator was not ready within %s; its log: %s%s", timeout, op.logPath, op.logTail())
		}
		select {
		case <-ctx.Done():
			return 0, fmt.Errorf("waiting for the operator: %w", context.Cause(ctx))
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// requests scrapes the operator's API requests by HTTP method.
func (op *operator) requests(ctx context.Context) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, op.metricsURL, nil)
	if err != nil {
		return nil, fmt.Errorf("building the metrics request: %w", err)
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return nil, fmt.Errorf("scraping the operator's metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading the operator's metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scraping the operator's metrics: %s", resp.Status)
	}
	return parseRequestCounts(string(body)), nil
}

// stop ends the process: SIGTERM, then SIGKILL after a grace.
func (op *operator) stop() {
	if op == nil || op.cmd == nil {
		return
	}
	select {
	case <-op.exited:
	default:
		_ = op.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-op.exited:
		case <-time.After(10 * time.Second):
			_ = op.cmd.Process.Kill()
			<-op.exited
		}
	}
	_ = op.logFile.Close()
}

// usage measures the operator's resources over a phase.
type usage struct {
	op       *operator
	cpu      time.Duration
	requests map[string]float64
}

// beginUsage resets the operator's peak RSS and notes its CPU time and requests.
func beginUsage(ctx context.Context, op *operator) (*usage, error) {
	resetPeakRSS(op.pid)
	cpu, err := procCPU(op.pid)
	if err != nil {
		return nil, err
	}
	req, err := op.requests(ctx)
	if err != nil {
		return nil, err
	}
	return &usage{op: op, cpu: cpu, requests: req}, nil
}

// end returns what the operator used since beginUsage.
func (u *usage) end(ctx context.Context) (OperatorUse, error) {
	cpu, err := procCPU(u.op.pid)
	if err != nil {
		return OperatorUse{}, err
	}
	peak, _, err := procMemory(u.op.pid)
	if err != nil {
		return OperatorUse{}, err
	}
	req, err := u.op.requests(ctx)
	if err != nil {
		return OperatorUse{}, err
	}
	delta := subtractCounts(req, u.requests)
	writes, reads := splitRequests(delta)
	return OperatorUse{
		PeakRSSBytes: peak,
		CPUSeconds:   round((cpu - u.cpu).Seconds(), 2),
		Requests:     delta,
		Writes:       writes,
		Reads:        reads,
	}, nil
}

// parseRequestCounts sums rest_client_requests_total by its method label from a Prometheus
// text exposition.
func parseRequestCounts(text string) map[string]float64 {
	const name = "rest_client_requests_total{"
	out := map[string]float64{}
	for line := range strings.Lines(text) {
		if !strings.HasPrefix(line, name) {
			continue
		}
		end := strings.LastIndexByte(line, '}')
		if end < 0 {
			continue
		}
		method := label(line[len(name):end], "method")
		fields := strings.Fields(line[end+1:])
		if method == "" || len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			continue
		}
		out[method] += v
	}
	return out
}

// label returns the value of a label in a Prometheus label set (a="x",b="y").
func label(set, name string) string {
	for set != "" {
		key, rest, ok := strings.Cut(set, `="`)
		if !ok {
			return ""
		}
		// Values escape quotes as \"; scan for the closing quote.
		var v strings.Builder
		i := 0
		for ; i < len(rest); i++ {
			if rest[i] == '\\' && i+1 < len(rest) {
				i++
				v.WriteByte(rest[i])
				continue
			}
			if rest[i] == '"' {
				break
			}
			v.WriteByte(rest[i])
		}
		if strings.TrimSpace(key) == name {
			return v.String()
		}
		set = strings.TrimPrefix(rest[min(i+1, len(rest)):], ",")
	}
	return ""
}

// subtractCounts returns after − before, per key.
func subtractCounts(after, before map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// splitRequests sums the writes (POST, PUT, PATCH, DELETE) and the reads (GET: gets, lists
// and watches) among request counts by method.
func splitRequests(byMethod map[string]float64) (writes, reads float64) {
	for m, v := range byMethod {
		switch strings.ToUpper(m) {
		case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
			writes += v
		case http.MethodGet:
			reads += v
		}
	}
	return writes, reads
}
