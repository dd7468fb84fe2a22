// Package chart_test checks the Helm chart (charts/hive-operator) and the kustomize install
// (config/default): that they lint and render, that the operator they install is the one
// docs/operations.md describes (leader election, restricted pods, least privilege), that
// wrong values fail with a message, and that every object they install is accepted by a real
// API server.
package chart_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-containerregistry/pkg/registry"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) {
	code := testenv.Run(m, &env)
	if helmHomeDir != "" {
		_ = os.RemoveAll(helmHomeDir)
	}
	os.Exit(code)
}

// kubeVersion is the version helm renders for. A helm built by `go tool` (without the
// release build's linker flags) assumes Kubernetes v1.20, below the chart's kubeVersion.
var kubeVersion = "v" + testenv.K8sVersion

const chartPath = "charts/hive-operator"

// A release: how helm is asked to render the chart, and what the render must show.
type release struct {
	name, namespace string
	args            []string // values files and --set flags

	replicas       int64
	serviceAccount string
	image          string
	managerArgs    []string          // manager arguments the Deployment must have
	gatewayHPA     bool              // the gateway's replicas are an HPA's
	monitoring     bool              // ServiceMonitor, PrometheusRule and dashboard rendered
	thresholds     map[string]string // alert -> how its expression ends (comparison and threshold)
	// watchNamespaces: the manager's Roles and the admission policy's namespaces; empty for
	// a ClusterRole and a policy of every namespace.
	watchNamespaces []string
	exemptUsers     []string // admissionPolicy.exemptUsers
	// userRolesApart: the user roles are not aggregated into view, edit and admin;
	// metricsReaders: the service accounts bound to the metrics reader.
	userRolesApart bool
	metricsReaders []rbacv1.Subject

	// metricsCertSecret: the Secret the metrics certificate is mounted from (empty for
	// the manager's self-signed one); certManager: cert-manager issues it.
	metricsCertSecret string
	certManager       bool
	// pdbMaxUnavailable: the PodDisruptionBudget's maxUnavailable ("" for none).
	pdbMaxUnavailable string
	// commonLabels and commonAnnotations every object must carry.
	commonLabels, commonAnnotations map[string]string
	// runbookBase: where the alerts' runbook_url point; extraRules: the names of the
	// extra rules (alerts or records) the group must hold as well.
	runbookBase string
	extraRules  []string
}

// defaultRunbooks is where the alerts' runbooks are by default: docs/runbooks.md of the
// chart's appVersion.
const defaultRunbooks = "https://github.com/aihub-dev/hive-operator/blob/v0.1.0/docs/runbooks.md"

var (
	defaults = release{
		name: "hive-operator", namespace: "hive-system",
		replicas: 2, serviceAccount: "hive-operator", image: "ghcr.io/aihub-dev/hive-operator:v0.1.0",
		managerArgs: []string{
			"--leader-elect=true", "--leader-election-namespace=hive-system",
			"--metrics-bind-address=:8443", "--metrics-secure=true", "--health-probe-bind-address=:8081",
			"--zap-log-level=info", "--zap-encoder=json",
			"--kube-api-qps=300", "--kube-api-burst=600",
		},
		pdbMaxUnavailable: "1",
		runbookBase:       defaultRunbooks,
	}
	// The monitoring objects with their default values, for the default thresholds.
	monitoring = release{
		name: "hive-operator", namespace: "hive-system",
		args: []string{"--set", "serviceMonitor.enabled=true,prometheusRule.enabled=true,dashboard.enabled=true," +
			"metrics.tls.secretName=metrics-cert,podDisruptionBudget.enabled=false"},
		replicas: 2, serviceAccount: "hive-operator", image: defaults.image, managerArgs: defaults.managerArgs,
		monitoring: true, metricsCertSecret: "metrics-cert", runbookBase: defaultRunbooks,
		thresholds: map[string]string{
			"HiveTaskQueueWaitHigh":       "> 0.2",
			"HiveTaskFailureRatioHigh":    "> 0.01",
			"HiveOperatorReconcileErrors": "> 0",
			"HiveTaskQueueGrowing":        "> 0",
			"HiveOperatorMemoryHigh":      "> 0.9",
			"HiveOperatorNoLeader":        "< 1",
			"HiveRequestLatencyHigh":      "> 0.2",
			"HiveRequestErrorRatioHigh":   "> 0.01",
			"HiveServingSlotsSaturated":   "> 0.8",
		},
	}
	allOptions = release{
		name: "rel", namespace: "ops",
		args:     []string{"-f", "test/chart/testdata/all-options.yaml"},
		replicas: 3, serviceAccount: "swarm-manager",
		image: "registry.example.com/mirror/hive-operator@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		managerArgs: []string{
			"--leader-elect=true", "--leader-election-namespace=ops",
			"--namespaces=team-a,team-b", "--kube-api-qps=150.5", "--kube-api-burst=300",
			"--hive-concurrency=4", "--dispatch-concurrency=8", "--bind-concurrency=32", "--task-concurrency=16",
			"--agent-lost-grace=30s", "--leader-elect-lease-duration=30s",
			"--metrics-bind-address=:9443", "--health-probe-bind-address=:9081",
			"--zap-log-level=2", "--zap-encoder=console", "--enable-http2=false",
		},
		monitoring: true,
		thresholds: map[string]string{
			"HiveTaskQueueWaitHigh":       "> 0.5",
			"HiveTaskFailureRatioHigh":    "> 0.05",
			"HiveOperatorReconcileErrors": "> 0.1",
			"HiveTaskQueueGrowing":        "> 0.5",
			"HiveOperatorMemoryHigh":      "> 0.8",
			"HiveOperatorNoLeader":        "< 1",
			"HiveRequestLatencyHigh":      "> 0.1",
			"HiveRequestErrorRatioHigh":   "> 0.02",
			"HiveServingSlotsSaturated":   "> 0.9",
		},
		watchNamespaces: []string{"team-a", "team-b"},
		exemptUsers:     []string{"system:serviceaccount:team-a:results-exporter"},
		userRolesApart:  true,
		metricsReaders:  []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: "prometheus-k8s", Namespace: "monitoring"}},

		metricsCertSecret: "swarm-operator-metrics-cert", certManager: true,
		pdbMaxUnavailable: "2",
		commonLabels:      map[string]string{"example.com/owner": "platform"},
		commonAnnotations: map[string]string{"example.com/contact": "platform@example.com"},
		runbookBase:       "https://wiki.example.com/runbooks/hive",
		extraRules:        []string{"HiveAgentsStarting", "hive:task_outcomes:rate5m"},
		gatewayHPA:        true,
	}
	releases = map[string]release{"default": defaults, "monitoring": monitoring, "all-options": allOptions}
)

func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// helm runs the pinned helm in the module root and returns its standard output, or an error
// carrying its standard error.
func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	root := moduleRoot(t)
	// The first run builds helm (minutes on a cold build cache).
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", append([]string{
		"tool", "-modfile=" + filepath.Join(root, "hack", "tools", "helm", "go.mod"), "helm",
	}, args...)...)
	cmd.Dir = root
	// Keep helm away from the user's repositories, plugins and cache.
	home := helmHome(t)
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"))
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("helm %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

// helmHomeDir holds helm's cache, configuration and data for the whole test binary, which
// TestMain removes.
var (
	helmHomeMu  sync.Mutex
	helmHomeDir string
)

func helmHome(t *testing.T) string {
	t.Helper()
	helmHomeMu.Lock()
	defer helmHomeMu.Unlock()
	if helmHomeDir == "" {
		dir, err := os.MkdirTemp("", "helm-home-")
		if err != nil {
			t.Fatal(err)
		}
		helmHomeDir = dir
	}
	return helmHomeDir
}

// render renders a release once per test binary; callers get their own copies.
func render(t *testing.T, r release) []*unstructured.Unstructured {
	t.Helper()
	rendersMu.Lock()
	defer rendersMu.Unlock()
	key := r.name + "/" + r.namespace + "/" + strings.Join(r.args, " ")
	if _, ok := renders[key]; !ok {
		out, err := helm(t, append([]string{"template", r.name, chartPath, "--namespace", r.namespace, "--kube-version", kubeVersion}, r.args...)...)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := parse(out)
		if err != nil {
			t.Fatalf("parsing the render: %v", err)
		}
		renders[key] = objs
	}
	return deepCopy(renders[key])
}

var (
	rendersMu sync.Mutex
	renders   = map[string][]*unstructured.Unstructured{}
)

func deepCopy(objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	out := make([]*unstructured.Unstructured, len(objs))
	for i, o := range objs {
		out[i] = o.DeepCopy()
	}
	return out
}

// parse splits a multi-document YAML stream into objects, skipping empty documents.
func parse(s string) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(s), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("decoding document %d: %w", len(objs)+1, err)
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetAPIVersion() == "" || u.GetKind() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("document %d has no apiVersion, kind or name: %v", len(objs)+1, m)
		}
		objs = append(objs, u)
	}
}

