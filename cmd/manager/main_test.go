package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aihub-dev/hive-operator/test/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Run(m, &env)) }

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = l.Close() }()
	return l.Addr().String()
}

// get polls url until it answers 200 or the deadline passes.
func get(ctx context.Context, t *testing.T, url string) string {
	t.Helper()
	var last error
	for ctx.Err() == nil {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return string(body)
			}
			last = err
		} else {
			last = err
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s never answered 200: %v", url, last)
	return ""
}

func TestManagerServesProbesAndMetrics(t *testing.T) {
	testenv.Require(t, env)
	probe, metrics := freeAddr(t), freeAddr(t)
	o, err := parseFlags([]string{
		"--health-probe-bind-address=" + probe,
		"--metrics-bind-address=" + metrics,
		"--metrics-secure=false",
		"--leader-elect=false",
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- run(ctx, env.Config, o) }()

	wait := testenv.Context(t, 30*time.Second)
	get(wait, t, "http://"+probe+"/healthz")
	get(wait, t, "http://"+probe+"/readyz")
	if body := get(wait, t, "http://"+metrics+"/metrics"); !strings.Contains(body, "rest_client_requests_total") {
		t.Errorf("metrics lack controller-runtime's client metrics:\n%.400s", body)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("manager stopped with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("manager did not stop within 30s of cancellation")
	}
}

func TestParseFlagsRejectsUnknownFlags(t *testing.T) {
	if _, err := parseFlags([]string{"--no-such-flag"}); err == nil {
		t.Fatal("an unknown flag was accepted")
	}
}
