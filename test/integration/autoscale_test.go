package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/pkg/agent"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

func autoscaledHive(ns, name string, minReplicas, maxReplicas, concurrency int32, downWindow, idle time.Duration) *swarmv1alpha1.Hive {
	h := hiveOf(ns, name, max(minReplicas, 1), concurrency)
	h.Spec.Autoscaling = &swarmv1alpha1.AutoscalingSpec{
		MinReplicas:     ptr.To(minReplicas),
		MaxReplicas:     maxReplicas,
		ScaleDownWindow: &metav1.Duration{Duration: downWindow},
		IdleTimeout:     &metav1.Duration{Duration: idle},
	}
	return h
}

func replicasOf(t *testing.T, ns, name string) int32 {
	t.Helper()
	return ptr.Deref(getHive(t, ns, name).Spec.Replicas, -1)
}

func TestAutoscalingFollowsABurstAndSparesBusyAgents(t *testing.T) {
	ns := namespace(t)
	// The agents hold their tasks until the status has said the burst needs more agents than
	// max (or 30 s have passed), so the load lasts however slowly a loaded machine submits.
	held := make(chan struct{})
	w := newWorld(t, autoscaledHive(ns, "bursty", 1, 10, 2, 3*time.Second, time.Hour), func(ctx context.Context, _ string, _ *agent.Task) (string, error) {
		select {
		case <-held:
		case <-ctx.Done():
			return "", ctx.Err()
		}
		select {
		case <-time.After(400 * time.Millisecond):
			return "ok", nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	})
	busyAlive := sample(busyDeletionCheck(ns, "bursty"))
	// The burst needs 50 agents at 2 slots each; max binds at 10, and the status says so
	// while the load lasts.
	var sawMax atomic.Bool
	watchCtx, stopWatching := context.WithCancel(context.Background())
	defer stopWatching()
	go func() {
		defer close(held)
		for deadline := time.Now().Add(30 * time.Second); watchCtx.Err() == nil && time.Now().Before(deadline); {
			h := &swarmv1alpha1.Hive{}
			if err := env.Client.Get(watchCtx, client.ObjectKey{Namespace: ns, Name: "bursty"}, h); err == nil {
				if c := condition(h, swarmv1alpha1.HiveScalingActive); c.Reason == swarmv1alpha1.ReasonTooManyReplicas {
					sawMax.Store(true)
					return
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	const n = 100
	for i := range n {
		w.submit(fmt.Sprintf("burst-%03d", i))
	}
	eventually(t, 30*time.Second, func() error {
		h := getHive(t, ns, "bursty")
		if r := ptr.Deref(h.Spec.Replicas, 0); r != 10 {
			return fmt.Errorf("replicas %d, want 10", r)
		}
		return nil
	})
	waitForAgents(t, ns, "bursty", 10, 30*time.Second)
	waitAllSucceeded(t, ns, n, 60*time.Second)
	// The load is gone: after the down window the hive shrinks to its minimum.
	idleSince := time.Now()
	waitForAgents(t, ns, "bursty", 1, 30*time.Second)
	if took := time.Since(idleSince); took < 2*time.Second {
		t.Errorf("scaled down %v after the load ended, inside the 3s window", took)
	}
	busyAlive.finish(t)
	h := getHive(t, ns, "bursty")
	if !sawMax.Load() {
		t.Error("ScalingActive never reported TooManyReplicas while the burst needed 50 agents")
	}
	if c := condition(h, swarmv1alpha1.HiveScalingActive); c.Reason != swarmv1alpha1.ReasonTooFewReplicas || c.Status != metav1.ConditionTrue {
		t.Errorf("idle ScalingActive = %+v; want TooFewReplicas (min 1)", c)
	}
	if h.Status.LastScaleTime == nil {
		t.Error("status.lastScaleTime is not set")
	}
	got := eventReasons(t, ns, "bursty")
	if !slices.Contains(got, "ScaledUp") || !slices.Contains(got, "ScaledDown") {
		t.Errorf("events %v lack ScaledUp or ScaledDown", got)
	}
}

func TestAutoscalingToZeroAndBack(t *testing.T) {
	ns := namespace(t)
	w := newWorld(t, autoscaledHive(ns, "sleepy", 0, 3, 1, time.Second, 2*time.Second), succeed)
	eventually(t, 20*time.Second, func() error {
		h := getHive(t, ns, "sleepy")
		if r := ptr.Deref(h.Spec.Replicas, -1); r != 0 {
			return fmt.Errorf("replicas %d", r)
		}
		if c := condition(h, swarmv1alpha1.HiveScalingActive); c.Reason != swarmv1alpha1.ReasonScaledToZero {
			return fmt.Errorf("ScalingActive %+v", c)
		}
		return nil
	})
	waitForAgents(t, ns, "sleepy", 0, 20*time.Second)

	start := time.Now()
	w.submit("wake-up")
	task := w.waitPhase("wake-up", swarmv1alpha1.TaskSucceeded, 30*time.Second)
	t.Logf("a task on a hive at zero succeeded after %v", time.Since(start).Round(time.Millisecond))
	if task.Status.Result != "done:in:wake-up" {
		t.Errorf("result %q", task.Status.Result)
	}
	if r := replicasOf(t, ns, "sleepy"); r != 1 {
		t.Errorf("replicas after activation %d, want 1", r)
	}
}

func TestLeaderFailover(t *testing.T) {
	ns := namespace(t)
	startKubelet(t, ns, 0)
	leaseNS := namespace(t)
	id := "failover-" + ns
	leader := func(o *ctrl.Options) {
		o.LeaderElection = true
		o.LeaderElectionID = id
		o.LeaderElectionNamespace = leaseNS
		o.LeaseDuration = ptr.To(3 * time.Second)
		o.RenewDeadline = ptr.To(2 * time.Second)
		o.RetryPeriod = ptr.To(300 * time.Millisecond)
	}
	first := startOperatorWith(t, leader)
	select {
	case <-first.elected:
	case <-time.After(20 * time.Second):
		t.Fatal("the first manager never became leader")
	}
	second := startOperatorWith(t, leader)
	select {
	case <-second.elected:
		t.Fatal("two managers lead at once")
	case <-time.After(time.Second):
	}

	create(t, hiveOf(ns, "ha", 2, 1))
	waitForAgents(t, ns, "ha", 2, 20*time.Second)

	// The leader dies without handing over (no release): the standby takes over once the
	// lease expires, and carries on the work.
	lease := &coordinationv1.Lease{}
	if err := env2Get(t, leaseNS, id, lease); err != nil {
		t.Fatalf("reading the lease: %v", err)
	}
	holder := ptr.Deref(lease.Spec.HolderIdentity, "")
	first.cancel()
	stopped := time.Now()
	select {
	case <-second.elected:
	case <-time.After(20 * time.Second):
		t.Fatal("the standby never took over")
	}
	took := time.Since(stopped)
	t.Logf("failover took %v with a 3s lease", took.Round(time.Millisecond))
	if took > 3*time.Second+2*time.Second {
		t.Errorf("failover took %v; the lease lasts 3s", took)
	}
	if err := env2Get(t, leaseNS, id, lease); err != nil {
		t.Fatal(err)
	}
	if h := ptr.Deref(lease.Spec.HolderIdentity, ""); h == holder || h == "" {
		t.Errorf("lease holder %q after failover (was %q)", h, holder)
	}
	patchHive(t, ns, "ha", func(h *swarmv1alpha1.Hive) { h.Spec.Replicas = ptr.To[int32](3) })
	waitForAgents(t, ns, "ha", 3, 20*time.Second)
}

// scrape reads the value of a metric series, matching every label given.
func scrape(t *testing.T, addr, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scraping: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`^` + regexp.QuoteMeta(name) + `\{([^}]*)\} (\S+)$`)
	for _, l := range strings.Split(string(body), "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		ok := true
		for k, v := range labels {
			if !strings.Contains(m[1], fmt.Sprintf(`%s="%s"`, k, v)) {
				ok = false
			}
		}
		if ok {
			f, err := strconv.ParseFloat(m[2], 64)
			if err != nil {
				t.Fatal(err)
			}
			return f, true
		}
	}
	return 0, false
}

func TestMetricsAfterAKnownWorkload(t *testing.T) {
	ns := namespace(t)
	addr := testenv.FreeAddr(t)
	w := &world{t: t, ns: ns, hive: "measured"}
	w.op = startOperatorWith(t, func(o *ctrl.Options) { o.Metrics = metricsserver.Options{BindAddress: addr} })
	create(t, hiveOf(ns, "measured", 2, 2))
	w.fleet, w.kubelet = fleetFor(t, ns, func(_ context.Context, _ string, task *agent.Task) (string, error) {
		switch {
		case strings.HasPrefix(task.Name, "bad-"):
			return "", fmt.Errorf("cannot do %s", task.Name)
		case task.Name == "flaky" && task.Attempt == 1:
			return "", fmt.Errorf("first try fails")
		}
		time.Sleep(20 * time.Millisecond)
		return "ok", nil
	})
	waitForAgents(t, ns, "measured", 2, 20*time.Second)

	for i := range 10 {
		w.submit(fmt.Sprintf("good-%d", i))
	}
	for i := range 2 {
		w.submit(fmt.Sprintf("bad-%d", i), func(t *swarmv1alpha1.Task) { t.Spec.MaxRetries = ptr.To[int32](0) })
	}
	w.submit("flaky", func(t *swarmv1alpha1.Task) {
		t.Spec.Backoff = &metav1.Duration{Duration: 100 * time.Millisecond}
	})
	for i := range 10 {
		w.waitPhase(fmt.Sprintf("good-%d", i), swarmv1alpha1.TaskSucceeded, 30*time.Second)
	}
	w.waitPhase("flaky", swarmv1alpha1.TaskSucceeded, 30*time.Second)
	for i := range 2 {
		w.waitPhase(fmt.Sprintf("bad-%d", i), swarmv1alpha1.TaskFailed, 30*time.Second)
	}

	hive := map[string]string{"namespace": ns, "hive": "measured"}
	with := func(extra ...string) map[string]string {
		m := map[string]string{"namespace": ns, "hive": "measured"}
		for i := 0; i < len(extra); i += 2 {
			m[extra[i]] = extra[i+1]
		}
		return m
	}
	eventually(t, 10*time.Second, func() error {
		want := []struct {
			name   string
			labels map[string]string
			value  float64
		}{
			{"hive_task_outcomes_total", with("phase", "Succeeded"), 11},
			{"hive_task_outcomes_total", with("phase", "Failed"), 2},
			{"hive_task_retries_total", with("reason", "AgentFailed"), 1},
			{"hive_task_queue_wait_seconds_count", hive, 14},
			{"hive_task_run_seconds_count", with("phase", "Succeeded"), 11},
			{"hive_agents", with("state", "idle"), 2},
			{"hive_agents", with("state", "busy"), 0},
			{"hive_replicas_desired", hive, 2},
			{"hive_replicas_ready", hive, 2},
		}
		for _, m := range want {
			got, ok := scrape(t, addr, m.name, m.labels)
			if !ok || got != m.value {
				return fmt.Errorf("%s%v = %v (found %v), want %v", m.name, m.labels, got, ok, m.value)
			}
		}
		return nil
	})
	// Finished tasks are not in the operator's cache, so not in hive_tasks: the outcomes
	// count them.
	if n, ok := scrape(t, addr, "hive_tasks", with("phase", "Succeeded")); ok {
		t.Errorf("hive_tasks counts %v succeeded tasks", n)
	}
	// The queue waits are milliseconds, not the seconds a creation timestamp would suggest.
	if fast, ok := scrape(t, addr, "hive_task_queue_wait_seconds_bucket", with("le", "1")); !ok || fast < 10 {
		t.Errorf("%v of 14 binds waited under a second", fast)
	}
	for _, name := range []string{"controller_runtime_reconcile_total", "workqueue_depth", "rest_client_requests_total"} {
		if _, ok := scrape(t, addr, name, nil); !ok {
			t.Errorf("controller-runtime's %s is missing", name)
		}
	}
}
