package handlers

import (
	"strings"
	"testing"
)

func TestTailBuffer(t *testing.T) {
	tests := []struct {
		name   string
		max    int
		writes []string
		want   string
	}{
		{name: "nothing", max: 8, want: ""},
		{name: "fits", max: 8, writes: []string{"ab", "cd\n"}, want: "abcd"},
		{name: "exactly fits", max: 4, writes: []string{"ab", "cd"}, want: "abcd"},
		{name: "keeps the end across writes", max: 4, writes: []string{"abc", "def"}, want: "…cdef"},
		{name: "keeps the end of one long write", max: 4, writes: []string{"x", "abcdefgh"}, want: "…efgh"},
		{name: "a write of exactly max after others", max: 4, writes: []string{"x", "abcd"}, want: "…abcd"},
		{name: "starts on a character", max: 4, writes: []string{"aé€"}, want: "…€"},
		{name: "trailing white space", max: 8, writes: []string{"err \r\n\t\n"}, want: "err"},
		{name: "none kept", max: 0, writes: []string{"abc"}, want: ""},
		{name: "negative keeps none", max: -1, writes: []string{"abc"}, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &tailBuffer{max: tt.max}
			for _, w := range tt.writes {
				if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write(%q) = %d, %v", w, n, err)
				}
			}
			if got := b.String(); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestCappedBuffer(t *testing.T) {
	tests := []struct {
		name          string
		limit         int
		writes        []string
		want          string
		wantOverflows int
	}{
		{name: "within", limit: 4, writes: []string{"ab", "cd"}, want: "abcd"},
		{name: "one over", limit: 4, writes: []string{"abcde"}, want: "abcde", wantOverflows: 1},
		{name: "far over, reported once", limit: 4, writes: []string{"abc", "defgh", "ijk"}, want: "abcde", wantOverflows: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			overflows := 0
			b := &cappedBuffer{limit: tt.limit, onOverflow: func() { overflows++ }}
			for _, w := range tt.writes {
				if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write(%q) = %d, %v", w, n, err)
				}
			}
			if got := b.String(); got != tt.want {
				t.Errorf("kept %q, want %q", got, tt.want)
			}
			if overflows != tt.wantOverflows || b.overflowed() != (tt.wantOverflows > 0) {
				t.Errorf("overflowed %d times (overflowed() = %v), want %d", overflows, b.overflowed(), tt.wantOverflows)
			}
		})
	}
}

func TestWithOutput(t *testing.T) {
	long := strings.Repeat("x", 2*messageLimit) + "the cause"
	tests := []struct {
		name, message, output, want string
	}{
		{name: "no output", message: "failed", want: "failed"},
		{name: "short output", message: "failed", output: "why", want: "failed; stderr: why"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := withOutput(tt.message, "stderr", tt.output); got != tt.want {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
	t.Run("long output is cut from the front to fit", func(t *testing.T) {
		got := withOutput("failed", "stderr", long)
		if len(got) != messageLimit || !strings.HasPrefix(got, "failed; stderr: …x") || !strings.HasSuffix(got, "the cause") {
			t.Errorf("got %d bytes: %.40q…%q", len(got), got, lastBytes(got, 20))
		}
	})
}

func TestLastBytes(t *testing.T) {
	tests := []struct {
		name string
		s    string
		n    int
		want string
	}{
		{name: "fits", s: "abc", n: 3, want: "abc"},
		{name: "cut", s: "abcdefgh", n: 6, want: "…fgh"},
		{name: "cut inside a character", s: "abc€€", n: 7, want: "…€"},
		{name: "room for the ellipsis only", s: "abcd", n: 3, want: "…"},
		{name: "no room", s: "abc", n: 2, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := lastBytes(tt.s, tt.n); got != tt.want {
				t.Errorf("lastBytes(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
			}
		})
	}
}
