package integration

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
	"github.com/aihub-dev/hive-operator/internal/gateway"
	"github.com/aihub-dev/hive-operator/internal/revision"
	"github.com/aihub-dev/hive-operator/pkg/agent"
	"github.com/aihub-dev/hive-operator/test/builder"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

// These tests run gateways against the test API server, in front of real agents (the SDK,
// serving on loopback addresses that stand for their pods' IPs). No operator runs: the
// tests make the agent pods and their states themselves, so that each routing decision is
// the gateway's.

// servingHive creates a hive of replicas 0 that serves requests with port and slots.
func servingHive(t *testing.T, ns string, slots int32, queue int32, timeout time.Duration) *swarmv1alpha1.Hive {
	t.Helper()
	h := builder.Hive(ns, "h").Replicas(0).Obj()
	h.Spec.Serving = &swarmv1alpha1.ServingSpec{Concurrency: ptr.To(slots), Port: ptr.To[int32](18081),
		QueueLength: ptr.To(queue), QueueTimeout: &metav1.Duration{Duration: timeout}}
	create(t, h)
	return h
}

// servingAgent runs an SDK agent on ip (port 18081), as the pod's container would, and
// creates its Ready pod with that IP, as the operator and the kubelet would.
func servingAgent(t *testing.T, hive *swarmv1alpha1.Hive, ip string, h agent.Handler) *corev1.Pod {
	t.Helper()
	pod := agentpod.Build(hive, revision.Of(&hive.Spec))
	pod.Name = "agent-" + strings.ReplaceAll(ip, ".", "-")
	create(t, pod)
	return runServingAgent(t, pod, ip, h)
}

// runServingAgent runs the SDK agent of an existing pod on ip and marks the pod Running and
// Ready with that IP once the agent's readiness probe passes, as the kubelet would.
func runServingAgent(t *testing.T, pod *corev1.Pod, ip string, h agent.Handler) *corev1.Pod {
	t.Helper()
	port, slots, _ := agentpod.Serving(pod)
	health := testenv.FreeAddr(t)
	testenv.Background(t, "agent "+pod.Name, func(ctx context.Context) error {
		return agent.Run(ctx, agent.Options{
			Config: env.Config, PodName: pod.Name, Namespace: pod.Namespace, HealthAddr: health, ShutdownGrace: time.Second,
			ServingAddr: net.JoinHostPort(ip, strconv.Itoa(port)), ServingConcurrency: slots,
		}, h)
	})
	eventually(t, 20*time.Second, func() error { return get200("http://" + health + "/readyz") })
	now := metav1.Now()
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now}}}
	if err := env.Client.Status().Update(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	return pod
}

// startGateway runs a gateway for the namespace until the test ends and returns its
// request URL for hive h.
func startGateway(t *testing.T, ns string) string {
	t.Helper()
	url, _ := startGatewayWithMetrics(t, ns, "0")
	return url
}

// startGatewayWithMetrics runs a gateway whose metrics (and load) are served on
// metricsAddr, and returns its request URL for hive h and its listener's address.
func startGatewayWithMetrics(t *testing.T, ns, metricsAddr string) (url, addr string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	probe := testenv.FreeAddr(t)
	testenv.Background(t, "the gateway", func(ctx context.Context) error {
		return gateway.Run(ctx, env.Config, gateway.RunOptions{Listener: l, ProbeAddr: probe, MetricsAddr: metricsAddr, Namespaces: []string{ns}, ShutdownGrace: time.Second})
	})
	eventually(t, 20*time.Second, func() error { return get200("http://" + probe + "/readyz") })
	return "http://" + l.Addr().String() + "/v1/namespaces/" + ns + "/hives/h/requests", l.Addr().String()
}

func get200(url string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

type reply struct {
	status        int
	body, agentOf string
}

func request(url, input string) reply {
	resp, err := http.Post(url, "text/plain", strings.NewReader(input))
	if err != nil {
		return reply{body: err.Error()}
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return reply{resp.StatusCode, string(b), resp.Header.Get(swarmv1alpha1.HeaderAgent)}
}

// TestTheGatewayRoutesRequestsToTheAgentsItWatches follows a hive's agents through the
// gateway's watch: it serves through a Ready agent, stops sending to one that drains, and
// answers 404 once the hive no longer serves.
func TestTheGatewayRoutesRequestsToTheAgentsItWatches(t *testing.T) {
	ns := namespace(t)
	hive := servingHive(t, ns, 4, 10, 5*time.Second)
	upper := func(_ context.Context, task *agent.Task) (string, error) { return strings.ToUpper(task.Input), nil }
	a := servingAgent(t, hive, "127.0.0.11", upper)
	url := startGateway(t, ns)

	eventually(t, 10*time.Second, func() error {
		if r := request(url, "hello"); r.status != http.StatusOK || r.body != "HELLO" || r.agentOf != a.Name {
			return fmt.Errorf("answer %+v", r)
		}
		return nil
	})

	b := servingAgent(t, hive, "127.0.0.12", upper)
	base := a.DeepCopy()
	a.Annotations = map[string]string{swarmv1alpha1.AnnotationDrainingSince: time.Now().UTC().Format(time.RFC3339)}
	if err := env.Client.Patch(t.Context(), a, client.MergeFrom(base)); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, func() error {
		for range 10 {
			if r := request(url, "x"); r.status != http.StatusOK || r.agentOf != b.Name {
				return fmt.Errorf("answer %+v while %s drains", r, a.Name)
			}
		}
		return nil
	})

	patchHive(t, ns, "h", func(h *swarmv1alpha1.Hive) { h.Spec.Serving = nil })
	eventually(t, 10*time.Second, func() error {
		if r := request(url, "x"); r.status != http.StatusNotFound {
			return fmt.Errorf("answer %+v after spec.serving was removed", r)
		}
		return nil
	})
}

// TestTwoGatewaysNeverPushAnAgentPastItsSlots sends bursts through two gateway replicas to
// one agent of two serving slots: each gateway counts only its own requests, so they offer
// the agent more than its slots, and the agent's 429 makes the gateway queue the rest.
// A checker in the agent's handler counts the requests it serves at once.
func TestTwoGatewaysNeverPushAnAgentPastItsSlots(t *testing.T) {
	ns := namespace(t)
	hive := servingHive(t, ns, 2, 100, 30*time.Second)
	var inFlight, most atomic.Int32
	servingAgent(t, hive, "127.0.0.21", func(context.Context, *agent.Task) (string, error) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(20 * time.Millisecond)
		return "ok", nil
	})
	urls := []string{startGateway(t, ns), startGateway(t, ns)}
	eventually(t, 10*time.Second, func() error {
		for _, u := range urls {
			if r := request(u, "warm-up"); r.status != http.StatusOK {
				return fmt.Errorf("answer %+v", r)
			}
		}
		return nil
	})

	const requests = 40
	statuses := map[int]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i := range requests {
		wg.Go(func() {
			r := request(urls[i%2], "x")
			mu.Lock()
			statuses[r.status]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if most.Load() > 2 {
		t.Errorf("the agent served %d requests at once; it has 2 slots", most.Load())
	}
	// Each gateway queues what it cannot place; a request that met the other gateway's
	// requests in every slot it was offered is answered 503, never sent past the slots.
	if statuses[http.StatusOK]+statuses[http.StatusServiceUnavailable] != requests || statuses[http.StatusOK] < requests/2 {
		t.Errorf("answers by status %v", statuses)
	}
	t.Logf("answers by status %v; at most %d at once", statuses, most.Load())
}
