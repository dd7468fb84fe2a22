package lazylog

import (
	"errors"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
)

func capture(verbosity int) (logr.Logger, *[]string) {
	var lines []string
	l := funcr.New(func(prefix, args string) {
		lines = append(lines, strings.TrimSpace(prefix+" "+args))
	}, funcr.Options{Verbosity: verbosity, LogCaller: funcr.All})
	return l, &lines
}

func TestLinesCarryTheirValuesNamesAndCaller(t *testing.T) {
	base, lines := capture(1)
	l := New(base).WithName("task").WithValues("controller", "task")
	a := l.WithValues("name", "a")
	b := l.WithValues("name", "b") // shares a's parent: must not see a's pair
	a.Info("decided", "phase", "Pending")
	b.V(1).Info("written")
	a.Error(errors.New("boom"), "failed")
	a.V(2).Info("not enabled")
	want := []string{
		`task "caller"={"file"="lazylog_test.go" "line"=25} "level"=0 "msg"="decided" "controller"="task" "name"="a" "phase"="Pending"`,
		`task "caller"={"file"="lazylog_test.go" "line"=26} "level"=1 "msg"="written" "controller"="task" "name"="b"`,
		`task "caller"={"file"="lazylog_test.go" "line"=27} "msg"="failed" "error"="boom" "controller"="task" "name"="a"`,
	}
	if len(*lines) != len(want) {
		t.Fatalf("lines:\n%s", strings.Join(*lines, "\n"))
	}
	for i := range want {
		if (*lines)[i] != want[i] {
			t.Errorf("line %d:\n got %s\nwant %s", i, (*lines)[i], want[i])
		}
	}
}

func TestWithValuesCostsTheDelegateNothing(t *testing.T) {
	counting := &countingSink{}
	l := New(logr.New(counting))
	for range 10 {
		_ = l.WithValues("k", "v").WithValues("reconcileID", "x")
	}
	if counting.withValues != 0 {
		t.Errorf("the delegate's WithValues ran %d times for loggers that wrote nothing", counting.withValues)
	}
	l.WithValues("k", "v").Info("once")
	if counting.withValues != 1 || counting.infos != 1 {
		t.Errorf("one line: WithValues %d, Info %d; want 1 and 1", counting.withValues, counting.infos)
	}
	if New(logr.Discard()).GetSink() != nil {
		t.Error("a discarding logger should stay one")
	}
}

type countingSink struct{ withValues, infos int }

func (c *countingSink) Init(logr.RuntimeInfo)       {}
func (c *countingSink) Enabled(int) bool            { return true }
func (c *countingSink) Info(int, string, ...any)    { c.infos++ }
func (c *countingSink) Error(error, string, ...any) {}
func (c *countingSink) WithValues(...any) logr.LogSink {
	c.withValues++
	return c
}
func (c *countingSink) WithName(string) logr.LogSink { return c }
