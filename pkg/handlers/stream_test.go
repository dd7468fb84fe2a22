package handlers

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aihub-dev/hive-operator/pkg/agent"
)

// signalling is a request's Output that records what it gets and calls first on the first
// write: the source of the answer waits for that before it goes on, so an answer that is
// not streamed never completes.
type signalling struct {
	mu    sync.Mutex
	got   strings.Builder
	once  sync.Once
	first func()
}

func (s *signalling) Write(p []byte) (int, error) {
	s.mu.Lock()
	s.got.Write(p)
	s.mu.Unlock()
	s.once.Do(s.first)
	return len(p), nil
}

func (s *signalling) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got.String()
}

func TestExecStreamsARequestsAnswer(t *testing.T) {
	flag := filepath.Join(t.TempDir(), "first-received")
	out := &signalling{first: func() { _ = os.WriteFile(flag, nil, 0o600) }}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	script := `echo first; while [ ! -e "$1" ]; do sleep 0.01; done; echo second`
	got, err := Exec([]string{"sh", "-c", script, "sh", flag}, ExecOptions{})(ctx, &agent.Task{Request: true, Output: out})
	if err != nil || got != "" {
		t.Fatalf("Exec = %q, %v", got, err)
	}
	if s := out.String(); s != "first\nsecond\n" {
		t.Errorf("streamed %q", s)
	}
}

func TestHTTPStreamsARequestsAnswer(t *testing.T) {
	received := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("first "))
		w.(http.Flusher).Flush()
		select {
		case <-received:
			_, _ = w.Write([]byte("second"))
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	out := &signalling{first: func() { close(received) }}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	got, err := HTTP(srv.URL, HTTPOptions{})(ctx, &agent.Task{Request: true, Output: out})
	if err != nil || got != "" {
		t.Fatalf("HTTP = %q, %v", got, err)
	}
	if s := out.String(); s != "first second" {
		t.Errorf("streamed %q", s)
	}
}