// kustomize renders config/default with the kubectl on the machine, or skips.
func kustomize(t *testing.T) []*unstructured.Unstructured {
	t.Helper()
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		for _, p := range []string{"/usr/local/bin/kubectl", "/usr/bin/kubectl"} {
			if _, statErr := os.Stat(p); statErr == nil {
				kubectl, err = p, nil
				break
			}
		}
	}
	if err != nil {
		t.Skip("kubectl is not installed: cannot render config/default with kustomize")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, kubectl, "kustomize", filepath.Join(moduleRoot(t), "config", "default")).Output()
	if err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			t.Fatalf("kubectl kustomize config/default: %v\n%s", err, exitErr.Stderr)
		}
		t.Fatalf("kubectl kustomize config/default: %v", err)
	}
	objs, err := parse(string(out))
	if err != nil {
		t.Fatalf("parsing the kustomize output: %v", err)
	}
	return objs
}

// find returns the objects of a kind, but the gateway's (gateway_test.go checks those).
func find(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	return findOf(objs, kind, false)
}

// findOf returns the objects of a kind that are the gateway's, or that are not.
func findOf(objs []*unstructured.Unstructured, kind string, gateway bool) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind && isGateway(o) == gateway {
			out = append(out, o)
		}
	}
	return out
}

// one returns the only object of a kind, decoded strictly into a typed object.
func one[T any](t *testing.T, objs []*unstructured.Unstructured, kind string) *T {
	t.Helper()
	return only[T](t, find(objs, kind), kind)
}

func only[T any](t *testing.T, found []*unstructured.Unstructured, what string) *T {
	t.Helper()
	if len(found) != 1 {
		t.Fatalf("want one %s, got %d", what, len(found))
	}
	return decode[T](t, found[0])
}

// decode converts an object into a typed one, failing on fields the type does not have.
func decode[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	var out T
	if err := runtime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, &out, true); err != nil {
		t.Fatalf("%s %s: %v", u.GetKind(), u.GetName(), err)
	}
	return &out
}

func TestLint(t *testing.T) {
	for _, name := range []string{"default", "all-options"} {
		t.Run(name, func(t *testing.T) {
			out, err := helm(t, append([]string{"lint", "--strict", chartPath, "--kube-version", kubeVersion}, releases[name].args...)...)
			if err != nil {
				t.Fatalf("%v\n%s", err, out)
			}
		})
	}
}

