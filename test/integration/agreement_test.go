package integration

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/metrics"
	"github.com/aihub-dev/hive-operator/test/builder"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

// TestEveryViewCountsAgentsByTheSameRule reads a hive's agents by state three ways, as a
// person would: the hive's status, the hive_agents metric and `kubectl hive status`. They
// must agree for a hive with an agent in every state.
func TestEveryViewCountsAgentsByTheSameRule(t *testing.T) {
	ns := namespace(t)
	k := startKubelet(t, ns, 0)
	op := startOperator(t)
	create(t, builder.Hive(ns, "views").Replicas(4).DrainTimeout(time.Hour).Obj())
	pods := waitForAgents(t, ns, "views", 4, 20*time.Second)
	busy, idle, starting, draining := pods[0].Name, pods[1].Name, pods[2].Name, pods[3].Name
	bindTask(t, ns, "views", "on-busy", busy)
	bindTask(t, ns, "views", "on-draining", draining)
	k.Hold(starting, true)
	// With the operator stopped, one busy agent is marked draining and the hive asks for the
	// three others: a state the operator then keeps as it is.
	op.stop()
	mark := getPod(t, ns, draining)
	base := mark.DeepCopy()
	mark.Annotations = map[string]string{swarmv1alpha1.AnnotationDrainingSince: time.Now().UTC().Format(time.RFC3339Nano)}
	if err := env.Client.Patch(context.Background(), mark, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	patchHive(t, ns, "views", func(h *swarmv1alpha1.Hive) { h.Spec.Replicas = ptr.To[int32](3) })
	startOperator(t)

	want := map[string]int{"busy": 1, "idle": 1, "starting": 1, "draining": 1}
	kubectlHive := buildKubectlHive(t)
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := testenv.WriteKubeconfig(env.Config, kubeconfig); err != nil {
		t.Fatal(err)
	}
	eventually(t, 20*time.Second, func() error {
		h := getHive(t, ns, "views")
		status := map[string]int{"busy": int(h.Status.BusyAgents), "idle": int(h.Status.IdleAgents), "draining": int(h.Status.DrainingAgents)}
		if diff := cmp.Diff(map[string]int{"busy": 1, "idle": 1, "draining": 1}, status); diff != "" {
			return fmt.Errorf("hive status (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(want, agentsMetric(t, ns, "views")); diff != "" {
			return fmt.Errorf("hive_agents (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(want, kubectlHiveAgents(t, kubectlHive, kubeconfig, ns, "views")); diff != "" {
			return fmt.Errorf("kubectl hive status (-want +got):\n%s", diff)
		}
		return nil
	})
	t.Logf("agents %s busy, %s idle, %s starting, %s draining: all three views agree", busy, idle, starting, draining)
}

// agentsMetric gathers hive_agents for a hive, by state, as the operator's collector
// reports it (from the API server here rather than a manager's cache).
func agentsMetric(t *testing.T, ns, hive string) map[string]int {
	t.Helper()
	collector := &metrics.StateCollector{}
	collector.SetReader(env.Client)
	reg := prometheus.NewRegistry()
	reg.MustRegister(collector)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, f := range families {
		if f.GetName() != metrics.Namespace+"_agents" {
			continue
		}
		for _, m := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["namespace"] == ns && labels["hive"] == hive {
				out[labels["state"]] = int(m.GetGauge().GetValue())
			}
		}
	}
	return out
}

func buildKubectlHive(t *testing.T) string {
	t.Helper()
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := testenv.Build(context.Background(), root, t.TempDir(), "kubectl-hive")
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// kubectlHiveAgents runs `kubectl hive status HIVE` and counts the rows of its agents table
// by their STATE, as a person reads them.
func kubectlHiveAgents(t *testing.T, bin, kubeconfig, ns, hive string) map[string]int {
	t.Helper()
	out, err := exec.Command(bin, "status", hive, "-n", ns, "--kubeconfig", kubeconfig).Output()
	if err != nil {
		t.Fatalf("kubectl hive status: %v", err)
	}
	counts, state := map[string]int{}, -1
	for line := range strings.Lines(string(out)) {
		fields := strings.Fields(line)
		if state < 0 {
			if len(fields) > 0 && fields[0] == "AGENT" {
				state = slices.Index(fields, "STATE")
			}
			continue
		}
		if state < len(fields) {
			counts[fields[state]]++
		}
	}
	if state < 0 {
		t.Fatalf("kubectl hive status printed no agents table with a STATE column:\n%s", out)
	}
	return counts
}
