// Package memlimit derives the Go runtime's soft memory limit from the container's memory
// limit, so the garbage collector works harder before the kernel's OOM killer would, rather
// than letting the heap grow to twice its live size (GOGC=100) past the limit.
//
// docs/architecture.md shows where it fits among the operator's parts.
package memlimit

import (
	"strconv"
	"strings"
)

// cgroupFiles hold the memory limit of the process's cgroup: v2 first, then v1.
var cgroupFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// unlimited is above any real limit: cgroup v1 reports "no limit" as a huge page-aligned
// number rather than "max".
const unlimited = int64(1) << 60

// Share is the part of the container's limit given to the Go runtime; the rest covers memory
// the runtime does not manage (stacks of threads in cgo, the binary, page cache charged to
// the cgroup).
const Share = 0.9

// Parse reads a cgroup memory limit file's content; ok is false when there is no limit.
func Parse(content string) (limit int64, ok bool) {
	s := strings.TrimSpace(content)
	if s == "" || s == "max" {
		return 0, false
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 || v >= unlimited {
		return 0, false
	}
	return v, true
}

// FromCgroup returns the soft limit for the Go runtime, Share of the cgroup's memory limit,
// reading the limit with read (os.ReadFile); ok is false when the process has no limit.
func FromCgroup(read func(path string) ([]byte, error)) (soft int64, ok bool) {
	for _, path := range cgroupFiles {
		content, err := read(path)
		if err != nil {
			continue
		}
		if limit, ok := Parse(string(content)); ok {
			return int64(float64(limit) * Share), true
		}
		return 0, false
	}
	return 0, false
}
