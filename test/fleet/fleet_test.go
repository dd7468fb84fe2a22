package fleet

import (
	"errors"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
)

// The fleet learns from the agents' logs what an agent process says only in its log, and
// passes the logs on unchanged, to a logger or to none.
func TestSinkCountsReadyAgentsAndKeepsTheLastError(t *testing.T) {
	for _, tt := range []struct {
		name   string
		logger func(*[]string) logr.Logger
		want   []string
	}{
		{"to no logger", func(*[]string) logr.Logger { return logr.Discard() }, nil},
		{"to a logger", func(lines *[]string) logr.Logger {
			return funcr.New(func(prefix, args string) { *lines = append(*lines, prefix+" "+args) }, funcr.Options{})
		}, []string{
			`agent "level"=0 "msg"="agent ready" "pod"="a"`,
			`agent "msg"="watch failed" "error"="gone" "pod"="a"`,
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var lines []string
			f := &Fleet{Logger: tt.logger(&lines)}
			if f.Err() != nil {
				t.Fatalf("Err before any error = %v, want nil", f.Err())
			}
			log := f.Logger.WithSink(sink{next: f.Logger.GetSink(), f: f}).WithName("agent").WithValues("pod", "a")
			log.Info("agent ready")
			log.V(1).Info("a detail the logger does not print")
			log.Error(errors.New("gone"), "watch failed")
			if f.Ready() != 1 {
				t.Errorf("Ready = %d, want 1", f.Ready())
			}
			if err := f.Err(); err == nil || err.Error() != "watch failed: gone" {
				t.Errorf("Err = %v, want watch failed: gone", err)
			}
			if strings.Join(lines, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("logged:\n%s\nwant:\n%s", strings.Join(lines, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}
