package memlimit

import (
	"errors"
	"io/fs"
	"testing"
)

func TestParse(t *testing.T) {
	cases := []struct {
		content string
		want    int64
		ok      bool
	}{
		{"536870912\n", 536870912, true},
		{"max\n", 0, false},
		{"", 0, false},
		{"9223372036854771712\n", 0, false}, // cgroup v1 without a limit
		{"0", 0, false},
		{"-1", 0, false},
		{"lots", 0, false},
	}
	for _, tc := range cases {
		got, ok := Parse(tc.content)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Parse(%q) = %d, %v; want %d, %v", tc.content, got, ok, tc.want, tc.ok)
		}
	}
}

func TestFromCgroup(t *testing.T) {
	files := func(m map[string]string) func(string) ([]byte, error) {
		return func(path string) ([]byte, error) {
			if c, ok := m[path]; ok {
				return []byte(c), nil
			}
			return nil, fs.ErrNotExist
		}
	}
	cases := []struct {
		name  string
		files map[string]string
		want  int64
		ok    bool
	}{
		{"cgroup v2 limit", map[string]string{"/sys/fs/cgroup/memory.max": "1000\n"}, 900, true},
		{"cgroup v2 without a limit", map[string]string{"/sys/fs/cgroup/memory.max": "max\n"}, 0, false},
		{"cgroup v1 limit", map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "2000\n"}, 1800, true},
		{"cgroup v1 without a limit", map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712"}, 0, false},
		{"no cgroup files", map[string]string{}, 0, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := FromCgroup(files(tc.files))
			if got != tc.want || ok != tc.ok {
				t.Errorf("FromCgroup = %d, %v; want %d, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
	if _, ok := FromCgroup(func(string) ([]byte, error) { return nil, errors.New("permission denied") }); ok {
		t.Error("an unreadable cgroup gave a limit")
	}
}
