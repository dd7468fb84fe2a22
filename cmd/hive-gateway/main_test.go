package main

import (
	"bytes"
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

func noCluster() (*rest.Config, error) { return nil, errors.New("no kubeconfig") }

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"--listen=:9000", "--namespaces=a,b", "--max-tries=5", "--shutdown-grace=3s"})
	if err != nil {
		t.Fatal(err)
	}
	if o.listen != ":9000" || o.namespaces != "a,b" || o.maxTries != 5 || o.shutdownGrace != 3*time.Second || o.probeAddr != ":8081" {
		t.Errorf("options %+v", o)
	}
	for args, want := range map[string]string{
		"--max-tries=0":      "--max-tries=0 must be at least 1",
		"--shutdown-grace=0": "--shutdown-grace=0s must be positive",
		"--kube-api-qps=0":   "--kube-api-qps and --kube-api-burst must be positive",
		"extra":              `unexpected arguments ["extra"]`,
		"--listen":           "parsing flags: flag needs an argument: -listen",
	} {
		if _, err := parseFlags(strings.Fields(args)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", args, err, want)
		}
	}
}

func TestRun(t *testing.T) {
	for _, tc := range []struct {
		args           []string
		code           int
		stdout, stderr string
	}{
		{[]string{"--version"}, 0, "hive-gateway ", ""},
		{[]string{"--help"}, 0, "Usage: hive-gateway", ""},
		{[]string{"--max-tries=-1"}, 2, "", "hive-gateway: --max-tries=-1 must be at least 1"},
		{[]string{"--zap-log-level=error"}, 1, "", ""},
	} {
		var stdout, stderr bytes.Buffer
		if code := run(t.Context(), tc.args, noCluster, &stdout, &stderr); code != tc.code || !strings.HasPrefix(stdout.String(), tc.stdout) || !strings.HasPrefix(stderr.String(), tc.stderr) {
			t.Errorf("run(%v) = %d, stdout %q, stderr %q", tc.args, code, stdout.String(), stderr.String())
		}
	}
}

// TestTheGatewayServesUntilItsContextEnds runs the program against the test API server: it
// becomes ready once its watches have synced, serves its metrics and load, answers 404 for
// a hive that does not exist, and exits 0 when stopped.
func TestTheGatewayServesUntilItsContextEnds(t *testing.T) {
	testenv.Require(t, env)
	listen, probe, metrics := testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	code := make(chan int, 1)
	go func() {
		code <- run(ctx, []string{"--listen=" + listen, "--health-probe-bind-address=" + probe, "--metrics-bind-address=" + metrics, "--namespaces=default, "},
			func() (*rest.Config, error) { return env.Config, nil }, io.Discard, io.Discard)
	}()
	testenv.Eventually(t, 30*time.Second, 50*time.Millisecond, func() error { return status("GET", "http://"+probe+"/readyz", http.StatusOK) })
	for _, c := range []struct {
		method, url string
		want        int
	}{
		{"GET", "http://" + metrics + "/metrics", http.StatusOK},
		{"GET", "http://" + metrics + "/load", http.StatusOK},
		{"POST", "http://" + listen + "/v1/namespaces/default/hives/none/requests", http.StatusNotFound},
	} {
		if err := status(c.method, c.url, c.want); err != nil {
			t.Error(err)
		}
	}
	cancel()
	select {
	case c := <-code:
		if c != 0 {
			t.Errorf("exit code %d after a stop", c)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the gateway did not stop within 30s")
	}
}

func status(method, url string, want int) error {
	req, err := http.NewRequestWithContext(context.Background(), method, url, strings.NewReader("x"))
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("%s %s: %s, want %d", method, url, resp.Status, want)
	}
	return nil
}