// TestValuesDocumented checks the chart README's values table, generated from the comments
// of values.yaml (make chart-docs, checked by make verify), describes every value.
func TestValuesDocumented(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(moduleRoot(t), chartPath, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	rows := 0
	for line := range strings.Lines(string(readme)) {
		cells := strings.Split(strings.TrimSpace(line), " | ")
		if len(cells) != 4 || !strings.HasPrefix(cells[0], "| ") || cells[0] == "| Key" {
			continue
		}
		rows++
		if desc := strings.TrimSuffix(strings.TrimSpace(cells[3]), "|"); strings.TrimSpace(desc) == "" {
			t.Errorf("value %s has no description: give it a \"# --\" comment in values.yaml and run make chart-docs", strings.TrimPrefix(cells[0], "| "))
		}
	}
	if rows < 50 {
		t.Errorf("the README's values table has %d rows; is it generated (make chart-docs)?", rows)
	}
}

func TestRender(t *testing.T) {
	for _, name := range []string{"default", "monitoring", "all-options"} {
		r := releases[name]
		t.Run(name, func(t *testing.T) {
			objs := render(t, r)
			checkDeployment(t, r, objs)
			checkLeastPrivilege(t, objs)
			checkManagerRole(t, r, objs)
			checkAdmissionPolicy(t, r, objs)
			checkNamespaces(t, r, objs)
			checkMonitoring(t, r, objs)
			checkUserRoles(t, r, objs)
			checkOperability(t, r, objs)
			checkGateway(t, r, objs)
		})
	}
}

// checkDeployment checks the manager's Deployment against docs/operations.md: replicas that
// elect a leader, the restricted Pod Security Standard, probes and resources.
func checkDeployment(t *testing.T, r release, objs []*unstructured.Unstructured) {
	t.Helper()
	d := one[appsv1.Deployment](t, objs, "Deployment")
	if d.Spec.Replicas == nil || int64(*d.Spec.Replicas) != r.replicas {
		t.Errorf("replicas = %v, want %d", d.Spec.Replicas, r.replicas)
	}
	pod := d.Spec.Template.Spec
	if pod.ServiceAccountName != r.serviceAccount {
		t.Errorf("serviceAccountName = %q, want %q", pod.ServiceAccountName, r.serviceAccount)
	}
	if sa := find(objs, "ServiceAccount"); len(sa) != 1 || sa[0].GetName() != r.serviceAccount || sa[0].GetNamespace() != r.namespace {
		t.Errorf("want the ServiceAccount %s/%s, got %v", r.namespace, r.serviceAccount, sa)
	}
	if pod.TerminationGracePeriodSeconds == nil || *pod.TerminationGracePeriodSeconds < 30 {
		t.Errorf("terminationGracePeriodSeconds = %v, want at least the manager's 30 s of graceful shutdown", pod.TerminationGracePeriodSeconds)
	}
	if !matches(pod.TopologySpreadConstraints, d.Spec.Selector.MatchLabels) {
		t.Errorf("topologySpreadConstraints %v: want a hostname spread selecting the manager's pods %v",
			pod.TopologySpreadConstraints, d.Spec.Selector.MatchLabels)
	}
	psc := pod.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot ||
		psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod securityContext = %+v, want runAsNonRoot and the RuntimeDefault seccomp profile", psc)
	}
	if len(pod.Containers) != 1 || pod.Containers[0].Name != "manager" {
		t.Fatalf("want one container named manager, got %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	if c.Image != r.image {
		t.Errorf("image = %q, want %q", c.Image, r.image)
	}
	for _, want := range r.managerArgs {
		if !slices.Contains(c.Args, want) {
			t.Errorf("args %q lack %q", c.Args, want)
		}
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 ||
		(sc.Privileged != nil && *sc.Privileged) {
		t.Errorf("container securityContext = %+v, want a read-only root, no privilege escalation, all capabilities dropped", sc)
	}
	probePort := argValue(c.Args, "--health-probe-bind-address")
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"liveness", c.LivenessProbe, "/healthz"}, {"readiness", c.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || ":"+portNumber(c, p.probe.HTTPGet.Port.String()) != probePort {
			t.Errorf("%s probe gets %s on port %s, want %s on %s", p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path, probePort)
		}
	}
	if ":"+portNumber(c, "https") != argValue(c.Args, "--metrics-bind-address") {
		t.Errorf("the https port %s is not the metrics address %s", portNumber(c, "https"), argValue(c.Args, "--metrics-bind-address"))
	}
	res := c.Resources
	if res.Requests.Cpu().IsZero() || res.Requests.Memory().IsZero() || res.Limits.Memory().IsZero() {
		t.Errorf("resources = %+v, want cpu and memory requests and a memory limit", res)
	}
}

// matches reports whether the constraints spread the pods with labels across hostnames.
func matches(constraints []corev1.TopologySpreadConstraint, labels map[string]string) bool {
	for _, c := range constraints {
		if c.TopologyKey != corev1.LabelHostname || c.LabelSelector == nil {
			continue
		}
		sel, err := metav1.LabelSelectorAsMap(c.LabelSelector)
		if err != nil {
			return false
		}
		ok := true
		for k, v := range sel {
			ok = ok && labels[k] == v
		}
		return ok
	}
	return false
}

// argValue returns the value of a --flag=value argument.
func argValue(args []string, flag string) string {
	for _, a := range args {
		if v, ok := strings.CutPrefix(a, flag+"="); ok {
			return v
		}
	}
	return ""
}

// portNumber resolves a container port name to its number.
func portNumber(c corev1.Container, nameOrNumber string) string {
	for _, p := range c.Ports {
		if p.Name == nameOrNumber {
			return fmt.Sprint(p.ContainerPort)
		}
	}
	return nameOrNumber
}

// checkLeastPrivilege fails on any rule that grants a wildcard or touches secrets.
func checkLeastPrivilege(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	for _, o := range objs {
		var rules []rbacv1.PolicyRule
		switch o.GetKind() {
		case "Role":
			rules = decode[rbacv1.Role](t, o).Rules
		case "ClusterRole":
			rules = decode[rbacv1.ClusterRole](t, o).Rules
		default:
			continue
		}
		for _, rule := range rules {
			all := slices.Concat(rule.APIGroups, rule.Resources, rule.Verbs, rule.NonResourceURLs, rule.ResourceNames)
			if slices.ContainsFunc(all, func(s string) bool { return strings.Contains(s, "*") }) {
				t.Errorf("%s %s grants a wildcard: %+v", o.GetKind(), o.GetName(), rule)
			}
			if slices.ContainsFunc(rule.Resources, func(s string) bool { return s == "secrets" || strings.HasPrefix(s, "secrets/") }) {
				t.Errorf("%s %s touches secrets: %+v", o.GetKind(), o.GetName(), rule)
			}
		}
	}
}

// checkUserRoles checks the roles of the people who use hives and tasks: a viewer that only
// reads and an editor that also submits and changes them, neither writing status (the
// operator's and the agents' alone), aggregated into the cluster's view, edit and admin
// unless asked not to; and the scrapers bound to the metrics reader.
func checkUserRoles(t *testing.T, r release, objs []*unstructured.Unstructured) {
	t.Helper()
	roles := map[string]*rbacv1.ClusterRole{}
	for _, o := range find(objs, "ClusterRole") {
		role := decode[rbacv1.ClusterRole](t, o)
		for _, suffix := range []string{"-viewer", "-editor"} {
			if strings.HasSuffix(role.Name, suffix) {
				roles[suffix] = role
			}
		}
	}
	allows := func(role *rbacv1.ClusterRole, resource, verb string) bool {
		return slices.ContainsFunc(role.Rules, func(rule rbacv1.PolicyRule) bool {
			return slices.Contains(rule.APIGroups, swarmv1alpha1.GroupVersion.Group) && slices.Contains(rule.Resources, resource) && slices.Contains(rule.Verbs, verb)
		})
	}
	for suffix, want := range map[string]struct {
		aggregateTo []string
		create      bool
	}{"-viewer": {[]string{"view", "edit", "admin"}, false}, "-editor": {[]string{"edit", "admin"}, true}} {
		role := roles[suffix]
		if role == nil {
			t.Errorf("no ClusterRole *%s", suffix)
			continue
		}
		for _, to := range []string{"view", "edit", "admin"} {
			label := "rbac.authorization.k8s.io/aggregate-to-" + to
			if got := role.Labels[label] == "true"; got != (slices.Contains(want.aggregateTo, to) && !r.userRolesApart) {
				t.Errorf("%s: label %s is %q", role.Name, label, role.Labels[label])
			}
		}
		for _, res := range []string{"hives", "tasks"} {
			if !allows(role, res, "get") || !allows(role, res, "watch") {
				t.Errorf("%s cannot read %s", role.Name, res)
			}
			if allows(role, res, "create") != want.create || allows(role, res, "delete") != want.create {
				t.Errorf("%s: create and delete %s allowed = %v, want %v", role.Name, res, allows(role, res, "create"), want.create)
			}
			for _, verb := range []string{"update", "patch"} {
				if allows(role, res+"/status", verb) {
					t.Errorf("%s may %s %s/status", role.Name, verb, res)
				}
			}
		}
	}
	var readers []rbacv1.Subject
	for _, o := range find(objs, "ClusterRoleBinding") {
		if b := decode[rbacv1.ClusterRoleBinding](t, o); strings.HasSuffix(b.RoleRef.Name, "-metrics-reader") {
			readers = append(readers, b.Subjects...)
		}
	}
	if diff := cmp.Diff(r.metricsReaders, readers); diff != "" {
		t.Errorf("metrics readers (-want +got):\n%s", diff)
	}
}

// checkManagerRole checks that the manager's permissions are exactly what controller-gen
// generated into config/rbac/role.yaml from the controllers' markers (a permission added to
// a controller must reach the chart), and where they apply: a ClusterRole when the operator
// watches every namespace, else a Role and RoleBinding in each watched namespace and nothing
// of the kind cluster-wide.
func checkManagerRole(t *testing.T, r release, objs []*unstructured.Unstructured) {
	t.Helper()
	generated := normalize(generatedRole(t).Rules)
	managed := map[string]bool{}
	for _, rule := range generated {
		for _, res := range rule.Resources {
			managed[res] = true
		}
	}
	// The manager's own roles are named like its Deployment.
	name := one[appsv1.Deployment](t, objs, "Deployment").Name
	bindsManager := func(subjects []rbacv1.Subject) bool {
		return slices.ContainsFunc(subjects, func(s rbacv1.Subject) bool {
			return s.Kind == rbacv1.ServiceAccountKind && s.Name == r.serviceAccount && s.Namespace == r.namespace
		})
	}

	clusterRoles := map[string]*rbacv1.ClusterRole{}
	for _, o := range find(objs, "ClusterRole") {
		clusterRoles[o.GetName()] = decode[rbacv1.ClusterRole](t, o)
	}
	var managerRole *rbacv1.ClusterRole
	for _, b := range find(objs, "ClusterRoleBinding") {
		binding := decode[rbacv1.ClusterRoleBinding](t, b)
		if !bindsManager(binding.Subjects) {
			continue
		}
		role := clusterRoles[binding.RoleRef.Name]
		if role == nil {
			t.Errorf("the ClusterRoleBinding %s binds the manager to the ClusterRole %s, which is not installed", binding.Name, binding.RoleRef.Name)
			continue
		}
		if binding.RoleRef.Name == name {
			managerRole = role
			continue
		}
		// Any other cluster-wide role of the manager (the metrics endpoint's) must grant
		// none of the resources it manages.
		for _, rule := range role.Rules {
			for _, res := range rule.Resources {
				if managed[res] {
					t.Errorf("the ClusterRole %s grants the manager %s cluster-wide: %+v", role.Name, res, rule)
				}
			}
		}
	}

	roles, bindings := map[string]*rbacv1.Role{}, map[string]*rbacv1.RoleBinding{}
	for _, o := range find(objs, "Role") {
		if o.GetName() == name {
			roles[o.GetNamespace()] = decode[rbacv1.Role](t, o)
		}
	}
	for _, o := range find(objs, "RoleBinding") {
		if o.GetName() == name {
			bindings[o.GetNamespace()] = decode[rbacv1.RoleBinding](t, o)
		}
	}

	if len(r.watchNamespaces) == 0 {
		if managerRole == nil {
			t.Fatalf("no ClusterRole bound to the manager under the Deployment's name %s", name)
		}
		if diff := cmp.Diff(generated, normalize(managerRole.Rules)); diff != "" {
			t.Errorf("the chart's ClusterRole %s differs from config/rbac/role.yaml (-generated +chart); copy the generated rules into the chart:\n%s",
				managerRole.Name, diff)
		}
		if len(roles)+len(bindings) > 0 {
			t.Errorf("the operator watches every namespace, yet the manager has Roles in %v and RoleBindings in %v", keys(roles), keys(bindings))
		}
		return
	}

	if managerRole != nil || clusterRoles[name] != nil {
		t.Errorf("the operator watches only %v, yet the ClusterRole %s grants the manager its permissions cluster-wide", r.watchNamespaces, name)
	}
	for _, b := range find(objs, "ClusterRoleBinding") {
		if b.GetName() == name {
			t.Errorf("the operator watches only %v, yet the ClusterRoleBinding %s is installed", r.watchNamespaces, name)
		}
	}
	for _, ns := range r.watchNamespaces {
		role, binding := roles[ns], bindings[ns]
		if role == nil || binding == nil {
			t.Errorf("the watched namespace %s lacks the manager's Role or RoleBinding %s (Role %v, RoleBinding %v)", ns, name, role != nil, binding != nil)
			continue
		}
		if diff := cmp.Diff(generated, normalize(role.Rules)); diff != "" {
			t.Errorf("the manager's Role %s/%s differs from config/rbac/role.yaml (-generated +chart); copy the generated rules into the chart:\n%s",
				ns, name, diff)
		}
		if binding.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}) || !bindsManager(binding.Subjects) {
			t.Errorf("the RoleBinding %s/%s binds %+v to %+v, want the manager's service account %s/%s to the Role %s",
				ns, name, binding.Subjects, binding.RoleRef, r.namespace, r.serviceAccount, name)
		}
	}
	if len(roles) != len(r.watchNamespaces) || len(bindings) != len(r.watchNamespaces) {
		t.Errorf("the manager has Roles in %v and RoleBindings in %v, want exactly the watched namespaces %v",
			keys(roles), keys(bindings), r.watchNamespaces)
	}
}

