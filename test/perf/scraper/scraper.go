// Package scraper reads what the processes of a run use from /proc: the CPU time and memory
// of processes and of the machine. The operator's API requests come from its metrics
// (operator.Process.Metric); Sub and Split do their arithmetic.
package scraper

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/procfs"

	"github.com/aihub-dev/hive-operator/test/perf/results"
	"github.com/aihub-dev/hive-operator/test/perf/stats"
)

// Sub returns after − before, per key.
func Sub(after, before map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out[k] = d
		}
	}
	return out
}

// Split sums the writes (POST, PUT, PATCH, DELETE) and the reads (GET: gets, lists and
// watches) among request counts by method.
func Split(byMethod map[string]float64) (writes, reads float64) {
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

// Process returns the CPU time a process has used, its peak resident set size (VmHWM) and
// its current one (VmRSS).
func Process(pid int) (cpu time.Duration, peak, rss uint64, err error) {
	p, err := procfs.NewProc(pid)
	if err != nil {
		return 0, 0, 0, fmt.Errorf("reading process %d: %w", pid, err)
	}
	stat, err1 := p.Stat()
	status, err2 := p.NewStatus()
	if err := errors.Join(err1, err2); err != nil {
		return 0, 0, 0, fmt.Errorf("reading process %d: %w", pid, err)
	}
	return time.Duration(stat.CPUTime() * float64(time.Second)), status.VmHWM, status.VmRSS, nil
}

// ResetPeak sets a process's VmHWM back to its current RSS (Linux 4.0+), so that a peak can
// be measured per phase. It fails quietly on kernels without it: the peak is then the
// process's lifetime peak.
func ResetPeak(pid int) {
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// FindProcess returns the first process whose binary is named name and whose command line
// contains every one of args.
func FindProcess(name string, args ...string) (int, bool) {
	procs, _ := procfs.AllProcs()
	for _, p := range procs {
		argv, err := p.CmdLine()
		if err == nil && len(argv) > 0 && filepath.Base(argv[0]) == name &&
			!slices.ContainsFunc(args, func(a string) bool { return !slices.Contains(argv[1:], a) }) {
			return p.PID, true
		}
	}
	return 0, false
}

// Meter samples the CPU time of named processes and of the whole machine, to say where the
// cores went.
type Meter struct {
	PIDs  map[string]int
	Cores int
}

// Sample is the CPU time of a meter's processes and of the machine (busy and all CPU
// seconds, 0 when unknown) at one time.
type Sample struct {
	at          time.Time
	procs       map[string]time.Duration
	busy, total float64
}

// Sample samples the processes and the machine.
func (m *Meter) Sample() Sample {
	s := Sample{at: time.Now(), procs: map[string]time.Duration{}}
	for name, pid := range m.PIDs {
		if cpu, _, _, err := Process(pid); err == nil {
			s.procs[name] = cpu
		}
	}
	if fs, err := procfs.NewDefaultFS(); err == nil {
		all, _ := fs.Stat()
		c := all.CPUTotal
		s.busy = c.User + c.Nice + c.System + c.IRQ + c.SoftIRQ + c.Steal
		s.total = s.busy + c.Idle + c.Iowait
	}
	return s
}

// Between returns the average cores each process used between two samples, with "machine"
// (all busy cores) and "other" (busy cores not accounted to a process).
func (m *Meter) Between(a, b Sample) results.CPUUse {
	wall := b.at.Sub(a.at).Seconds()
	u := results.CPUUse{Cores: map[string]float64{}}
	if wall <= 0 {
		return u
	}
	var sum float64
	for name, end := range b.procs {
		if start, ok := a.procs[name]; ok {
			c := (end - start).Seconds() / wall
			u.Cores[name], sum = stats.Round(c, 2), sum+c
		}
	}
	if a.total > 0 && b.total > a.total {
		machine := (b.busy - a.busy) / (b.total - a.total) * float64(m.Cores)
		u.Cores["machine"], u.Cores["other"] = stats.Round(machine, 2), stats.Round(max(machine-sum, 0), 2)
	}
	return u
}

// Machine describes this machine; the Kubernetes and kwok versions are filled in later.
func Machine() results.Machine {
	m := results.Machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), CPUModel: "unknown"}
	fs, err := procfs.NewDefaultFS()
	if err != nil {
		return m
	}
	if info, err := fs.CPUInfo(); err == nil && len(info) > 0 {
		m.CPUModel = info[0].ModelName
	}
	if mem, err := fs.Meminfo(); err == nil && mem.MemTotalBytes != nil {
		m.MemoryBytes = *mem.MemTotalBytes
	}
	if l, err := fs.LoadAvg(); err == nil {
		m.LoadAverage = fmt.Sprintf("%.2f %.2f %.2f", l.Load1, l.Load5, l.Load15)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

// ToolVersion runs "<binary> --version" and returns its first line.
func ToolVersion(binary string) string {
	out, err := exec.Command(binary, "--version").Output()
	if line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n"); err == nil {
		return line
	}
	return ""
}
