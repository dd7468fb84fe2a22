package agent_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/aihub-dev/hive-operator/pkg/agent"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

// holdTaskReads is a transport that keeps the lists and watches of tasks waiting until
// their request is cancelled, as an API server too loaded to answer would, and passes
// everything else (discovery) through.
type holdTaskReads struct{ next http.RoundTripper }

func (h holdTaskReads) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasSuffix(req.URL.Path, "/tasks") {
		<-req.Context().Done()
		return nil, req.Context().Err()
	}
	return h.next.RoundTrip(req)
}

func TestRunStoppedBeforeItsWatchSyncedSaysSo(t *testing.T) {
	testenv.Require(t, env)
	cfg := *env.Config
	cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return holdTaskReads{next: rt} }
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	err := agent.Run(ctx, agent.Options{Config: &cfg, PodName: "p", Namespace: namespace(t), HealthAddr: "0"}, nil)
	if err == nil || !strings.Contains(err.Error(), "stopped before the task watch synced") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run stopped while its first list of tasks hung = %v; want an error saying the watch never synced", err)
	}
}

func TestRunReportsAHealthAddressInUse(t *testing.T) {
	testenv.Require(t, env)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	ns := namespace(t)
	done := make(chan error, 1)
	go func() {
		done <- agent.Run(context.Background(), agent.Options{Config: env.Config, PodName: "p", Namespace: ns, HealthAddr: l.Addr().String()},
			func(context.Context, *agent.Task) (string, error) { return "", nil })
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "serving health checks on "+l.Addr().String()) {
			t.Fatalf("Run with its health address in use = %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run with its health address in use did not return")
	}
}
