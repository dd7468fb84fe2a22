package main

import (
	"testing"
	"time"
)

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name    string
		stat    string
		want    uint64
		wantErr bool
	}{
		{"plain", "1234 (manager) S 1 1234 1234 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 12 0 100 0 0", 300, false},
		{"name with spaces and parentheses", "42 (a (weird) name) R 1 42 42 0 -1 0 0 0 0 0 7 3 0 0 20 0 1 0 1 0 0", 10, false},
		{"no name", "garbage", 0, true},
		{"too short", "1 (x) S 1 2 3", 0, true},
		{"not a number", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 a 3 0", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU(tt.stat)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseStatCPU = %d, %v; want %d, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseStatusKB(t *testing.T) {
	status := "Name:\tmanager\nVmPeak:\t  900000 kB\nVmHWM:\t   65536 kB\nVmRSS:\t   40960 kB\nThreads:\t12\n"
	tests := []struct {
		key     string
		want    uint64
		wantErr bool
	}{
		{"VmHWM", 64 << 20, false},
		{"VmRSS", 40 << 20, false},
		{"Threads", 12, false},
		{"VmSwap", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			got, err := parseStatusKB(status, tt.key)
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parseStatusKB(%s) = %d, %v; want %d, error %v", tt.key, got, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestParseMachineCPU(t *testing.T) {
	busy, total, err := parseMachineCPU("cpu  100 5 50 800 20 3 2 0 0 0\ncpu0 50 2 25 400 10 1 1 0 0 0\n")
	if err != nil {
		t.Fatal(err)
	}
	if busy != 160 || total != 980 {
		t.Errorf("busy, total = %d, %d; want 160, 980", busy, total)
	}
	if _, _, err := parseMachineCPU("intr 1 2 3\n"); err == nil {
		t.Error("want an error without a cpu line")
	}
}

func TestCPUBetween(t *testing.T) {
	at := time.Unix(1000, 0)
	a := cpuSample{at: at, procs: map[string]time.Duration{"apiserver": 10 * time.Second, "operator": time.Second},
		busy: 1000, total: 4000, machineKnown: true}
	b := cpuSample{at: at.Add(10 * time.Second), procs: map[string]time.Duration{"apiserver": 20 * time.Second, "operator": 3 * time.Second, "new": time.Second},
		busy: 2800, total: 6000, machineKnown: true}
	got := cpuBetween(a, b, 2)
	want := map[string]float64{"apiserver": 1, "operator": 0.2, "machine": 1.8, "other": 0.6}
	if got.WallSeconds != 10 || len(got.Cores) != len(want) {
		t.Fatalf("cpuBetween = %+v, want %v over 10 s", got, want)
	}
	for k, v := range want {
		if got.Cores[k] != v {
			t.Errorf("cores[%s] = %v, want %v", k, got.Cores[k], v)
		}
	}
	if empty := cpuBetween(a, a, 2); len(empty.Cores) != 0 {
		t.Errorf("a zero-length phase has cores %v", empty.Cores)
	}
}

func TestContainsAll(t *testing.T) {
	if !containsAll([]string{"--a=1", "--b=2"}, []string{"--b=2"}) {
		t.Error("want a match")
	}
	if containsAll([]string{"--a=1"}, []string{"--a=1", "--c=3"}) {
		t.Error("want no match")
	}
}
