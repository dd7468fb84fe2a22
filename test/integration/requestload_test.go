package integration

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
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
)

// These tests run the operator with a gateway whose load it polls (package requestload):
// the gateway's Service is an EndpointSlice the test writes, as the endpoint slice
// controller would, and the agents are SDK agents on loopback addresses that stand for
// their pods' IPs, started for the pods the operator creates.

const gatewayService = "hive-gateway"

// gatewayWithLoad runs a gateway for ns, lists it in the EndpointSlice of the gateways'
// Service, and starts an operator that polls it; it returns the request URL of hive h.
func gatewayWithLoad(t *testing.T, ns string) string {
	t.Helper()
	metrics := interfaceAddr(t)
	url, _ := startGatewayWithMetrics(t, ns, metrics)
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
	return url
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
		pods := &corev1.PodList{}
		if err := env.Client.List(t.Context(), pods, client.InNamespace(ns), client.MatchingLabels{swarmv1alpha1.LabelHive: "h"}); err != nil {
			return err
		}
		if len(pods.Items) != 1 || pods.Items[0].DeletionTimestamp != nil {
			return fmt.Errorf("%d agent pods", len(pods.Items))
		}
		pod = &pods.Items[0]
		return nil
	})
	return pod
}

// TestARequestToAHiveAtZeroStartsAnAgent parks a request for an autoscaled hive at zero
// agents in the gateway's queue; the operator reads it in the gateway's load, scales the
// hive to one agent, and the request is answered by it.
func TestARequestToAHiveAtZeroStartsAnAgent(t *testing.T) {
	ns := namespace(t)
	url := gatewayWithLoad(t, ns)
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
}

// TestARequestInFlightHoldsItsAgentThroughADrain scales a hive down while its agent serves
// a request: the agent is marked draining at once, so the gateway sends it nothing new, but
// it is deleted only once the request has been answered.
func TestARequestInFlightHoldsItsAgentThroughADrain(t *testing.T) {
	ns := namespace(t)
	url := gatewayWithLoad(t, ns)
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
		pods := &corev1.PodList{}
		if err := env.Client.List(t.Context(), pods, client.InNamespace(ns), client.MatchingLabels{swarmv1alpha1.LabelHive: "h"}); err != nil {
			return err
		}
		if len(pods.Items) != 0 {
			return fmt.Errorf("%d agent pods after the request was answered", len(pods.Items))
		}
		return nil
	})
}
