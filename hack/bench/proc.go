package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is the kernel's USER_HZ (CLK_TCK): the unit of the times in /proc/<pid>/stat.
// It is 100 on every Linux architecture Go supports.
const clockTick = 100

// parseStatCPU returns utime+stime, in clock ticks, from the content of /proc/<pid>/stat.
// The command name (in parentheses) may itself contain spaces and parentheses, so fields
// are counted from the last ')'.
func parseStatCPU(stat string) (uint64, error) {
	end := strings.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, errors.New("no command name in the stat line")
	}
	fields := strings.Fields(stat[end+1:])
	// After the name: state(3) ppid(4) ... utime(14) stime(15), so utime is fields[11].
	if len(fields) < 13 {
		return 0, fmt.Errorf("stat line has %d fields after the name, want at least 13", len(fields))
	}
	utime, err := strconv.ParseUint(fields[11], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing utime: %w", err)
	}
	stime, err := strconv.ParseUint(fields[12], 10, 64)
	if err != nil {
		return 0, fmt.Errorf("parsing stime: %w", err)
	}
	return utime + stime, nil
}

// parseStatusKB returns the value in bytes of a "Key:  123 kB" line of /proc/<pid>/status
// or /proc/meminfo.
func parseStatusKB(status, key string) (uint64, error) {
	for line := range strings.Lines(status) {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || name != key {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			return 0, fmt.Errorf("%s has no value", key)
		}
		v, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parsing %s: %w", key, err)
		}
		if len(f) > 1 && f[1] == "kB" {
			v *= 1024
		}
		return v, nil
	}
	return 0, fmt.Errorf("no %s line", key)
}

// parseMachineCPU returns the busy and total clock ticks of all CPUs from /proc/stat.
func parseMachineCPU(stat string) (busy, total uint64, err error) {
	for line := range strings.Lines(stat) {
		f := strings.Fields(line)
		if len(f) < 8 || f[0] != "cpu" {
			continue
		}
		var v [8]uint64
		for i := range v {
			if v[i], err = strconv.ParseUint(f[i+1], 10, 64); err != nil {
				return 0, 0, fmt.Errorf("parsing /proc/stat: %w", err)
			}
		}
		// user nice system idle iowait irq softirq steal
		idle := v[3] + v[4]
		busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
		return busy, busy + idle, nil
	}
	return 0, 0, errors.New("no cpu line in /proc/stat")
}

// procCPU returns the CPU time a process has used.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("reading the CPU time of process %d: %w", pid, err)
	}
	ticks, err := parseStatCPU(string(b))
	if err != nil {
		return 0, err
	}
	return time.Duration(ticks) * time.Second / clockTick, nil
}

// procMemory returns a process's peak resident set size (VmHWM) and its current one (VmRSS).
func procMemory(pid int) (peak, current uint64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, fmt.Errorf("reading the memory of process %d: %w", pid, err)
	}
	if peak, err = parseStatusKB(string(b), "VmHWM"); err != nil {
		return 0, 0, err
	}
	if current, err = parseStatusKB(string(b), "VmRSS"); err != nil {
		return 0, 0, err
	}
	return peak, current, nil
}

// resetPeakRSS sets a process's VmHWM back to its current RSS (Linux 4.0+), so that a peak
// can be measured per phase. It fails quietly on kernels without it: the peak is then the
// process's lifetime peak.
func resetPeakRSS(pid int) {
	_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
}

// findProcess returns the first process whose command line has a binary named name and
// contains every one of args.
func findProcess(name string, args ...string) (int, bool) {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		raw, err := os.ReadFile(filepath.Join(d, "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		argv := strings.Split(string(bytes.TrimRight(raw, "\x00")), "\x00")
		if filepath.Base(argv[0]) != name || !containsAll(argv[1:], args) {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(d))
		if err == nil {
			return pid, true
		}
	}
	return 0, false
}

func containsAll(have, want []string) bool {
	for _, w := range want {
		found := false
		for _, h := range have {
			if h == w {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// cpuMeter samples the CPU time of the processes of a run and of the whole machine, to say
// where the cores went.
type cpuMeter struct {
	pids map[string]int // component name → pid
}

type cpuSample struct {
	at           time.Time
	procs        map[string]time.Duration
	busy, total  uint64
	machineKnown bool
}

func (m *cpuMeter) sample() cpuSample {
	s := cpuSample{at: time.Now(), procs: map[string]time.Duration{}}
	for name, pid := range m.pids {
		if pid <= 0 {
			continue
		}
		if d, err := procCPU(pid); err == nil {
			s.procs[name] = d
		}
	}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		if busy, total, err := parseMachineCPU(string(b)); err == nil {
			s.busy, s.total, s.machineKnown = busy, total, true
		}
	}
	return s
}

// CPUUse is how many cores each component used on average over a phase.
type CPUUse struct {
	WallSeconds float64            `json:"wallSeconds"`
	Cores       map[string]float64 `json:"cores"`
}

// cpuBetween returns the average cores used by each component between two samples, with
// "machine" (all busy cores) and "other" (busy cores not accounted to a component).
func cpuBetween(a, b cpuSample, cores int) CPUUse {
	wall := b.at.Sub(a.at).Seconds()
	u := CPUUse{WallSeconds: round(wall, 2), Cores: map[string]float64{}}
	if wall <= 0 {
		return u
	}
	var sum float64
	for name, end := range b.procs {
		start, ok := a.procs[name]
		if !ok {
			continue
		}
		c := (end - start).Seconds() / wall
		u.Cores[name] = round(c, 2)
		sum += c
	}
	if a.machineKnown && b.machineKnown && b.total > a.total {
		machine := float64(b.busy-a.busy) / float64(b.total-a.total) * float64(cores)
		u.Cores["machine"] = round(machine, 2)
		u.Cores["other"] = round(max(machine-sum, 0), 2)
	}
	return u
}