func generatedRole(t *testing.T) *rbacv1.ClusterRole {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(moduleRoot(t), "config", "rbac", "role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var role rbacv1.ClusterRole
	if err := yaml.UnmarshalStrict(data, &role); err != nil {
		t.Fatalf("config/rbac/role.yaml: %v", err)
	}
	if len(role.Rules) == 0 {
		t.Fatal("config/rbac/role.yaml has no rules")
	}
	return &role
}

// normalize orders rules and their lists, which carry no meaning.
func normalize(rules []rbacv1.PolicyRule) []rbacv1.PolicyRule {
	out := make([]rbacv1.PolicyRule, len(rules))
	for i, r := range rules {
		r = *r.DeepCopy()
		for _, l := range [][]string{r.APIGroups, r.Resources, r.Verbs, r.ResourceNames, r.NonResourceURLs} {
			sort.Strings(l)
		}
		out[i] = r
	}
	sort.Slice(out, func(i, j int) bool { return out[i].String() < out[j].String() })
	return out
}

// checkAdmissionPolicy checks that the policy holds only the service accounts of a task's
// own namespace, exempts the release's operator and exemptUsers, matches only the watched
// namespaces, and is config/admission/policy.yaml's policy in every other respect.
func checkAdmissionPolicy(t *testing.T, r release, objs []*unstructured.Unstructured) {
	t.Helper()
	user := "system:serviceaccount:" + r.namespace + ":" + r.serviceAccount
	policy := one[admissionregistrationv1.ValidatingAdmissionPolicy](t, objs, "ValidatingAdmissionPolicy")
	binding := one[admissionregistrationv1.ValidatingAdmissionPolicyBinding](t, objs, "ValidatingAdmissionPolicyBinding")
	if binding.Spec.PolicyName != policy.Name {
		t.Errorf("the binding names the policy %q, want %q", binding.Spec.PolicyName, policy.Name)
	}
	conditions := map[string]string{}
	for _, c := range policy.Spec.MatchConditions {
		conditions[c.Expression] = c.Name
	}
	for _, want := range []string{
		"'authentication.kubernetes.io/pod-name' in request.userInfo.extra",
		"request.userInfo.username.startsWith('system:serviceaccount:' + request.namespace + ':')",
		"request.userInfo.username != '" + user + "'",
	} {
		if _, ok := conditions[want]; !ok {
			t.Errorf("no matchCondition %q in %+v", want, policy.Spec.MatchConditions)
		}
	}

	data, err := os.ReadFile(filepath.Join(moduleRoot(t), "config", "admission", "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	source, err := parse(strings.ReplaceAll(string(data), "system:serviceaccount:hive-system:hive-operator", user))
	if err != nil {
		t.Fatalf("config/admission/policy.yaml: %v", err)
	}
	sourcePolicy := one[admissionregistrationv1.ValidatingAdmissionPolicy](t, source, "ValidatingAdmissionPolicy")
	sourceBinding := one[admissionregistrationv1.ValidatingAdmissionPolicyBinding](t, source, "ValidatingAdmissionPolicyBinding")
	sourceBinding.Spec.PolicyName = policy.Name
	// What the values add to config/admission/policy.yaml's policy.
	if len(r.watchNamespaces) > 0 {
		sourcePolicy.Spec.MatchConstraints.NamespaceSelector = &metav1.LabelSelector{
			MatchExpressions: []metav1.LabelSelectorRequirement{{
				Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpIn, Values: r.watchNamespaces,
			}},
		}
	}
	if len(r.exemptUsers) > 0 {
		users, err := json.Marshal(r.exemptUsers)
		if err != nil {
			t.Fatal(err)
		}
		sourcePolicy.Spec.MatchConditions = append(sourcePolicy.Spec.MatchConditions, admissionregistrationv1.MatchCondition{
			Name: "not-exempt", Expression: "!(request.userInfo.username in " + string(users) + ")",
		})
	}
	if diff := cmp.Diff(sourcePolicy.Spec, policy.Spec); diff != "" {
		t.Errorf("the chart's admission policy differs from config/admission/policy.yaml with the release's namespaces and exempt users (-want +chart):\n%s", diff)
	}
	if diff := cmp.Diff(sourceBinding.Spec, binding.Spec); diff != "" {
		t.Errorf("the chart's policy binding differs from config/admission/policy.yaml (-config +chart):\n%s", diff)
	}
}

// clusterScoped are the kinds the chart and config/default install that have no namespace.
var clusterScoped = map[string]bool{
	"Namespace": true, "CustomResourceDefinition": true, "ClusterRole": true, "ClusterRoleBinding": true,
	"ValidatingAdmissionPolicy": true, "ValidatingAdmissionPolicyBinding": true,
}

// checkNamespaces checks that namespaced objects live in the release namespace (the
// dashboard may go where Grafana looks for it, the manager's Roles in the namespaces it
// watches) and cluster-scoped ones name none.
func checkNamespaces(t *testing.T, r release, objs []*unstructured.Unstructured) {
	t.Helper()
	manager := one[appsv1.Deployment](t, objs, "Deployment").Name
	for _, o := range objs {
		ns := o.GetNamespace()
		switch {
		case (o.GetKind() == "Role" || o.GetKind() == "RoleBinding") && (o.GetName() == manager || o.GetName() == manager+"-gateway") && slices.Contains(r.watchNamespaces, ns):
			// The manager's and the gateway's permissions in a namespace it watches.
		case clusterScoped[o.GetKind()]:
			if ns != "" {
				t.Errorf("the cluster-scoped %s %s names the namespace %q", o.GetKind(), o.GetName(), ns)
			}
		case o.GetLabels()["grafana_dashboard"] == "1":
			if ns == "" {
				t.Errorf("%s %s has no namespace", o.GetKind(), o.GetName())
			}
		case ns != r.namespace:
			t.Errorf("%s %s is in namespace %q, want the release namespace %q", o.GetKind(), o.GetName(), ns, r.namespace)
		}
	}
}

// checkMonitoring checks the optional ServiceMonitor, alerts and dashboard.
func checkMonitoring(t *testing.T, r release, objs []*unstructured.Unstructured) {
	t.Helper()
	sms, rules, dashboards := find(objs, "ServiceMonitor"), find(objs, "PrometheusRule"), find(objs, "ConfigMap")
	if !r.monitoring {
		if len(sms)+len(rules)+len(dashboards) > 0 {
			t.Errorf("monitoring objects rendered while off: %d ServiceMonitors, %d PrometheusRules, %d ConfigMaps",
				len(sms), len(rules), len(dashboards))
		}
		return
	}

	sm := checkServiceMonitor(t, objs)
	if sm.Spec.Endpoints[0].TLSConfig == nil || sm.Spec.Endpoints[0].TLSConfig.InsecureSkipVerify == nil {
		t.Error("the ServiceMonitor's endpoint sets no tlsConfig.insecureSkipVerify")
	}

	rule := checkPrometheusRule(t, objs)
	alerts := map[string]monitoringv1.Rule{}
	for _, g := range rule.Spec.Groups {
		for _, rl := range g.Rules {
			name := rl.Alert + rl.Record
			if slices.Contains(r.extraRules, name) {
				continue
			}
			alerts[rl.Alert] = rl
			if want := r.runbookBase + "#" + strings.ToLower(rl.Alert); rl.Annotations["runbook_url"] != want {
				t.Errorf("alert %s: runbook_url %q, want %q", rl.Alert, rl.Annotations["runbook_url"], want)
			}
		}
	}
	for _, name := range r.extraRules {
		if !slices.ContainsFunc(rule.Spec.Groups[0].Rules, func(rl monitoringv1.Rule) bool { return rl.Alert+rl.Record == name }) {
			t.Errorf("the extra rule %s is not in the group", name)
		}
	}
	if r.runbookBase == defaultRunbooks {
		checkRunbooks(t, keys(alerts))
	}
	for alert, threshold := range r.thresholds {
		rl, ok := alerts[alert]
		if !ok {
			t.Errorf("no alert %s", alert)
			continue
		}
		if expr := strings.TrimSpace(rl.Expr.String()); !strings.HasSuffix(expr, threshold) {
			t.Errorf("alert %s: expr %q does not end with the threshold %q", alert, expr, threshold)
		}
	}
	if len(alerts) != len(r.thresholds) {
		t.Errorf("alerts %v, want exactly %v", keys(alerts), keys(r.thresholds))
	}
	for metric, alert := range map[string]string{
		"hive_task_queue_wait_seconds_bucket":                       "HiveTaskQueueWaitHigh",
		`hive_task_outcomes_total{phase="Failed"}`:                  "HiveTaskFailureRatioHigh",
		"controller_runtime_reconcile_errors_total":                 "HiveOperatorReconcileErrors",
		`hive_tasks{phase="Pending"}`:                               "HiveTaskQueueGrowing",
		"container_memory_working_set_bytes":                        "HiveOperatorMemoryHigh",
		"kube_pod_container_resource_limits":                        "HiveOperatorMemoryHigh",
		`name="hive-operator.swarm.aihub.dev"`:                      "HiveOperatorNoLeader",
		"leader_election_master_status":                             "HiveOperatorNoLeader",
		`container="manager"`:                                       "HiveOperatorMemoryHigh",
		`namespace="` + r.namespace + `"`:                           "HiveOperatorMemoryHigh",
		`deriv(max by (namespace, hive) (hive_tasks{`:               "HiveTaskQueueGrowing",
		"hive_gateway_request_duration_seconds_bucket":              "HiveRequestLatencyHigh",
		`hive_gateway_requests_total{hive!="", code="5xx"}`:         "HiveRequestErrorRatioHigh",
		`hive_gateway_requests_total{hive!="", reason="failed"}`:    "HiveRequestErrorRatioHigh",
		"sum by (namespace, hive) (hive_gateway_requests_in_flight": "HiveServingSlotsSaturated",
		"max by (namespace, hive) (hive_gateway_serving_slots":      "HiveServingSlotsSaturated",
	} {
		expr := alerts[alert].Expr
		if !strings.Contains(expr.String(), metric) {
			t.Errorf("alert %s: expr %q lacks %s", alert, expr.String(), metric)
		}
	}
	if alerts["HiveTaskQueueGrowing"].For == nil {
		t.Error("alert HiveTaskQueueGrowing has no for: a queue grows for a moment at every burst")
	}

	if len(dashboards) != 1 {
		t.Fatalf("want one dashboard ConfigMap, got %d", len(dashboards))
	}
	checkDashboard(t, decode[corev1.ConfigMap](t, dashboards[0]))
}

// metricsCertDir is where the chart mounts the metrics certificate's Secret.
const metricsCertDir = "/etc/hive-operator/metrics-tls"

// checkOperability checks what an operator of the chart sets around the manager: labels and
// annotations on every object, the PodDisruptionBudget, the metrics certificate (mounted,
// issued by cert-manager, verified by the ServiceMonitor), env and extra volumes.
func checkOperability(t *testing.T, r release, objs []*unstructured.Unstructured) {
	t.Helper()
	d := one[appsv1.Deployment](t, objs, "Deployment")
	for _, o := range objs {
		for k, v := range r.commonLabels {
			if o.GetLabels()[k] != v {
				t.Errorf("%s %s: label %s=%q, want the common %q", o.GetKind(), o.GetName(), k, o.GetLabels()[k], v)
			}
		}
		for k, v := range r.commonAnnotations {
			if o.GetAnnotations()[k] != v {
				t.Errorf("%s %s: annotation %s=%q, want the common %q", o.GetKind(), o.GetName(), k, o.GetAnnotations()[k], v)
			}
		}
	}
	for k, v := range r.commonLabels {
		if d.Spec.Template.Labels[k] != v || d.Spec.Selector.MatchLabels[k] != "" {
			t.Errorf("common label %s: on the pods %q (want %q), in the selector %q (want none: it is immutable)",
				k, d.Spec.Template.Labels[k], v, d.Spec.Selector.MatchLabels[k])
		}
	}

	pdbs := find(objs, "PodDisruptionBudget")
	switch {
	case r.pdbMaxUnavailable == "" && len(pdbs) > 0:
		t.Errorf("a PodDisruptionBudget is rendered while disabled")
	case r.pdbMaxUnavailable != "":
		pdb := one[policyv1.PodDisruptionBudget](t, objs, "PodDisruptionBudget")
		if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.String() != r.pdbMaxUnavailable || pdb.Spec.MinAvailable != nil {
			t.Errorf("PodDisruptionBudget maxUnavailable %v, minAvailable %v; want maxUnavailable %s only",
				pdb.Spec.MaxUnavailable, pdb.Spec.MinAvailable, r.pdbMaxUnavailable)
		}
		if pdb.Spec.Selector == nil || !maps.Equal(pdb.Spec.Selector.MatchLabels, d.Spec.Selector.MatchLabels) {
			t.Errorf("PodDisruptionBudget selects %v, want the manager's pods %v", pdb.Spec.Selector, d.Spec.Selector.MatchLabels)
		}
	}

	c := d.Spec.Template.Spec.Containers[0]
	mounted := slices.ContainsFunc(d.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool {
		return v.Secret != nil && v.Secret.SecretName == r.metricsCertSecret &&
			slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
				return m.Name == v.Name && m.MountPath == metricsCertDir && m.ReadOnly
			})
	})
	switch arg := argValue(c.Args, "--metrics-cert-dir"); {
	case r.metricsCertSecret == "" && arg != "":
		t.Errorf("--metrics-cert-dir=%s without a metrics certificate", arg)
	case r.metricsCertSecret != "" && (arg != metricsCertDir || !mounted):
		t.Errorf("--metrics-cert-dir=%q, Secret %s mounted there read-only: %v; want both", arg, r.metricsCertSecret, mounted)
	}
	svc := one[corev1.Service](t, objs, "Service")
	svcName := svc.Name + "." + r.namespace + ".svc"
	certs := find(objs, "Certificate")
	if !r.certManager {
		if len(certs)+len(find(objs, "Issuer")) > 0 {
			t.Errorf("cert-manager objects rendered while off")
		}
	} else {
		if len(certs) != 1 {
			t.Fatalf("want one Certificate, got %d", len(certs))
		}
		spec, _, _ := unstructured.NestedMap(certs[0].Object, "spec")
		dnsNames, _, _ := unstructured.NestedStringSlice(spec, "dnsNames")
		issuer, _, _ := unstructured.NestedString(spec, "issuerRef", "name")
		if spec["secretName"] != r.metricsCertSecret || !slices.Contains(dnsNames, svcName) || issuer == "" {
			t.Errorf("Certificate spec %v: want secretName %s, the DNS name %s and an issuer", spec, r.metricsCertSecret, svcName)
		}
	}
	if r.monitoring {
		tc := checkServiceMonitor(t, objs).Spec.Endpoints[0].TLSConfig
		verifies := tc != nil && tc.InsecureSkipVerify != nil && !*tc.InsecureSkipVerify
		if r.metricsCertSecret != "" && (!verifies || tc.CA.Secret == nil || tc.CA.Secret.Name != r.metricsCertSecret ||
			tc.CA.Secret.Key != "ca.crt" || tc.ServerName == nil || *tc.ServerName != svcName) {
			t.Errorf("ServiceMonitor tlsConfig %+v: want it to verify the certificate against ca.crt of %s for %s", tc, r.metricsCertSecret, svcName)
		}
	}

	if r.name == allOptions.name {
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "GOMEMLIMIT" }) ||
			!slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.Name == "ca-bundle" }) ||
			!slices.ContainsFunc(d.Spec.Template.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == "ca-bundle" }) {
			t.Errorf("env %v, volumes and mounts %v %v: want GOMEMLIMIT and ca-bundle from the values",
				c.Env, d.Spec.Template.Spec.Volumes, c.VolumeMounts)
		}
		if sc := d.Spec.Template.Spec.SecurityContext; sc.RunAsUser == nil || *sc.RunAsUser != 65532 {
			t.Errorf("pod securityContext %+v: want podSecurityContext from the values (runAsUser 65532)", sc)
		}
		ep := checkServiceMonitor(t, objs).Spec.Endpoints[0]
		if len(ep.RelabelConfigs) != 1 || len(ep.MetricRelabelConfigs) != 1 {
			t.Errorf("ServiceMonitor relabelings %v, metricRelabelings %v: want one each from the values", ep.RelabelConfigs, ep.MetricRelabelConfigs)
		}
	}
}

