// Package lazylog defers a logger's key/value pairs until it writes a line. controller-
// runtime gives every reconcile a logger with the controller, the object and a reconcile ID,
// and zap encodes such values as soon as they are given: at startup with 50,000 queued
// tasks, loggers that never wrote a line were a fifth of what the operator allocated. Here
// WithValues only remembers the pairs; a line that is written (its level enabled) pays for
// them once.
package lazylog

import (
	"slices"

	"github.com/go-logr/logr"
)

// New returns l with its WithValues deferred.
func New(l logr.Logger) logr.Logger {
	s := l.GetSink()
	if s == nil {
		return l
	}
	// Each line goes through one more frame, Info or Error here, on its way to s.
	if cd, ok := s.(logr.CallDepthLogSink); ok {
		s = cd.WithCallDepth(1)
	}
	return logr.New(&sink{delegate: s})
}

type sink struct {
	delegate logr.LogSink
	values   []any
}

// Init is a no-op: the delegate was initialised by the logger it came from.
func (s *sink) Init(logr.RuntimeInfo) {}

func (s *sink) Enabled(level int) bool { return s.delegate.Enabled(level) }

func (s *sink) Info(level int, msg string, keysAndValues ...any) {
	s.withValues().Info(level, msg, keysAndValues...)
}

func (s *sink) Error(err error, msg string, keysAndValues ...any) {
	s.withValues().Error(err, msg, keysAndValues...)
}

func (s *sink) WithValues(keysAndValues ...any) logr.LogSink {
	// Clip: two loggers made from this one must not share what they append.
	return &sink{delegate: s.delegate, values: append(slices.Clip(s.values), keysAndValues...)}
}

func (s *sink) WithName(name string) logr.LogSink {
	return &sink{delegate: s.delegate.WithName(name), values: s.values}
}

func (s *sink) withValues() logr.LogSink {
	if len(s.values) == 0 {
		return s.delegate
	}
	return s.delegate.WithValues(s.values...)
}
