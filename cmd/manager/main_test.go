package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"k8s.io/client-go/rest"

	"github.com/aihub-dev/hive-operator/test/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Run(m, &env)) }

// get polls url until it answers 200 or the deadline passes. A manager that stops (done)
// fails the test with its error rather than with a probe that never answers.
func get(ctx context.Context, t *testing.T, url string, done <-chan error) string {
	t.Helper()
	var last error
	for ctx.Err() == nil {
		select {
		case err := <-done:
			t.Fatalf("the manager stopped while waiting for %s: %v", url, err)
		default:
		}
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
	probe, metrics := testenv.FreeAddr(t), testenv.FreeAddr(t)
	args := []string{
		"--health-probe-bind-address=" + probe,
		"--metrics-bind-address=" + metrics,
		"--metrics-secure=false",
		"--leader-elect=false",
		"--namespaces=default,kube-system",
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() {
		if code := start(ctx, args, func() (*rest.Config, error) { return env.Config, nil }, io.Discard, os.Stderr); code != 0 {
			done <- fmt.Errorf("exit code %d", code)
		}
		close(done)
	}()

	wait := testenv.Context(t, 30*time.Second)
	get(wait, t, "http://"+probe+"/healthz", done)
	get(wait, t, "http://"+probe+"/readyz", done)
	if body := get(wait, t, "http://"+metrics+"/metrics", done); !strings.Contains(body, "rest_client_requests_total") {
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

func TestParseFlags(t *testing.T) {
	cases := map[string]struct {
		args    []string
		wantErr string
		check   func(*options) bool
	}{
		"defaults": {check: func(o *options) bool {
			return o.qps == 300 && o.burst == 600 && o.controllers.BindConcurrency == 16 && !o.leaderElect && o.metricsSecure
		}},
		"tuned": {
			args: []string{"--namespaces=a, b", "--kube-api-qps=50", "--task-concurrency=3", "--leader-elect", "--zap-log-level=debug"},
			check: func(o *options) bool {
				return o.namespaces == "a, b" && o.qps == 50 && o.controllers.TaskConcurrency == 3 && o.leaderElect
			},
		},
		"unknown flag":   {args: []string{"--no-such-flag"}, wantErr: "flag provided but not defined"},
		"stray argument": {args: []string{"run"}, wantErr: "every setting is a --flag"},
		"zero qps":       {args: []string{"--kube-api-qps=0"}, wantErr: "must be positive"},
		"lease shorter than renew": {
			args:    []string{"--leader-elect", "--leader-elect-lease-duration=5s", "--leader-elect-renew-deadline=10s"},
			wantErr: "lease-duration > --leader-elect-renew-deadline",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			o, err := parseFlags(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !tc.check(o) {
				t.Fatalf("parseFlags(%v) = %+v, %v", tc.args, o, err)
			}
		})
	}
}

// The process's exit codes without a cluster: 0 for --help, 2 for flags it cannot use (with
// the reason on stderr), 1 when there is no cluster. TestManagerServesProbesAndMetrics
// sees 0 after a clean stop; a process runs one manager (controller names are global).
func TestStartExitCodes(t *testing.T) {
	noCluster := func() (*rest.Config, error) { return nil, errors.New("no kubeconfig") }
	cases := map[string]struct {
		args       []string
		wantCode   int
		wantStderr string
		wantStdout string
	}{
		"help":        {args: []string{"--help"}, wantCode: 0},
		"version":     {args: []string{"--version"}, wantCode: 0, wantStdout: "manager devel (go"},
		"a bad flag":  {args: []string{"--kube-api-qps=0"}, wantCode: 2, wantStderr: "must be positive"},
		"an argument": {args: []string{"extra"}, wantCode: 2, wantStderr: "unexpected arguments"},
		// The reason goes to the log, which controller-runtime lets a process set only once.
		"no cluster": {args: []string{"--leader-elect=false"}, wantCode: 1},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			var stdout, stderr strings.Builder
			if code := start(t.Context(), tc.args, noCluster, &stdout, &stderr); code != tc.wantCode {
				t.Fatalf("exit code %d; want %d; stderr:\n%s", code, tc.wantCode, stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.wantStdout) || (tc.wantStdout == "" && stdout.Len() > 0) {
				t.Errorf("stdout %q, want it to contain %q", stdout.String(), tc.wantStdout)
			}
			if !strings.Contains(stderr.String(), tc.wantStderr) {
				t.Errorf("stderr lacks %q:\n%s", tc.wantStderr, stderr.String())
			}
		})
	}
}