// checkRunbooks checks that docs/runbooks.md has a section for each alert, where the
// alert's runbook_url points (GitHub's anchor of a heading is its text in lower case).
func checkRunbooks(t *testing.T, alerts []string) {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join(moduleRoot(t), "docs", "runbooks.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range alerts {
		if !slices.Contains(strings.Split(string(doc), "\n"), "## "+a) {
			t.Errorf("docs/runbooks.md has no section \"## %s\", where the alert's runbook_url points", a)
		}
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// checkServiceMonitor decodes the ServiceMonitor strictly into the Prometheus Operator's
// type (the test API server does not serve that kind) and checks how it scrapes.
func checkServiceMonitor(t *testing.T, objs []*unstructured.Unstructured) *monitoringv1.ServiceMonitor {
	t.Helper()
	sm := one[monitoringv1.ServiceMonitor](t, objs, "ServiceMonitor")
	svc := one[corev1.Service](t, objs, "Service")
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("want one ServiceMonitor endpoint, got %d", len(sm.Spec.Endpoints))
	}
	ep := sm.Spec.Endpoints[0]
	if ep.Scheme == nil || *ep.Scheme != "https" || ep.BearerTokenFile == "" || ep.Port != "https" { //nolint:staticcheck // the in-pod token is how the scraper authenticates
		t.Errorf("ServiceMonitor endpoint %+v: want scheme https with a bearer token file on the port https", ep)
	}
	if !ep.HonorLabels {
		t.Error("ServiceMonitor endpoint does not honour labels: the target's namespace would overwrite the hives'")
	}
	for k, v := range sm.Spec.Selector.MatchLabels {
		if svc.Labels[k] != v {
			t.Errorf("the ServiceMonitor selects %s=%s, which the metrics Service %s lacks", k, v, svc.Name)
		}
	}
	if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == "https" }) {
		t.Errorf("the metrics Service has no port https: %+v", svc.Spec.Ports)
	}
	return sm
}

