package main

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
	"github.com/aihub-dev/hive-operator/internal/gateway"
	"github.com/aihub-dev/hive-operator/internal/revision"
	sdk "github.com/aihub-dev/hive-operator/pkg/agent"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

// TestRequest sends requests through a real gateway to a real agent, straight to the
// gateway and through the API server's proxy to the gateway's Service, as a user of the
// chart would.
func TestRequest(t *testing.T) {
	testenv.Require(t, env)
	ctx := t.Context()
	ns := namespace(ctx, t)
	hive := createHive(ctx, t, ns, "echo")
	hive.Spec.Serving = &swarmv1alpha1.ServingSpec{Concurrency: ptr.To[int32](2), Port: ptr.To[int32](18091)}
	if err := env.Client.Update(ctx, hive); err != nil {
		t.Fatal(err)
	}
	serveAgent(t, hive, "127.0.0.31", func(_ context.Context, task *sdk.Task) (string, error) {
		switch task.Input {
		case "fail":
			return "", sdk.Permanent(errors.New("cannot answer that"))
		case "stream":
			_, _ = task.Output.Write([]byte("tok1 "))
			return "", errors.New("the model went away")
		}
		return strings.ToUpper(task.Input), nil
	})
	// The API server proxies to the Service's endpoints, which may not be loopback: the
	// gateway listens on an address of the machine's.
	gw := listenOnInterface(t)
	probe := testenv.FreeAddr(t)
	testenv.Background(t, "the gateway", func(ctx context.Context) error {
		return gateway.Run(ctx, env.Config, gateway.RunOptions{Listener: gw, ProbeAddr: probe, MetricsAddr: "0", Namespaces: []string{ns}, ShutdownGrace: time.Second})
	})
	testenv.Eventually(t, 20*time.Second, 50*time.Millisecond, func() error { return get(t, "http://"+probe+"/readyz") })
	gatewayService(ctx, t, ns, gw.Addr().(*net.TCPAddr))
	direct := "http://" + gw.Addr().String()

	// Both ways in answer once the gateway and the API server have seen the agent and the
	// gateway's endpoints.
	testenv.Eventually(t, 20*time.Second, 50*time.Millisecond, func() error {
		for _, way := range [][]string{{"--gateway-url", direct}, {"--gateway-service", ns + "/hive-gateway"}} {
			if r := kubectlHive(ctx, t, ns, "", append([]string{"request", "echo", "--input", "warm"}, way...)...); r.code != 0 {
				return errors.New(r.stderr)
			}
		}
		return nil
	})
	for name, tc := range map[string]struct {
		args, want []string
		stdin      string
		code       int
	}{
		"straight to the gateway": {args: []string{"--input", "hello", "--gateway-url", direct, "-v"}, want: []string{"HELLO", "answered by agent agent-1: succeeded"}},
		"through the API server's proxy": {
			args: []string{"-f", "-", "--gateway-service", ns + "/hive-gateway", "--timeout", "5s"}, stdin: "hi", want: []string{"HI"},
		},
		"a failure of the agent": {args: []string{"--input", "fail", "--gateway-url", direct}, code: 1, want: []string{"422", "cannot answer that"}},
		"a failure midway through a stream": {
			args: []string{"--input", "stream", "--gateway-url", direct}, code: 1, want: []string{"tok1", "failed the request midway: the model went away"},
		},
		"a hive that does not serve": {args: []string{"--input", "x", "--gateway-url", direct}, code: 1, want: []string{"does not serve requests"}},
		"no such gateway Service": {
			args: []string{"--input", "x", "--gateway-service", ns + "/nothing"}, code: 1, want: []string{"reaching the gateway through the API server", `service "nothing"`, "--gateway-url"},
		},
		"no input":          {args: []string{"--gateway-url", direct}, code: 1, want: []string{"needs an input"}},
		"a bad gateway URL": {args: []string{"--input", "x", "--gateway-url", "localhost:8000"}, code: 1, want: []string{"not an http(s) URL"}},
		"a bad timeout":     {args: []string{"--input", "x", "--timeout", "-1s"}, code: 1, want: []string{"--timeout must be 0 or more"}},
	} {
		t.Run(name, func(t *testing.T) {
			target := "echo"
			if name == "a hive that does not serve" {
				target = "missing"
			}
			r := kubectlHive(ctx, t, ns, tc.stdin, append([]string{"request", target}, tc.args...)...)
			if r.code != tc.code {
				t.Fatalf("exit %d, want %d; stdout %q, stderr %q", r.code, tc.code, r.stdout, r.stderr)
			}
			wantContains(t, name, r.stdout+r.stderr, tc.want...)
		})
	}
}

