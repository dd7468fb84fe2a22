package integration

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/controllers"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
	"github.com/aihub-dev/hive-operator/pkg/agent"
	"github.com/aihub-dev/hive-operator/test/builder"
	"github.com/aihub-dev/hive-operator/test/kubelet"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

// These tests run the operator with a gateway whose load it polls (package requestload):
// the gateway's Service is an EndpointSlice the test writes, as the endpoint slice
// controller would, and the agents are SDK agents on loopback addresses that stand for
// their pods' IPs, started for the pods the operator creates.

const gatewayService = "hive-gateway"

// gatewayWithLoad runs a gateway for ns, lists it in the EndpointSlice of the gateways'
// Service, and starts an operator that polls it; it returns the request URL of hive h and
// the gateway's metrics address.
func gatewayWithLoad(t *testing.T, ns string) (url, metrics string) {
	t.Helper()
	metrics = interfaceAddr(t)
	url, _ = startGatewayWithMetrics(t, ns, metrics)
	host, port, _ := net.SplitHostPort(metrics)
	n, _ := strconv.Atoi(port)
	create(t, &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: gatewayService + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: gatewayService}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("metrics"), Port: ptr.To(int32(n))}},
	})
	startOperator(t, func(o *controllers.Options) {
		o.Gateways = controllers.GatewayOptions{Namespace: ns, Service: gatewayService, Port: "metrics", Interval: 100 * time.Millisecond}
	})
	return url, metrics
}

// interfaceAddr returns a free address on the machine's first IPv4 address that is not a
// loopback one: the API server refuses loopback addresses in an EndpointSlice.
func interfaceAddr(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.To4() == nil || !ipn.IP.IsGlobalUnicast() {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort(ipn.IP.String(), "0"))
		if err != nil {
			continue
		}
		addr := l.Addr().String()
		_ = l.Close()
		return addr
	}
	t.Fatalf("no IPv4 address other than loopback among %v, for the gateway's EndpointSlice", addrs)
	return ""
}

func withServing(h *swarmv1alpha1.Hive, slots int32) *swarmv1alpha1.Hive {
	h.Spec.Serving = &swarmv1alpha1.ServingSpec{Concurrency: ptr.To(slots), Port: ptr.To[int32](18081), QueueTimeout: &metav1.Duration{Duration: 20 * time.Second}}
	return h
}

// onePod waits for the hive to have exactly one live agent pod and returns it.
func onePod(t *testing.T, ns string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	eventually(t, 10*time.Second, func() error {
		pods, err := podsOf(t, ns, 1)
		if err == nil && pods[0].DeletionTimestamp != nil {
			err = fmt.Errorf("agent %s is being deleted", pods[0].Name)
		}
		if err == nil {
			pod = &pods[0]
		}
		return err
	})
	return pod
}

// podsOf returns the agent pods of hive h, or an error when there are not n of them.
func podsOf(t *testing.T, ns string, n int) ([]corev1.Pod, error) {
	pods := &corev1.PodList{}
	if err := env.Client.List(t.Context(), pods, client.InNamespace(ns), client.MatchingLabels{swarmv1alpha1.LabelHive: "h"}); err != nil {
		return nil, err
	}
	if len(pods.Items) != n {
		return nil, fmt.Errorf("%d agent pods, want %d", len(pods.Items), n)
	}
	return pods.Items, nil
}