// checkPrometheusRule decodes the PrometheusRule strictly and checks every alert is complete.
func checkPrometheusRule(t *testing.T, objs []*unstructured.Unstructured) *monitoringv1.PrometheusRule {
	t.Helper()
	rule := one[monitoringv1.PrometheusRule](t, objs, "PrometheusRule")
	if len(rule.Spec.Groups) == 0 {
		t.Fatal("the PrometheusRule has no groups")
	}
	for _, g := range rule.Spec.Groups {
		for _, rl := range g.Rules {
			if rl.Record != "" {
				continue
			}
			if rl.Alert == "" || rl.Expr.String() == "" || rl.For == nil || *rl.For == "" ||
				rl.Labels["severity"] == "" || rl.Annotations["summary"] == "" || rl.Annotations["description"] == "" {
				t.Errorf("alert %q lacks an expr, for, severity label, summary or description: %+v", rl.Alert, rl)
			}
		}
	}
	return rule
}

// checkDashboard checks the Grafana dashboard holds the panels of docs/metrics.md.
func checkDashboard(t *testing.T, cm *corev1.ConfigMap) {
	t.Helper()
	if cm.Labels["grafana_dashboard"] != "1" {
		t.Errorf("dashboard ConfigMap labels %v lack grafana_dashboard: \"1\"", cm.Labels)
	}
	if len(cm.Data) != 1 {
		t.Fatalf("want one dashboard in the ConfigMap, got %d", len(cm.Data))
	}
	var dashboard struct {
		Title  string `json:"title"`
		Panels []struct {
			Type    string `json:"type"`
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	for _, data := range cm.Data {
		if err := json.Unmarshal([]byte(data), &dashboard); err != nil {
			t.Fatalf("the dashboard is not JSON: %v", err)
		}
	}
	var exprs []string
	for _, p := range dashboard.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, target := range p.Targets {
			exprs = append(exprs, target.Expr)
		}
	}
	all := strings.Join(exprs, "\n")
	for _, want := range []string{
		"hive_agents{", `hive_tasks{phase="Pending"`, "rate(hive_task_outcomes_total{",
		`hive_task_outcomes_total{phase="Failed"`,
		"histogram_quantile(0.5,", "histogram_quantile(0.95,", "histogram_quantile(0.99,",
		"hive_gateway_request_duration_seconds_bucket{", "hive_gateway_request_queue_wait_seconds_bucket{",
		"hive_gateway_request_agent_seconds_bucket{", "rate(hive_gateway_requests_total{",
		"hive_gateway_requests_in_flight{", "hive_gateway_requests_queued{", "hive_gateway_serving_slots{",
	} {
		if !strings.Contains(all, want) {
			t.Errorf("no dashboard query has %s", want)
		}
	}
}

func TestSchemaRejects(t *testing.T) {
	for _, tc := range []struct {
		set, want string
	}{
		{"replicaCount=-1", "/replicaCount"},
		{"logging.encoder=xml", "/logging/encoder"},
		{"logging.level=verbose", "/logging/level"},
		{"unknownValue=1", "unknownValue"},
		{"image.pullPolicy=Sometimes", "/image/pullPolicy"},
		{"kubeAPI.qps=0", "/kubeAPI/qps"},
		{"concurrency.bind=0", "/concurrency/bind"},
		{"leaderElection.leaseDuration=soon", "/leaderElection/leaseDuration"},
		{"serviceAccount.name=", "/serviceAccount/name"},
		{"metrics.port=70000", "/metrics/port"},
		{"prometheusRule.failureRatio.threshold=2", "/prometheusRule/failureRatio/threshold"},
		{"serviceMonitor.interval=often", "/serviceMonitor/interval"},
		{"dashboard.colour=blue", "colour"},
		{"topologySpreadConstraints[0].whenUnsatisfiable=Maybe", "/topologySpreadConstraints/0/whenUnsatisfiable"},
		{"admissionPolicy.exemptUsers[0]=", "/admissionPolicy/exemptUsers/0"},
		{"podDisruptionBudget.maxUnavailable=0", "/podDisruptionBudget/maxUnavailable"},
		{"metrics.tls.certManager.issuerRef.kind=Vault", "/metrics/tls/certManager/issuerRef/kind"},
		{"extraVolumeMounts[0].name=x,extraVolumeMounts[0].mountPath=relative", "/extraVolumeMounts/0/mountPath"},
		{"prometheusRule.runbookBaseURL=wiki", "/prometheusRule/runbookBaseURL"},
	} {
		t.Run(tc.set, func(t *testing.T) {
			_, err := helm(t, "template", "hive-operator", chartPath, "--kube-version", kubeVersion, "--set", tc.set)
			if err == nil {
				t.Fatalf("helm template --set %s succeeded, want it to fail", tc.set)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "schema") {
				t.Errorf("the error does not say that %s breaks the schema:\n%v", tc.want, err)
			}
		})
	}
}

// TestKustomize checks that config/default installs the operator as the chart does with its
// default values.
func TestKustomize(t *testing.T) {
	objs := kustomize(t)
	chart := render(t, defaults)

	kd := one[appsv1.Deployment](t, objs, "Deployment")
	cd := one[appsv1.Deployment](t, chart, "Deployment")
	if kd.Namespace != "hive-system" || kd.Spec.Template.Spec.ServiceAccountName != "hive-operator" {
		t.Errorf("the Deployment runs as %s/%s, want hive-system/hive-operator, which the admission policy exempts",
			kd.Namespace, kd.Spec.Template.Spec.ServiceAccountName)
	}
	if diff := cmp.Diff(cd.Spec.Replicas, kd.Spec.Replicas); diff != "" {
		t.Errorf("replicas differ (-chart +kustomize):\n%s", diff)
	}
	if diff := cmp.Diff(cd.Spec.Template.Spec.SecurityContext, kd.Spec.Template.Spec.SecurityContext); diff != "" {
		t.Errorf("the pod securityContext differs (-chart +kustomize):\n%s", diff)
	}
	cc, kc := cd.Spec.Template.Spec.Containers[0], kd.Spec.Template.Spec.Containers[0]
	// The same manager but for the image, which each pins in its own way.
	cc.Image, kc.Image = "", ""
	if diff := cmp.Diff(cc, kc); diff != "" {
		t.Errorf("the manager container differs (-chart +kustomize):\n%s", diff)
	}
	// The gateway too: config/gateway is the chart's default render.
	kg := oneGateway[appsv1.Deployment](t, objs, "Deployment")
	cg := oneGateway[appsv1.Deployment](t, chart, "Deployment")
	if diff := cmp.Diff(cg.Spec.Template.Spec.Containers, kg.Spec.Template.Spec.Containers); diff != "" {
		t.Errorf("the gateway container differs (-chart +kustomize):\n%s", diff)
	}
	checkDeployment(t, release{
		namespace: "hive-system", replicas: 2, serviceAccount: "hive-operator",
		image: "ghcr.io/aihub-dev/hive-operator:v0.1.0", managerArgs: defaults.managerArgs,
	}, objs)
	checkLeastPrivilege(t, objs)
	kustomizeRelease := release{namespace: "hive-system", serviceAccount: "hive-operator"}
	checkManagerRole(t, kustomizeRelease, objs)
	checkAdmissionPolicy(t, kustomizeRelease, objs)
	checkUserRoles(t, kustomizeRelease, objs)

	for _, kind := range []string{"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding", "Service"} {
		if got, want := len(find(objs, kind)), len(find(chart, kind)); got != want {
			t.Errorf("%d %ss, the chart has %d", got, kind, want)
		}
	}
	if n := len(find(objs, "CustomResourceDefinition")); n != 2 {
		t.Errorf("%d CRDs, want hives and tasks", n)
	}
}

// TestDryRun has the API server validate every object the chart and config/default install,
// without storing them.
func TestDryRun(t *testing.T) {
	testenv.Require(t, env)
	for _, name := range []string{"default", "all-options"} {
		t.Run(name, func(t *testing.T) { dryRun(t, render(t, releases[name])) })
	}
	t.Run("kustomize", func(t *testing.T) { dryRun(t, kustomize(t)) })
}

// prometheusOperatorKinds are served by the Prometheus Operator's CRDs, which the test API
// server does not have; they are decoded strictly into its Go types instead.
var prometheusOperatorKinds = map[string]bool{"ServiceMonitor": true, "PrometheusRule": true}

// certManagerKinds are served by cert-manager's CRDs, which the test API server does not
// have either; checkOperability checks what the chart sets in them.
var certManagerKinds = map[string]bool{"Certificate": true, "Issuer": true}

func dryRun(t *testing.T, objs []*unstructured.Unstructured) {
	t.Helper()
	ctx := testenv.Context(t, 2*time.Minute)
	c := env.Client

	// Namespaces are made for real: a dry-run namespace holds nothing.
	for _, o := range objs {
		if ns := o.GetNamespace(); ns != "" {
			createNamespace(ctx, t, c, ns)
		}
	}
	for _, o := range objs {
		if prometheusOperatorKinds[o.GetKind()] {
			if o.GetAPIVersion() != monitoringv1.SchemeGroupVersion.String() {
				t.Errorf("%s %s is %s, want %s", o.GetKind(), o.GetName(), o.GetAPIVersion(), monitoringv1.SchemeGroupVersion)
			}
			switch o.GetKind() {
			case "ServiceMonitor":
				checkServiceMonitor(t, objs)
			case "PrometheusRule":
				checkPrometheusRule(t, objs)
			}
			continue
		}
		if certManagerKinds[o.GetKind()] {
			if o.GetAPIVersion() != "cert-manager.io/v1" {
				t.Errorf("%s %s is %s, want cert-manager.io/v1", o.GetKind(), o.GetName(), o.GetAPIVersion())
			}
			continue
		}
		what := fmt.Sprintf("%s %s", o.GetKind(), client.ObjectKeyFromObject(o))
		if _, err := c.RESTMapper().RESTMapping(o.GroupVersionKind().GroupKind(), o.GroupVersionKind().Version); err != nil {
			if meta.IsNoMatchError(err) {
				t.Errorf("%s: the API server does not serve %s", what, o.GroupVersionKind())
				continue
			}
			t.Fatalf("%s: %v", what, err)
		}
		err := c.Create(ctx, o.DeepCopy(), client.DryRunAll)
		if apierrors.IsAlreadyExists(err) {
			// The CRDs the test environment installed, the namespaces made above: validate
			// the object as an update of the existing one.
			err = c.Apply(ctx, client.ApplyConfigurationFromUnstructured(o.DeepCopy()),
				client.DryRunAll, client.ForceOwnership, client.FieldOwner("chart-test"))
		}
		if err != nil {
			t.Errorf("%s: the API server refuses it: %v", what, err)
		}
	}
}

// TestInstallFromOCIRegistry installs the chart as a user does, by reference, with no
// checkout: packaged, pushed to an OCI registry and installed from it.
func TestInstallFromOCIRegistry(t *testing.T) {
	testenv.Require(t, env)
	reg := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(reg.Close)
	dist := t.TempDir()
	if _, err := helm(t, "package", chartPath, "--app-version", "v0.1.0", "--destination", dist); err != nil {
		t.Fatal(err)
	}
	archives, _ := filepath.Glob(filepath.Join(dist, "hive-operator-*.tgz"))
	if len(archives) != 1 {
		t.Fatalf("helm package wrote %v, want one archive", archives)
	}
	repo := "oci://" + strings.TrimPrefix(reg.URL, "http://") + "/charts"
	if _, err := helm(t, "push", archives[0], repo, "--plain-http"); err != nil {
		t.Fatal(err)
	}
	ref := repo + "/hive-operator"
	shown, err := helm(t, "show", "chart", ref, "--plain-http")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(shown, `appVersion: v0.1.0`) {
		t.Errorf("the pushed chart says:\n%s", shown)
	}
	out, err := helm(t, "install", "from-oci", ref, "--plain-http", "--namespace", "from-oci", "--create-namespace",
		"--kubeconfig", writeKubeconfig(t), "--dry-run=server")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"kind: Deployment", "image: ghcr.io/aihub-dev/hive-operator:v0.1.0", "NOTES:"} {
		if !strings.Contains(out, want) {
			t.Errorf("the install from %s lacks %q:\n%s", ref, want, out)
		}
	}
}

