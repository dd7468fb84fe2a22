package chart_test

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
)

// isGateway reports whether an object is the gateway's.
func isGateway(o *unstructured.Unstructured) bool {
	return o.GetLabels()["app.kubernetes.io/component"] == "gateway"
}

// gatewayObjects returns the gateway's objects of a kind.
func gatewayObjects(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	return findOf(objs, kind, true)
}

func oneGateway[T any](t *testing.T, objs []*unstructured.Unstructured, kind string) *T {
	t.Helper()
	return only[T](t, gatewayObjects(objs, kind), "gateway "+kind)
}

// checkGateway checks the hive gateway: a Deployment of replicas that never overlaps the
// manager's, restricted like it; a Service whose metrics port the manager is told to poll;
// a PodDisruptionBudget, an optional HPA; and read-only access to hives and pods.
func checkGateway(t *testing.T, r release, objs []*unstructured.Unstructured) {
	t.Helper()
	d := oneGateway[appsv1.Deployment](t, objs, "Deployment")
	manager := one[appsv1.Deployment](t, objs, "Deployment")
	if labels.SelectorFromSet(manager.Spec.Selector.MatchLabels).Matches(labels.Set(d.Spec.Template.Labels)) ||
		labels.SelectorFromSet(d.Spec.Selector.MatchLabels).Matches(labels.Set(manager.Spec.Template.Labels)) {
		t.Errorf("the gateway's and the manager's Deployments select each other's pods: %v, %v", d.Spec.Selector.MatchLabels, manager.Spec.Selector.MatchLabels)
	}
	switch {
	case r.gatewayHPA && d.Spec.Replicas != nil:
		t.Errorf("the gateway has replicas %d and an HPA: they would fight", *d.Spec.Replicas)
	case !r.gatewayHPA && (d.Spec.Replicas == nil || *d.Spec.Replicas < 2):
		t.Errorf("the gateway runs %v replicas, want 2 or more", d.Spec.Replicas)
	}
	if s := d.Spec.Strategy.RollingUpdate; s == nil || s.MaxUnavailable == nil || s.MaxUnavailable.IntValue() != 0 {
		t.Errorf("the gateway's rollout may take replicas down before new ones are ready: %+v", d.Spec.Strategy)
	}
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]
	if !strings.Contains(c.Image, "/hive-gateway") || c.ReadinessProbe == nil || c.LivenessProbe == nil {
		t.Errorf("gateway container: image %s, probes %v %v", c.Image, c.ReadinessProbe, c.LivenessProbe)
	}
	if sc := c.SecurityContext; sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot {
		t.Errorf("the gateway does not meet the restricted Pod Security Standard: %+v %+v", pod.SecurityContext, c.SecurityContext)
	}
	if c.Resources.Limits.Memory().IsZero() {
		t.Error("the gateway has no memory limit")
	}
	if want := "--namespaces=" + strings.Join(r.watchNamespaces, ","); len(r.watchNamespaces) > 0 && !slices.Contains(c.Args, want) {
		t.Errorf("gateway args %v lack %s", c.Args, want)
	}
	if pod.ServiceAccountName == manager.Spec.Template.Spec.ServiceAccountName {
		t.Error("the gateway runs as the manager's service account")
	}

	svc := oneGateway[corev1.Service](t, objs, "Service")
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("the gateway's Service selects %v, not its pods", svc.Spec.Selector)
	}
	ports := map[string]corev1.ServicePort{}
	for _, p := range svc.Spec.Ports {
		ports[p.Name] = p
	}
	if _, ok := ports["http"]; !ok {
		t.Errorf("the gateway's Service has no port http: %v", svc.Spec.Ports)
	}
	// The manager polls the port named metrics (its --gateway-load-port default).
	if _, ok := ports["metrics"]; !ok {
		t.Errorf("the gateway's Service has no port metrics: %v", svc.Spec.Ports)
	}
	if want := "--gateway-service=" + r.namespace + "/" + svc.Name; !slices.Contains(manager.Spec.Template.Spec.Containers[0].Args, want) {
		t.Errorf("the manager's args lack %s", want)
	}

	pdb := oneGateway[policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget")
	if !labels.SelectorFromSet(pdb.Spec.Selector.MatchLabels).Matches(labels.Set(d.Spec.Template.Labels)) || pdb.Spec.MaxUnavailable == nil {
		t.Errorf("the gateway's PodDisruptionBudget %+v", pdb.Spec)
	}
	hpas := gatewayObjects(objs, "HorizontalPodAutoscaler")
	if r.gatewayHPA != (len(hpas) == 1) {
		t.Fatalf("%d gateway HPAs, want one only when gateway.autoscaling is on", len(hpas))
	}
	if r.gatewayHPA {
		hpa := decode[autoscalingv2.HorizontalPodAutoscaler](t, hpas[0])
		if hpa.Spec.ScaleTargetRef.Name != d.Name || hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 {
			t.Errorf("gateway HPA %+v", hpa.Spec)
		}
	}

	sms := gatewayObjects(objs, "ServiceMonitor")
	if r.monitoring != (len(sms) == 1) {
		t.Errorf("%d gateway ServiceMonitors, want one only with serviceMonitor.enabled", len(sms))
	}
	if len(sms) == 1 {
		sm := decode[monitoringv1.ServiceMonitor](t, sms[0])
		if !labels.SelectorFromSet(sm.Spec.Selector.MatchLabels).Matches(labels.Set(svc.Labels)) || len(sm.Spec.Endpoints) != 1 ||
			sm.Spec.Endpoints[0].Port != "metrics" || !sm.Spec.Endpoints[0].HonorLabels {
			t.Errorf("the gateway's ServiceMonitor %+v does not scrape its Service's port metrics honouring labels", sm.Spec)
		}
	}

	// Read hives and pods, nothing else, as the gateway's own account.
	var rules []rbacv1.PolicyRule
	for _, o := range gatewayObjects(objs, "ClusterRole") {
		rules = append(rules, decode[rbacv1.ClusterRole](t, o).Rules...)
	}
	namespaces := map[string]bool{}
	for _, o := range gatewayObjects(objs, "Role") {
		role := decode[rbacv1.Role](t, o)
		if strings.HasSuffix(role.Name, "-endpoints") {
			continue
		}
		namespaces[role.Namespace] = true
		rules = append(rules, role.Rules...)
	}
	for _, rule := range rules {
		for _, v := range rule.Verbs {
			if v != "get" && v != "list" && v != "watch" {
				t.Errorf("the gateway may %s %v: it writes nothing", v, rule.Resources)
			}
		}
	}
	for _, want := range []string{"hives", "pods"} {
		if !slices.ContainsFunc(rules, func(rule rbacv1.PolicyRule) bool { return slices.Contains(rule.Resources, want) }) {
			t.Errorf("the gateway may not read %s", want)
		}
	}
	if len(r.watchNamespaces) > 0 {
		for _, ns := range r.watchNamespaces {
			if !namespaces[ns] {
				t.Errorf("the gateway has no Role in the watched namespace %s", ns)
			}
		}
		// The manager reads the gateways' EndpointSlices in the release namespace, which its
		// Roles of the watched namespaces do not cover.
		found := false
		for _, o := range gatewayObjects(objs, "RoleBinding") {
			b := decode[rbacv1.RoleBinding](t, o)
			if b.Namespace == r.namespace && b.RoleRef.Name == svc.Name+"-endpoints" &&
				slices.ContainsFunc(b.Subjects, func(s rbacv1.Subject) bool { return s.Name == r.serviceAccount }) {
				found = true
			}
		}
		if !found {
			t.Error("the manager may not read the gateways' EndpointSlices in the release namespace")
		}
	}
}

// TestTheGatewayCanBeLeftOut renders the chart without the gateway: nothing of it, and the
// manager polls none.
func TestTheGatewayCanBeLeftOut(t *testing.T) {
	objs := render(t, release{name: "hive-operator", namespace: "hive-system", args: []string{"--set", "gateway.enabled=false"}})
	for _, o := range objs {
		if isGateway(o) {
			t.Errorf("%s %s rendered with gateway.enabled=false", o.GetKind(), o.GetName())
		}
	}
	for _, a := range one[appsv1.Deployment](t, objs, "Deployment").Spec.Template.Spec.Containers[0].Args {
		if strings.HasPrefix(a, "--gateway-service") {
			t.Errorf("the manager polls gateways that do not exist: %s", a)
		}
	}
}