// TestARequestToAHiveAtZeroStartsAnAgent parks a request for an autoscaled hive at zero
// agents in the gateway's queue; the operator reads it in the gateway's load, scales the
// hive to one agent, and the request is answered by it.
func TestARequestToAHiveAtZeroStartsAnAgent(t *testing.T) {
	ns := namespace(t)
	url, metrics := gatewayWithLoad(t, ns)
	create(t, withServing(builder.Hive(ns, "h").Replicas(0).Autoscaling(0, 3).Obj(), 4))
	eventually(t, 10*time.Second, func() error {
		if c := getHive(t, ns, "h").Status.Conditions; len(c) == 0 {
			return fmt.Errorf("no conditions yet")
		}
		return nil
	})
	if n := replicasOf(t, ns, "h"); n != 0 {
		t.Fatalf("an idle hive has %d replicas, want 0", n)
	}

	sent := time.Now()
	answers := make(chan reply, 1)
	go func() { answers <- request(url, "hello") }()
	pod := onePod(t, ns)
	started := time.Now()
	runServingAgent(t, pod, "127.0.0.41", func(_ context.Context, task *agent.Task) (string, error) {
		return strings.ToUpper(task.Input), nil
	})
	select {
	case r := <-answers:
		if r.status != http.StatusOK || r.body != "HELLO" || r.agentOf != pod.Name {
			t.Fatalf("answer %+v, want HELLO from %s", r, pod.Name)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the parked request was not answered")
	}
	t.Logf("answered %s after it was sent; the operator created its agent %s after it was sent", time.Since(sent).Round(time.Millisecond), started.Sub(sent).Round(time.Millisecond))
	if n := replicasOf(t, ns, "h"); n != 1 {
		t.Errorf("%d replicas for one request, want 1", n)
	}
	// The gateway counted it, on the port the operator polls.
	resp, err := http.Get("http://" + metrics + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{
		fmt.Sprintf(`hive_gateway_requests_total{code="2xx",hive="h",namespace=%q,reason="succeeded"} 1`, ns),
		fmt.Sprintf(`hive_gateway_request_queue_wait_seconds_count{hive="h",namespace=%q} 1`, ns),
		fmt.Sprintf(`hive_gateway_serving_slots{hive="h",namespace=%q} 4`, ns),
		"workqueue_adds_total", // controller-runtime's, next to the gateway's own
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("the gateway's metrics lack %s", want)
		}
	}
}

// TestARequestInFlightHoldsItsAgentThroughADrain scales a hive down while its agent serves
// a request: the agent is marked draining at once, so the gateway sends it nothing new, but
// it is deleted only once the request has been answered.
func TestARequestInFlightHoldsItsAgentThroughADrain(t *testing.T) {
	ns := namespace(t)
	url, _ := gatewayWithLoad(t, ns)
	create(t, withServing(builder.Hive(ns, "h").Replicas(1).Obj(), 2))
	pod := onePod(t, ns)
	inside, release := make(chan struct{}, 1), make(chan struct{})
	runServingAgent(t, pod, "127.0.0.42", func(ctx context.Context, _ *agent.Task) (string, error) {
		inside <- struct{}{}
		select {
		case <-release:
			return "done", nil
		case <-ctx.Done():
			return "", ctx.Err()
		}
	})
	answers := make(chan reply, 1)
	go func() { answers <- request(url, "x") }()
	select {
	case <-inside:
	case <-time.After(20 * time.Second):
		t.Fatal("the request did not reach the agent")
	}

	patchHive(t, ns, "h", func(h *swarmv1alpha1.Hive) { h.Spec.Replicas = ptr.To[int32](0) })
	eventually(t, 10*time.Second, func() error {
		p := &corev1.Pod{}
		if err := env.Client.Get(t.Context(), client.ObjectKeyFromObject(pod), p); err != nil {
			return err
		}
		if _, draining := agentpod.DrainingSince(p); !draining {
			return fmt.Errorf("agent %s is not draining", p.Name)
		}
		return nil
	})
	// Well past the drain settle (200ms) and a few polls of the gateway's load, the agent
	// is still there: its request holds it.
	deadline := time.Now().Add(1500 * time.Millisecond)
	for time.Now().Before(deadline) {
		p := &corev1.Pod{}
		if err := env.Client.Get(t.Context(), client.ObjectKeyFromObject(pod), p); err != nil || p.DeletionTimestamp != nil {
			t.Fatalf("agent %s deleted while serving a request (%v)", pod.Name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	close(release)
	if r := <-answers; r.status != http.StatusOK || r.body != "done" {
		t.Fatalf("answer %+v", r)
	}
	eventually(t, 10*time.Second, func() error {
		_, err := podsOf(t, ns, 0)
		return err
	})
}

// servingRuntime is the kubelet's runtime for serving agents: each pod's SDK agent serves
// on the pod's own loopback IP, and Start returns once its readiness probe passes, so
// that the kubelet marks the pod Ready when the agent can serve (StartBeforeReady).
type servingRuntime struct {
	t       *testing.T
	handler agent.Handler

	mu     sync.Mutex
	ips    map[string]string
	next   int
	agents map[string]*servingProc
}

type servingProc struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// ipOf gives each pod an IP of its own, the same every time.
func (r *servingRuntime) ipOf(pod *corev1.Pod) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if ip, ok := r.ips[pod.Name]; ok {
		return ip
	}
	r.next++
	ip := fmt.Sprintf("127.0.1.%d", r.next)
	r.ips[pod.Name] = ip
	return ip
}

func (r *servingRuntime) Start(pod *corev1.Pod) {
	port, slots, _ := agentpod.Serving(pod)
	health := testenv.FreeAddr(r.t)
	ctx, cancel := context.WithCancel(context.Background())
	p := &servingProc{cancel: cancel, done: make(chan struct{})}
	r.mu.Lock()
	r.agents[pod.Name] = p
	r.mu.Unlock()
	go func() {
		defer close(p.done)
		_ = agent.Run(ctx, agent.Options{
			Config: env.Config, PodName: pod.Name, Namespace: pod.Namespace, HealthAddr: health, ShutdownGrace: time.Second,
			ServingAddr: net.JoinHostPort(r.ipOf(pod), strconv.Itoa(port)), ServingConcurrency: slots,
		}, r.handler)
	}()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline) && get200("http://"+health+"/readyz") != nil; {
		time.Sleep(10 * time.Millisecond)
	}
}

// Stop shuts the agent down as SIGTERM does: it finishes its requests within its grace.
func (r *servingRuntime) Stop(pod string, grace time.Duration) {
	r.mu.Lock()
	p := r.agents[pod]
	delete(r.agents, pod)
	r.mu.Unlock()
	if p == nil {
		return
	}
	p.cancel()
	select {
	case <-p.done:
	case <-time.After(grace):
	}
}

func (r *servingRuntime) Kill(pod string) { r.Stop(pod, 0) }

// TestARolloutAndAScaleDownUnderLoadFailNoRequest sends requests without pause through the
// gateway while the hive rolls out a new template and then scales down: agents drain,
// finish their requests and stop, new ones start, and every request is answered 200. Some
// requests take longer than an agent's shutdown grace, as a long streamed answer does:
// their agents are deleted only once they have been answered.
func TestARolloutAndAScaleDownUnderLoadFailNoRequest(t *testing.T) {
	ns := namespace(t)
	rt := &servingRuntime{t: t, ips: map[string]string{}, agents: map[string]*servingProc{},
		handler: func(ctx context.Context, task *agent.Task) (string, error) {
			d := time.Duration(5+rand.IntN(20)) * time.Millisecond
			if strings.HasPrefix(task.Input, "slow") {
				// Longer than the agent's shutdown grace (1s): only a drain that waits for
				// the request lets it finish.
				d = 1500 * time.Millisecond
			}
			select {
			case <-time.After(d):
				return task.Input, nil
			case <-ctx.Done():
				return "", ctx.Err()
			}
		}}
	k := &kubelet.Kubelet{Config: env.Config, Client: env.Client, Namespace: ns, NodeName: "node-1", MarkReady: true,
		Runtime: rt, StartBeforeReady: true, PodIP: rt.ipOf}
	kctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := k.Start(kctx); err != nil {
		t.Fatal(err)
	}
	url, _ := gatewayWithLoad(t, ns)
	create(t, withServing(builder.Hive(ns, "h").Replicas(3).Obj(), 4))
	eventually(t, 20*time.Second, func() error {
		if h := getHive(t, ns, "h"); h.Status.AvailableReplicas != 3 {
			return fmt.Errorf("%d agents available", h.Status.AvailableReplicas)
		}
		return nil
	})

	var (
		mu       sync.Mutex
		statuses = map[int]int{}
		failures []string
		stop     = make(chan struct{})
		wg       sync.WaitGroup
	)
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				in := fmt.Sprintf("%d-%d", w, i)
				if w < 2 {
					in = "slow-" + in
				}
				r := request(url, in)
				mu.Lock()
				statuses[r.status]++
				if r.status != http.StatusOK || r.body != in {
					failures = append(failures, fmt.Sprintf("%d %q", r.status, r.body))
				}
				mu.Unlock()
			}
		})
	}
	served := func() int {
		mu.Lock()
		defer mu.Unlock()
		return statuses[http.StatusOK]
	}
	eventually(t, 10*time.Second, func() error {
		if n := served(); n < 200 {
			return fmt.Errorf("%d requests served", n)
		}
		return nil
	})

	old := getHive(t, ns, "h").Status.CurrentRevision
	patchHive(t, ns, "h", func(h *swarmv1alpha1.Hive) { h.Spec.Template.Spec.Containers[0].Image = "example.com/agent:v2" })
	eventually(t, 60*time.Second, func() error {
		h := getHive(t, ns, "h")
		if h.Status.CurrentRevision == old || h.Status.UpdatedReplicas != 3 || h.Status.Replicas != 3 || h.Status.AvailableReplicas != 3 {
			return fmt.Errorf("rollout: revision %s, %d updated of %d, %d available", h.Status.CurrentRevision, h.Status.UpdatedReplicas, h.Status.Replicas, h.Status.AvailableReplicas)
		}
		return nil
	})
	rolled := served()
	patchHive(t, ns, "h", func(h *swarmv1alpha1.Hive) { h.Spec.Replicas = ptr.To[int32](1) })
	eventually(t, 60*time.Second, func() error {
		_, err := podsOf(t, ns, 1)
		return err
	})
	close(stop)
	wg.Wait()
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed; the first: %v", len(failures), served()+len(failures), failures[:min(5, len(failures))])
	}
	t.Logf("answers by status %v: %d before the rollout ended, %d after it", statuses, rolled, served()-rolled)
}