// TestHelmInstall installs the chart with helm against the test API server in dry-run mode:
// helm checks the chart's kubeVersion against the server's and renders NOTES.txt.
func TestHelmInstall(t *testing.T) {
	testenv.Require(t, env)
	kubeconfig := writeKubeconfig(t)
	for _, name := range []string{"default", "all-options"} {
		r := releases[name]
		t.Run(name, func(t *testing.T) {
			// The watched namespaces exist before an install, which puts Roles in them.
			for _, ns := range r.watchNamespaces {
				createNamespace(t.Context(), t, env.Client, ns)
			}
			args := append([]string{"install", r.name, chartPath, "--namespace", r.namespace, "--create-namespace",
				"--kubeconfig", kubeconfig, "--dry-run=server"}, r.args...)
			// helm maps every object to a served kind, and the test API server has neither the
			// Prometheus Operator's nor cert-manager's (TestDryRun checks those objects): the
			// metrics certificate comes from a named Secret instead.
			args = append(args, "--set", "serviceMonitor.enabled=false,prometheusRule.enabled=false",
				"--set", "metrics.tls.certManager.enabled=false,metrics.tls.secretName=metrics-cert")
			out, err := helm(t, args...)
			if err != nil {
				t.Fatal(err)
			}
			_, notes, ok := strings.Cut(out, "NOTES:")
			if !ok {
				t.Fatalf("helm printed no NOTES:\n%s", out)
			}
			for _, want := range []string{"rollout status deployment/", "helm show crds", "kubectl apply --server-side --force-conflicts -f -", "config/samples?ref=v0.1.0"} {
				if !strings.Contains(notes, want) {
					t.Errorf("NOTES lack %q:\n%s", want, notes)
				}
			}
		})
	}
}