// serveAgent runs an SDK agent serving on ip for a Ready pod of the hive with that IP, as
// the operator and the kubelet would make it.
func serveAgent(t *testing.T, hive *swarmv1alpha1.Hive, ip string, h sdk.Handler) {
	t.Helper()
	pod := agentpod.Build(hive, revision.Of(&hive.Spec))
	pod.Name = "agent-1"
	if err := env.Client.Create(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
	port, slots, _ := agentpod.Serving(pod)
	health := testenv.FreeAddr(t)
	testenv.Background(t, "agent", func(ctx context.Context) error {
		return sdk.Run(ctx, sdk.Options{
			Config: env.Config, PodName: pod.Name, Namespace: pod.Namespace, HealthAddr: health, ShutdownGrace: time.Second,
			ServingAddr: net.JoinHostPort(ip, strconv.Itoa(port)), ServingConcurrency: slots,
		}, h)
	})
	testenv.Eventually(t, 20*time.Second, 50*time.Millisecond, func() error { return get(t, "http://"+health+"/readyz") })
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}}
	if err := env.Client.Status().Update(t.Context(), pod); err != nil {
		t.Fatal(err)
	}
}

// gatewayService creates the gateway's pod, Service and endpoints, as the chart, the
// kubelet and the endpoint controllers would: the API server proxies only to an endpoint
// that is a pod with that IP.
func gatewayService(ctx context.Context, t *testing.T, ns string, addr *net.TCPAddr) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hive-gateway-0"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "gateway", Image: "example.com/hive-gateway:v1"}}},
	}
	if err := env.Client.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: addr.IP.String(), PodIPs: []corev1.PodIP{{IP: addr.IP.String()}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}}
	if err := env.Client.Status().Update(ctx, pod); err != nil {
		t.Fatal(err)
	}
	ref := &corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: pod.Name, UID: pod.UID}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hive-gateway"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt(addr.Port)}}},
	}
	ip := addr.IP.String()
	port := int32(addr.Port)
	if err := env.Client.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	//nolint:staticcheck // the API server's service proxy of this release still reads Endpoints
	eps := &corev1.Endpoints{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "hive-gateway"},
		Subsets:    []corev1.EndpointSubset{{Addresses: []corev1.EndpointAddress{{IP: ip, TargetRef: ref}}, Ports: []corev1.EndpointPort{{Name: "http", Port: port}}}},
	}
	if err := env.Client.Create(ctx, eps); err != nil {
		t.Fatal(err)
	}
	slice := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: "hive-gateway-1", Labels: map[string]string{discoveryv1.LabelServiceName: "hive-gateway"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{ip}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}, TargetRef: ref}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: &port}},
	}
	if err := env.Client.Create(ctx, slice); err != nil {
		t.Fatal(err)
	}
}

// listenOnInterface listens on the machine's first IPv4 address that is not a loopback one.
func listenOnInterface(t *testing.T) net.Listener {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && ipn.IP.IsGlobalUnicast() {
			if l, err := net.Listen("tcp", net.JoinHostPort(ipn.IP.String(), "0")); err == nil {
				t.Cleanup(func() { _ = l.Close() })
				return l
			}
		}
	}
	t.Fatalf("no IPv4 address other than loopback among %v", addrs)
	return nil
}

func get(t *testing.T, url string) error {
	t.Helper()
	resp, err := http.Get(url) //nolint:noctx // a probe of a test server
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	return nil
}
