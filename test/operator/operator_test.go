package operator_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/aihub-dev/hive-operator/test/operator"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Run(m, &env)) }

func TestBuildStartReadyKillStop(t *testing.T) {
	testenv.Require(t, env)
	ctx := testenv.Context(t, 5*time.Minute)
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	begin := time.Now()
	bin, err := operator.Build(ctx, root, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("built in %s", time.Since(begin).Round(time.Millisecond))
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := testenv.WriteKubeconfig(env.Config, kubeconfig); err != nil {
		t.Fatal(err)
	}
	opts := operator.Options{
		Binary: bin, Kubeconfig: kubeconfig, Namespaces: []string{"default"},
		LeaderElect: true, LeaderElectionNamespace: "default",
		LeaseDuration: 4 * time.Second, RenewDeadline: 3 * time.Second, RetryPeriod: time.Second,
		QPS: 100, Burst: 200, Pprof: true, LogPath: filepath.Join(dir, "operator.log"),
	}

	p, err := operator.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Kill() })
	ready, err := p.WaitReady(ctx, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("ready %s after start (pid %d)", ready.Round(time.Millisecond), p.PID())
	if err := p.Alive(); err != nil {
		t.Fatal(err)
	}
	if body := get(t, p.MetricsURL()); !strings.Contains(body, "controller_runtime_") {
		t.Errorf("metrics without controller-runtime's: %.200s", body)
	}
	if body := get(t, "http://"+p.PprofAddr()+"/debug/pprof/"); !strings.Contains(body, "goroutine") {
		t.Errorf("pprof index: %.200s", body)
	}
	testenv.Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		lease := &coordinationv1.Lease{}
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: "default", Name: "hive-operator.swarm.aihub.dev"}, lease); err != nil {
			return err
		}
		if lease.Spec.HolderIdentity == nil || lease.Spec.LeaseDurationSeconds == nil || *lease.Spec.LeaseDurationSeconds != 4 {
			return fmt.Errorf("lease %+v", lease.Spec)
		}
		return nil
	})
	testenv.Eventually(t, 30*time.Second, 100*time.Millisecond, func() error {
		leader, err := p.Metric(ctx, "leader_election_master_status", "")
		if err != nil || leader[""] != 1 {
			return fmt.Errorf("leader_election_master_status %v, %w", leader, err)
		}
		return nil
	})
	if requests, err := p.Metric(ctx, "rest_client_requests_total", "method"); err != nil || requests["GET"] == 0 || requests["POST"] == 0 {
		t.Errorf("rest_client_requests_total by method = %v, %v; want GETs and POSTs", requests, err)
	}

	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.Exited():
	default:
		t.Fatal("Kill returned before the process ended")
	}
	if err := p.Alive(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("Alive after Kill = %v", err)
	}

	// A second operator becomes ready and stops cleanly on SIGTERM.
	opts.LogPath = filepath.Join(dir, "operator-2.log")
	p2, err := operator.Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p2.Kill() })
	if _, err := p2.WaitReady(ctx, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := p2.Stop(); err != nil {
		t.Errorf("Stop: %v", err)
	}
}

func TestStartFailsVisibly(t *testing.T) {
	p, err := operator.Start(operator.Options{Binary: "/bin/false", Kubeconfig: "/nonexistent"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.WaitReady(context.Background(), 10*time.Second); err == nil || !strings.Contains(err.Error(), "exited") {
		t.Errorf("WaitReady of a process that exits = %v", err)
	}
	if err := p.Kill(); err != nil {
		t.Errorf("Kill of an exited process: %v", err)
	}
	if _, err := operator.Start(operator.Options{}); err == nil {
		t.Error("Start without a binary succeeded")
	}
}

func get(t *testing.T, url string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(b)
}