// writeKubeconfig writes a kubeconfig that reaches the test API server as its administrator.
func writeKubeconfig(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := testenv.WriteKubeconfig(env.Config, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func createNamespace(ctx context.Context, t *testing.T, c client.Client, name string) {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if err := c.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
}

// TestManagerRBACFollowsWatchNamespaces checks where the manager's permissions apply: with
// watchNamespaces set, a Role and RoleBinding in each watched namespace with the rules of
// config/rbac/role.yaml and no ClusterRole or ClusterRoleBinding of the manager; without it,
// the ClusterRole. The leader election's Role stays in the release namespace either way.
func TestManagerRBACFollowsWatchNamespaces(t *testing.T) {
	watching := release{
		name: "hive-operator", namespace: "hive-system", serviceAccount: "hive-operator",
		args:            []string{"--set", "watchNamespaces={tasks-a,tasks-b}"},
		watchNamespaces: []string{"tasks-a", "tasks-b"},
	}
	for name, r := range map[string]release{"every namespace": defaults, "watched namespaces": watching} {
		t.Run(name, func(t *testing.T) {
			objs := render(t, r)
			checkManagerRole(t, r, objs)
			checkNamespaces(t, r, objs)
			var leaderElection []string
			for _, o := range find(objs, "Role") {
				if strings.HasSuffix(o.GetName(), "-leader-election") {
					leaderElection = append(leaderElection, o.GetNamespace())
				}
			}
			if !slices.Equal(leaderElection, []string{r.namespace}) {
				t.Errorf("the leader election's Role is in %v, want the release namespace %s only", leaderElection, r.namespace)
			}
		})
	}
}

// update rewrites the testdata files that are renders of the chart.
var update = flag.Bool("update", false, "rewrite "+twoReleasesPolicies+" from the chart")

// twoReleases are two releases of the chart in one cluster, each in its own namespace and
// watching its own namespace of tasks, each exempting a reporter of its tasks' namespace.
var twoReleases = []release{
	{
		name: "team-a", namespace: "ops-a", serviceAccount: "hive-operator",
		args:            []string{"-f", "test/chart/testdata/two-releases/team-a.yaml"},
		watchNamespaces: []string{"tasks-a"}, exemptUsers: []string{"system:serviceaccount:tasks-a:reporter"},
	},
	{
		name: "team-b", namespace: "ops-b", serviceAccount: "hive-operator",
		args:            []string{"-f", "test/chart/testdata/two-releases/team-b.yaml"},
		watchNamespaces: []string{"tasks-b"}, exemptUsers: []string{"system:serviceaccount:tasks-b:reporter"},
	},
}

// twoReleasesPolicies holds the admission policies the chart renders for twoReleases.
const twoReleasesPolicies = "test/chart/testdata/two-releases/policies.yaml"

// TestAdmissionPoliciesOfTwoReleases renders the admission policies of twoReleases, checks
// each against its values, and checks testdata/two-releases/policies.yaml is exactly that
// render: controllers/admission_test.go applies the file to an API server and shows the two
// releases do not refuse each other's operators (TestAdmissionPoliciesOfTwoReleasesDoNotBlockEachOther).
func TestAdmissionPoliciesOfTwoReleases(t *testing.T) {
	var out bytes.Buffer
	out.WriteString("# The admission policies of two releases of the chart: team-a (namespace ops-a, watching\n" +
		"# tasks-a) and team-b (ops-b, watching tasks-b), with the values in this folder; labels\n" +
		"# left out. Generated: go test ./test/chart -run TestAdmissionPoliciesOfTwoReleases -update\n")
	for _, r := range twoReleases {
		objs := render(t, r)
		checkAdmissionPolicy(t, r, objs)
		checkManagerRole(t, r, objs)
		for _, o := range objs {
			if o.GetKind() != "ValidatingAdmissionPolicy" && o.GetKind() != "ValidatingAdmissionPolicyBinding" {
				continue
			}
			o.SetLabels(nil)
			data, err := yaml.Marshal(o.Object)
			if err != nil {
				t.Fatal(err)
			}
			out.WriteString("---\n")
			out.Write(data)
		}
	}
	path := filepath.Join(moduleRoot(t), twoReleasesPolicies)
	if *update {
		if err := os.WriteFile(path, out.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), out.String()); diff != "" {
		t.Errorf("%s is not the chart's render (-file +render); run go test ./test/chart -run TestAdmissionPoliciesOfTwoReleases -update:\n%s",
			twoReleasesPolicies, diff)
	}
}

// TestIsolatedExample checks examples/isolated/hive.yaml, the hive docs/security.md offers
// for work that must not act as its agent: the API server accepts the hive and the agent pod
// the operator makes of it, and in the admitted pod only the agent container mounts a
// service-account token, the worker none.
func TestIsolatedExample(t *testing.T) {
	testenv.Require(t, env)
	ctx := testenv.Context(t, 2*time.Minute)
	data, err := os.ReadFile(filepath.Join(moduleRoot(t), "examples", "isolated", "hive.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	objs, err := parse(string(data))
	if err != nil {
		t.Fatalf("examples/isolated/hive.yaml: %v", err)
	}
	if len(objs) != 1 || objs[0].GetKind() != "Hive" {
		t.Fatalf("want one Hive in examples/isolated/hive.yaml, got %d objects", len(objs))
	}
	const ns = "isolated-example"
	createNamespace(ctx, t, env.Client, ns)
	u := objs[0].DeepCopy()
	u.SetNamespace(ns)
	if err := env.Client.Create(ctx, u, client.DryRunAll); err != nil {
		t.Fatalf("the API server refuses the hive: %v", err)
	}
	hive := decode[swarmv1alpha1.Hive](t, u)

	// The agents' service account, which the operator would make: pods name it.
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: agentpod.ServiceAccountName(hive), Namespace: ns}}
	if err := env.Client.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	pod := agentpod.Build(hive, "example")
	if err := env.Client.Create(ctx, pod, client.DryRunAll); err != nil {
		t.Fatalf("the API server refuses the agent pod: %v", err)
	}

	// pod is now as admitted, with whatever admission added to it.
	spec := pod.Spec
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Error("automountServiceAccountToken is not false: automounting puts the token into every container, the worker's too")
	}
	if spec.ShareProcessNamespace != nil && *spec.ShareProcessNamespace {
		t.Error("shareProcessNamespace is on: the worker could read the agent's token through /proc")
	}
	tokenVolumes := map[string]bool{}
	for _, v := range spec.Volumes {
		if v.Secret != nil {
			tokenVolumes[v.Name] = true // a secret may hold a token
		}
		if v.Projected != nil && slices.ContainsFunc(v.Projected.Sources, func(s corev1.VolumeProjection) bool {
			return s.ServiceAccountToken != nil || s.Secret != nil
		}) {
			tokenVolumes[v.Name] = true
		}
	}
	var agent *corev1.Container
	workers := 0
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		var tokenMounts []string
		for _, m := range c.VolumeMounts {
			if tokenVolumes[m.Name] {
				tokenMounts = append(tokenMounts, m.MountPath)
			}
		}
		if c.Name == "agent" {
			agent = &c
			if !slices.Equal(tokenMounts, []string{"/var/run/secrets/kubernetes.io/serviceaccount"}) {
				t.Errorf("the agent container mounts a token at %v, want /var/run/secrets/kubernetes.io/serviceaccount, where clients read it", tokenMounts)
			}
			continue
		}
		workers++
		if len(tokenMounts) > 0 {
			t.Errorf("container %s mounts a token at %v: only the agent container may", c.Name, tokenMounts)
		}
	}
	if agent == nil || workers == 0 {
		t.Fatalf("want an agent container and a worker container, got %d containers", len(spec.Containers))
	}
	if !slices.Contains(agent.Args, "--mode=http") || !slices.ContainsFunc(agent.Args, func(a string) bool {
		return strings.HasPrefix(a, "--url=http://127.0.0.1:") || strings.HasPrefix(a, "--url=http://localhost:")
	}) {
		t.Errorf("the agent runs %q, want --mode=http with a --url on localhost, the worker container", agent.Args)
	}
}
