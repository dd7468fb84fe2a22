package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/aihub-dev/hive-operator/test/operator"
)

// The operator runs as its own process through test/operator; this file measures it.

// operatorOptions are the bench's settings of an operator process watching one namespace.
func (b *bench) operatorOptions(kubeconfig, ns string) operator.Options {
	return operator.Options{
		Binary: b.operatorBinary, Kubeconfig: kubeconfig, Namespaces: []string{ns},
		LogPath: filepath.Join(b.workDir, "operator-"+ns+".log"),
		QPS:     b.cfg.operatorQPS, Burst: b.cfg.operatorBurst, Pprof: b.cfg.pprof,
	}
}

// stopOperator stops an operator process if one was started; how it ended does not change
// the measurements.
func stopOperator(op *operator.Process) {
	if op != nil {
		_ = op.Stop()
	}
}

// operatorRequests scrapes the operator's API requests by HTTP method.
func operatorRequests(ctx context.Context, op *operator.Process) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, op.MetricsURL(), nil)
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

// usage measures the operator's resources over a phase.
type usage struct {
	op       *operator.Process
	cpu      time.Duration
	requests map[string]float64
}

// beginUsage resets the operator's peak RSS and notes its CPU time and requests.
func beginUsage(ctx context.Context, op *operator.Process) (*usage, error) {
	resetPeakRSS(op.PID())
	cpu, err := procCPU(op.PID())
	if err != nil {
		return nil, err
	}
	req, err := operatorRequests(ctx, op)
	if err != nil {
		return nil, err
	}
	return &usage{op: op, cpu: cpu, requests: req}, nil
}

// end returns what the operator used since beginUsage.
func (u *usage) end(ctx context.Context) (OperatorUse, error) {
	cpu, err := procCPU(u.op.PID())
	if err != nil {
		return OperatorUse{}, err
	}
	peak, _, err := procMemory(u.op.PID())
	if err != nil {
		return OperatorUse{}, err
	}
	req, err := operatorRequests(ctx, u.op)
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
