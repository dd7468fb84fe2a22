package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/yaml"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Run(m, &env)) }

// kubeconfigOnce writes a kubeconfig for the test API server, the way a user's points at
// a cluster, so the commands go through the ConfigFlags as they do for real.
var (
	kubeconfigOnce sync.Once
	kubeconfigPath string
	kubeconfigErr  error
)

func kubeconfig(t *testing.T) string {
	t.Helper()
	kubeconfigOnce.Do(func() {
		cfg := env.Config
		kc := clientcmdapi.NewConfig()
		kc.Clusters["envtest"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
		kc.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData, Token: cfg.BearerToken}
		kc.Contexts["envtest"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: "admin", Namespace: "default"}
		kc.CurrentContext = "envtest"
		dir, err := os.MkdirTemp("", "kubectl-hive-test")
		if err != nil {
			kubeconfigErr = err
			return
		}
		kubeconfigPath = filepath.Join(dir, "kubeconfig")
		kubeconfigErr = clientcmd.WriteToFile(*kc, kubeconfigPath)
	})
	if kubeconfigErr != nil {
		t.Fatalf("writing the kubeconfig: %v", kubeconfigErr)
	}
	return kubeconfigPath
}

// result is what one run of the plugin printed, and its exit code.
type result struct {
	stdout, stderr string
	code           int
}

// kubectlHive runs the plugin with args in namespace ns, reading stdin.
func kubectlHive(ctx context.Context, t *testing.T, ns, stdin string, args ...string) result {
	t.Helper()
	var out, errOut bytes.Buffer
	streams := genericiooptions.IOStreams{In: strings.NewReader(stdin), Out: &out, ErrOut: &errOut}
	args = append([]string{"--kubeconfig", kubeconfig(t), "-n", ns}, args...)
	code := run(ctx, args, streams)
	return result{out.String(), errOut.String(), code}
}

func namespace(ctx context.Context, t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "kubectl-hive-"}}
	if err := env.Client.Create(ctx, ns); err != nil {
		t.Fatalf("creating a namespace: %v", err)
	}
	return ns.Name
}

func createHive(ctx context.Context, t *testing.T, ns, name string, capabilities ...string) *swarmv1alpha1.Hive {
	t.Helper()
	h := &swarmv1alpha1.Hive{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: swarmv1alpha1.HiveSpec{
			Replicas: ptr.To[int32](3),
			Agent:    swarmv1alpha1.AgentSpec{Concurrency: 2, Capabilities: capabilities},
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "agent", Image: "example.com/agent:v1"}}}},
		},
	}
	if err := env.Client.Create(ctx, h); err != nil {
		t.Fatalf("creating hive %s: %v", name, err)
	}
	return h
}

// setHiveStatus writes a hive's status as the operator would.
func setHiveStatus(ctx context.Context, t *testing.T, h *swarmv1alpha1.Hive, desired, updated int32, current, update string, conds ...metav1.Condition) {
	t.Helper()
	h.Status.ObservedGeneration = h.Generation
	h.Status.DesiredReplicas, h.Status.UpdatedReplicas = desired, updated
	h.Status.CurrentRevision, h.Status.UpdateRevision = current, update
	for _, c := range conds {
		c.LastTransitionTime = metav1.Now()
		meta.SetStatusCondition(&h.Status.Conditions, c)
	}
	if err := env.Client.Status().Update(ctx, h); err != nil {
		t.Fatalf("writing the status of hive %s: %v", h.Name, err)
	}
}

// createAgent creates an agent pod of a hive, as the operator would, and sets its
// readiness.
func createAgent(ctx context.Context, t *testing.T, h *swarmv1alpha1.Hive, name, revision string, isReady, isDraining bool) {
	t.Helper()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: h.Namespace, Name: name,
			Labels:          map[string]string{swarmv1alpha1.LabelHive: h.Name, swarmv1alpha1.LabelRevision: revision},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(h, swarmv1alpha1.GroupVersion.WithKind("Hive"))},
		},
		Spec: *h.Spec.Template.Spec.DeepCopy(),
	}
	if isDraining {
		p.Annotations = map[string]string{swarmv1alpha1.AnnotationDrainingSince: time.Now().UTC().Format(time.RFC3339)}
	}
	if err := env.Client.Create(ctx, p); err != nil {
		t.Fatalf("creating pod %s: %v", name, err)
	}
	if isReady {
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()}}
		if err := env.Client.Status().Update(ctx, p); err != nil {
			t.Fatalf("making pod %s ready: %v", name, err)
		}
	}
}

func createTask(ctx context.Context, t *testing.T, ns, name, hive string, mutate ...func(*swarmv1alpha1.Task)) *swarmv1alpha1.Task {
	t.Helper()
	tk := &swarmv1alpha1.Task{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       swarmv1alpha1.TaskSpec{Hive: hive, Input: "in-" + name},
	}
	var status *swarmv1alpha1.TaskStatus
	for _, m := range mutate {
		m(tk)
	}
	if tk.Status.Phase != "" {
		status = tk.Status.DeepCopy()
	}
	if err := env.Client.Create(ctx, tk); err != nil {
		t.Fatalf("creating task %s: %v", name, err)
	}
	if status != nil {
		patchStatus(ctx, t, tk, func(s *swarmv1alpha1.TaskStatus) { *s = *status })
	}
	return tk
}

// patchStatus changes a task's status with a merge patch, as an agent or the operator
// does.
func patchStatus(ctx context.Context, t *testing.T, tk *swarmv1alpha1.Task, change func(*swarmv1alpha1.TaskStatus)) {
	t.Helper()
	orig := tk.DeepCopy()
	change(&tk.Status)
	if err := env.Client.Status().Patch(ctx, tk, client.MergeFrom(orig)); err != nil {
		t.Errorf("patching the status of task %s: %v", tk.Name, err)
	}
}

func status(phase swarmv1alpha1.TaskPhase, agent string) func(*swarmv1alpha1.Task) {
	return func(t *swarmv1alpha1.Task) {
		t.Status.Phase, t.Status.Agent = phase, agent
		if agent != "" {
			t.Status.Attempt = 1
			t.Status.AssignedAt = ptr.To(metav1.NowMicro())
		}
	}
}

// label sets a label on obj, as a person would with kubectl label.
func label(ctx context.Context, t *testing.T, obj client.Object, key, value string) {
	t.Helper()
	orig := obj.DeepCopyObject().(client.Object)
	labels := obj.GetLabels()
	if labels == nil {
		labels = map[string]string{}
	}
	labels[key] = value
	obj.SetLabels(labels)
	if err := env.Client.Patch(ctx, obj, client.MergeFrom(orig)); err != nil {
		t.Fatalf("labelling %s: %v", obj.GetName(), err)
	}
}

func wantCode(t *testing.T, r result, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
}

// wantStdout checks that the run succeeded and printed exactly want.
func wantStdout(t *testing.T, r result, want string) {
	t.Helper()
	wantCode(t, r, 0)
	if r.stdout != want {
		t.Errorf("stdout = %q, want %q", r.stdout, want)
	}
}

func wantContains(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Errorf("%s does not contain %q:\n%s", what, w, got)
		}
	}
}

func TestStatus(t *testing.T) {
	testenv.Require(t, env)
	ctx := testenv.Context(t, time.Minute)
	ns := namespace(ctx, t)

	echo := createHive(ctx, t, ns, "echo", "echo")
	setHiveStatus(ctx, t, echo, 3, 1, "rev1", "rev2",
		metav1.Condition{Type: swarmv1alpha1.HiveProgressing, Status: metav1.ConditionTrue, Reason: swarmv1alpha1.ReasonRolloutInProgress,
			Message: "Rolling out revision rev2: 1 of 3 agents updated, 2 available"},
		metav1.Condition{Type: swarmv1alpha1.HiveDegraded, Status: metav1.ConditionTrue, Reason: swarmv1alpha1.ReasonPodCreateFailed,
			Message: "exceeded quota"},
		metav1.Condition{Type: swarmv1alpha1.HiveAvailable, Status: metav1.ConditionFalse, Reason: swarmv1alpha1.ReasonAgentsUnavailable,
			Message: "2 of 3 agents are ready to take tasks; at least 3 are needed"},
	)
	createAgent(ctx, t, echo, "echo-busy", "rev1", true, false)
	createAgent(ctx, t, echo, "echo-idle", "rev2", true, false)
	createAgent(ctx, t, echo, "echo-new", "rev2", false, false)
	createAgent(ctx, t, echo, "echo-old", "rev1", true, true)
	createTask(ctx, t, ns, "run", "echo", status(swarmv1alpha1.TaskRunning, "echo-busy"))
	createTask(ctx, t, ns, "wait1", "echo")
	createTask(ctx, t, ns, "wait2", "echo")
	createTask(ctx, t, ns, "blocked", "echo", status(swarmv1alpha1.TaskBlocked, ""))
	createTask(ctx, t, ns, "done", "echo", status(swarmv1alpha1.TaskSucceeded, ""))

	calm := createHive(ctx, t, ns, "calm")
	setHiveStatus(ctx, t, calm, 1, 1, "c1", "c1",
		metav1.Condition{Type: swarmv1alpha1.HiveProgressing, Status: metav1.ConditionFalse, Reason: swarmv1alpha1.ReasonStable, Message: "All 1 agents run revision c1"},
		metav1.Condition{Type: swarmv1alpha1.HiveAvailable, Status: metav1.ConditionTrue, Reason: swarmv1alpha1.ReasonAgentsReady, Message: "1 of 1"},
	)
	createAgent(ctx, t, calm, "calm-a", "c1", true, false)

	t.Run("one hive", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "status", "echo")
		wantCode(t, r, 0)
		wantContains(t, "stdout", r.stdout,
			"Hive:       echo\n",
			"Namespace:  "+ns+"\n",
			"Agents:     3/3 ready; 1 starting, 1 idle, 1 busy, 1 draining\n",
			"Queue:      2 pending, 1 blocked, 1 running\n",
			"Revision:   rev1\n",
			"Rollout:    to rev2: 1 of 3 agents updated\n",
			"Progress:   in progress (RolloutInProgress): Rolling out revision rev2: 1 of 3 agents updated, 2 available\n",
			"Problems:   Degraded (PodCreateFailed): exceeded quota\n",
			"            Unavailable (AgentsUnavailable): 2 of 3 agents are ready to take tasks; at least 3 are needed\n",
		)
		if !regexp.MustCompile(`(?m)^AGENT\s+STATE\s+TASKS\s+READY\s+REVISION\s+AGE\n` +
			`echo-busy\s+busy\s+1\s+true\s+rev1\s+\S+\n` +
			`echo-idle\s+idle\s+0\s+true\s+rev2\s+\S+\n` +
			`echo-new\s+starting\s+0\s+false\s+rev2\s+\S+\n` +
			`echo-old\s+draining\s+0\s+true\s+rev1\s+\S+\n$`).MatchString(r.stdout) {
			t.Errorf("the agents table is not as expected:\n%s", r.stdout)
		}
	})

	t.Run("all hives", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "status")
		wantCode(t, r, 0)
		lines := strings.Split(r.stdout, "\n")
		header := regexp.MustCompile(`^NAME\s+READY\s+STARTING\s+IDLE\s+BUSY\s+DRAINING\s+PENDING\s+BLOCKED\s+RUNNING\s+REVISION\s+UP-TO-DATE\s+PROBLEMS$`)
		if !header.MatchString(lines[0]) {
			t.Errorf("header = %q", lines[0])
		}
		calmRow := regexp.MustCompile(`^calm\s+1/1\s+0\s+1\s+0\s+0\s+0\s+0\s+0\s+c1\s+1/1\s+-$`)
		echoRow := regexp.MustCompile(`^echo\s+3/3\s+1\s+1\s+1\s+1\s+2\s+1\s+1\s+rev1->rev2\s+1/3\s+Degraded,Unavailable$`)
		if len(lines) < 3 || !calmRow.MatchString(lines[1]) || !echoRow.MatchString(lines[2]) {
			t.Errorf("rows are not as expected:\n%s", r.stdout)
		}
		// Columns line up, as in kubectl.
		if strings.Index(lines[0], "READY") != strings.Index(lines[1], "1/1") {
			t.Errorf("columns are not aligned:\n%s", r.stdout)
		}
		wantContains(t, "stdout", r.stdout,
			"\nhive/echo: Degraded (PodCreateFailed): exceeded quota\n",
			"hive/echo: Unavailable (AgentsUnavailable): 2 of 3 agents")
	})

	t.Run("json prints the hive", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "status", "echo", "-o", "json")
		wantCode(t, r, 0)
		var h swarmv1alpha1.Hive
		if err := json.Unmarshal([]byte(r.stdout), &h); err != nil {
			t.Fatalf("output is not a hive: %v\n%s", err, r.stdout)
		}
		if h.Kind != "Hive" || h.APIVersion != "swarm.aihub.dev/v1alpha1" || h.Name != "echo" ||
			h.Status.UpdateRevision != "rev2" || h.ManagedFields != nil {
			t.Errorf("hive = %+v", h)
		}
	})

	t.Run("yaml of all", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "status", "-o", "yaml")
		wantCode(t, r, 0)
		var got struct {
			Kind  string
			Items []swarmv1alpha1.Hive
		}
		if err := yaml.Unmarshal([]byte(r.stdout), &got); err != nil || got.Kind != "List" || len(got.Items) != 2 ||
			got.Items[0].Name != "calm" || got.Items[1].Kind != "Hive" {
			t.Fatalf("output is not a list of the two hives (%v):\n%s", err, r.stdout)
		}
	})

	t.Run("name", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "status", "-o", "name")
		wantStdout(t, r, "hive.swarm.aihub.dev/calm\nhive.swarm.aihub.dev/echo\n")
	})

	t.Run("jsonpath", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "status", "echo", "-o", "jsonpath={.spec.agent.capabilities[0]}/{.status.currentRevision}")
		wantStdout(t, r, "echo/rev1")
	})

	t.Run("wide", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "status", "-o", "wide")
		wantCode(t, r, 0)
		lines := strings.Split(r.stdout, "\n")
		if !regexp.MustCompile(`^NAME\s+READY\s+STARTING\s+IDLE\s+BUSY\s+DRAINING\s+STOPPING\s+PENDING\s.*\sPROBLEMS\s+CAPABILITIES$`).MatchString(lines[0]) ||
			!regexp.MustCompile(`^calm\s+1/1\s+0\s+1\s+0\s+0\s+0\s+0\s.*\s-\s+-$`).MatchString(lines[1]) ||
			!regexp.MustCompile(`^echo\s.*\sDegraded,Unavailable\s+echo$`).MatchString(lines[2]) {
			t.Errorf("wide table is not as expected:\n%s", r.stdout)
		}
		r = kubectlHive(ctx, t, ns, "", "status", "echo", "-o", "wide")
		wantCode(t, r, 0)
		if !regexp.MustCompile(`(?m)^AGENT\s+STATE\s+TASKS\s+READY\s+REVISION\s+AGE\s+IP\s+NODE\n` +
			`echo-busy\s+busy\s+1\s+true\s+rev1\s+\S+\s+<none>\s+<none>\n`).MatchString(r.stdout) {
			t.Errorf("wide agents table is not as expected:\n%s", r.stdout)
		}
	})

	t.Run("no headers", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "status", "--no-headers")
		wantCode(t, r, 0)
		if !strings.HasPrefix(r.stdout, "calm ") {
			t.Errorf("stdout = %q, want the rows without a header", r.stdout)
		}
	})

	t.Run("selector", func(t *testing.T) {
		// Labels are unique to the test's namespace: -A below sees every test's hives.
		label(ctx, t, calm, "team", ns)
		r := kubectlHive(ctx, t, ns, "", "status", "-l", "team="+ns)
		wantCode(t, r, 0)
		if !regexp.MustCompile(`^NAME\s.*\ncalm\s[^\n]*\n$`).MatchString(r.stdout) {
			t.Errorf("stdout = %q, want calm alone", r.stdout)
		}
		r = kubectlHive(ctx, t, ns, "", "status", "-l", "team=nobody")
		if r.code != 0 || r.stderr != "No hives found in namespace "+ns+".\n" {
			t.Errorf("exit %d, stderr %q", r.code, r.stderr)
		}
		r = kubectlHive(ctx, t, ns, "", "status", "-l", "team=")
		wantCode(t, r, 0)
		r = kubectlHive(ctx, t, ns, "", "status", "-l", "!!")
		wantCode(t, r, 1)
		wantContains(t, "stderr", r.stderr, `invalid label selector "!!"`)
	})

	t.Run("all namespaces", func(t *testing.T) {
		other := namespace(ctx, t)
		label(ctx, t, createHive(ctx, t, other, "calm"), "team", ns)
		r := kubectlHive(ctx, t, ns, "", "status", "-A", "-l", "team="+ns)
		wantCode(t, r, 0)
		first, second := min(ns, other), max(ns, other)
		want := regexp.MustCompile(`^NAMESPACE\s+NAME\s+READY\s.*\n` + first + `\s+calm\s[^\n]*\n` + second + `\s+calm\s[^\n]*\n\n` +
			`hive/calm in namespace ` + other + `: Stale \(NotObserved\)`)
		if !want.MatchString(r.stdout) {
			t.Errorf("stdout is not both namespaces' calm:\n%s", r.stdout)
		}
		r = kubectlHive(ctx, t, ns, "", "status", "-A", "calm")
		wantCode(t, r, 1)
		wantContains(t, "stderr", r.stderr, "a hive name needs a namespace, but -A covers all of them")
	})

	t.Run("hive without agents", func(t *testing.T) {
		createHive(ctx, t, ns, "fresh")
		r := kubectlHive(ctx, t, ns, "", "status", "fresh")
		wantCode(t, r, 0)
		wantContains(t, "stdout", r.stdout,
			"Agents:     0/3 ready",
			"Revision:   <none>\n",
			"Rollout:    complete: 0 of 3 agents updated\n",
			"Problems:   Stale (NotObserved): the operator has not reported on this hive yet; is it running?\n",
			"No agent pods.")
	})

	t.Run("unknown hive", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "status", "nope")
		wantCode(t, r, 1)
		wantContains(t, "stderr", r.stderr, `error: hive "nope" not found in namespace "`+ns+`"`, "kubectl get hives -n "+ns)
	})

	t.Run("empty namespace", func(t *testing.T) {
		empty := namespace(ctx, t)
		r := kubectlHive(ctx, t, empty, "", "status")
		wantCode(t, r, 0)
		if r.stdout != "" || r.stderr != "No hives found in namespace "+empty+".\n" {
			t.Errorf("stdout %q, stderr %q", r.stdout, r.stderr)
		}
	})

	t.Run("bad output format", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "status", "-o", "xml")
		wantCode(t, r, 1)
		wantContains(t, "stderr", r.stderr, `unsupported output format "xml": use one of wide, json, yaml`)
	})
}

func TestQueue(t *testing.T) {
	testenv.Require(t, env)
	ctx := testenv.Context(t, time.Minute)
	ns := namespace(ctx, t)
	createHive(ctx, t, ns, "echo", "echo")
	createHive(ctx, t, ns, "other")
	createHive(ctx, t, ns, "quiet")

	// Creation times have a resolution of one second: tasks of one priority created within
	// the same second are ordered by name, so the names follow the creation order.
	createTask(ctx, t, ns, "a-first", "echo")
	createTask(ctx, t, ns, "b-second", "echo", func(t *swarmv1alpha1.Task) { t.Labels = map[string]string{"submitted-by": ns} })
	createTask(ctx, t, ns, "z-urgent", "echo", func(t *swarmv1alpha1.Task) { t.Spec.Priority = 100 })
	createTask(ctx, t, ns, "c-backoff", "echo", func(t *swarmv1alpha1.Task) {
		t.Status.Phase, t.Status.Attempt = swarmv1alpha1.TaskPending, 1
		t.Status.NotBefore = ptr.To(metav1.NewMicroTime(time.Now().Add(time.Hour)))
		t.Status.QueuedAt = ptr.To(metav1.NowMicro())
	})
	createTask(ctx, t, ns, "d-gpu", "echo", func(t *swarmv1alpha1.Task) { t.Spec.RequiredCapabilities = []string{"gpu"} })
	createTask(ctx, t, ns, "dep", "other", status(swarmv1alpha1.TaskRunning, "other-x"))
	createTask(ctx, t, ns, "e-after-dep", "echo", func(t *swarmv1alpha1.Task) { t.Spec.DependsOn = []string{"dep"} })
	createTask(ctx, t, ns, "running", "echo", status(swarmv1alpha1.TaskRunning, "echo-x"))
	createTask(ctx, t, ns, "cancelled", "echo", func(t *swarmv1alpha1.Task) { t.Spec.Cancel = true })
	createTask(ctx, t, ns, "elsewhere", "other")
	before := versions(ctx, t, ns)

	t.Run("table", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "queue", "echo")
		wantCode(t, r, 0)
		want := regexp.MustCompile(`^POSITION\s+NAME\s+PRIORITY\s+WAITING\s+NOTE\n` +
			`1\s+z-urgent\s+100\s+\S+\s*\n` +
			`2\s+a-first\s+0\s+\S+\s*\n` +
			`3\s+b-second\s+0\s+\S+\s*\n` +
			`-\s+c-backoff\s+0\s+\S+\s+backoff until \d\d:\d\d:\d\d \(in 59m\S*\)\n` +
			`-\s+d-gpu\s+0\s+\S+\s+needs capabilities the hive lacks: gpu\n` +
			`-\s+e-after-dep\s+0\s+\S+\s+blocked on dependencies: waiting for tasks dep\n$`)
		if !want.MatchString(r.stdout) {
			t.Errorf("queue is not as expected:\n%s", r.stdout)
		}
	})

	t.Run("json prints the tasks in dispatch order", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "queue", "echo", "-o", "json")
		wantCode(t, r, 0)
		var got struct {
			Kind  string
			Items []swarmv1alpha1.Task
		}
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
			t.Fatalf("output is not a list: %v\n%s", err, r.stdout)
		}
		var names []string
		for _, tk := range got.Items {
			names = append(names, tk.Name)
		}
		if diff := cmp.Diff([]string{"z-urgent", "a-first", "b-second", "c-backoff", "d-gpu", "e-after-dep"}, names); diff != "" || got.Kind != "List" ||
			got.Items[0].Kind != "Task" || got.Items[0].Spec.Priority != 100 {
			t.Errorf("queue (-want +got names):\n%s\n%s", diff, r.stdout)
		}
	})

	t.Run("name", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "queue", "echo", "-o", "name")
		wantCode(t, r, 0)
		if !strings.HasPrefix(r.stdout, "task.swarm.aihub.dev/z-urgent\ntask.swarm.aihub.dev/a-first\n") || strings.Count(r.stdout, "\n") != 6 {
			t.Errorf("stdout = %q", r.stdout)
		}
	})

	t.Run("wide", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "queue", "echo", "-o", "wide")
		wantCode(t, r, 0)
		wantContains(t, "stdout", r.stdout, "NOTE")
		if !regexp.MustCompile(`(?m)^POSITION\s+NAME\s+PRIORITY\s+WAITING\s+NOTE\s+ATTEMPTS\s+REQUIRES$`).MatchString(r.stdout) ||
			!regexp.MustCompile(`(?m)^-\s+c-backoff\s+0\s+\S+\s+backoff until .*\)\s+1\s+-$`).MatchString(r.stdout) ||
			!regexp.MustCompile(`(?m)^-\s+d-gpu\s+0\s+\S+\s+needs capabilities the hive lacks: gpu\s+0\s+gpu$`).MatchString(r.stdout) {
			t.Errorf("wide queue is not as expected:\n%s", r.stdout)
		}
	})

	t.Run("selector keeps positions", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "queue", "echo", "-l", "submitted-by="+ns)
		wantCode(t, r, 0)
		if !regexp.MustCompile(`^POSITION\s.*\n3\s+b-second\s+0\s+\S+\s*\n$`).MatchString(r.stdout) {
			t.Errorf("stdout = %q, want b-second alone, third", r.stdout)
		}
	})

	t.Run("every hive", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "queue")
		wantCode(t, r, 0)
		if !regexp.MustCompile(`^HIVE\s+POSITION\s+NAME\s+PRIORITY\s+WAITING\s+NOTE\n` +
			`(echo\s+.*\n){6}other\s+1\s+elsewhere\s+0\s+\S+\s*\n$`).MatchString(r.stdout) {
			t.Errorf("queues are not as expected:\n%s", r.stdout)
		}
		r = kubectlHive(ctx, t, ns, "", "queue", "-A", "-l", "submitted-by="+ns)
		wantCode(t, r, 0)
		if !regexp.MustCompile(`^NAMESPACE\s+HIVE\s+POSITION\s.*\n` + ns + `\s+echo\s+3\s+b-second\s`).MatchString(r.stdout) {
			t.Errorf("queues of all namespaces are not as expected:\n%s", r.stdout)
		}
		r = kubectlHive(ctx, t, ns, "", "queue", "-A", "echo")
		wantCode(t, r, 1)
	})

	t.Run("empty", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "queue", "quiet")
		wantCode(t, r, 0)
		if r.stdout != "" || r.stderr != "No queued tasks for hive quiet in namespace "+ns+".\n" {
			t.Errorf("stdout %q, stderr %q", r.stdout, r.stderr)
		}
	})

	t.Run("unknown hive", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "queue", "nope")
		wantCode(t, r, 1)
		wantContains(t, "stderr", r.stderr, `hive "nope" not found in namespace "`+ns+`"`)
	})

	t.Run("at most one hive", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "queue", "echo", "other")
		wantCode(t, r, 1)
		wantContains(t, "stderr", r.stderr, "accepts at most 1 arg(s), received 2")
	})

	t.Run("nothing written", func(t *testing.T) {
		if diff := cmp.Diff(before, versions(ctx, t, ns)); diff != "" {
			t.Errorf("queue changed tasks (-before +after):\n%s", diff)
		}
	})
}

// versions returns the resourceVersion of every task in ns, by name.
func versions(ctx context.Context, t *testing.T, ns string) map[string]string {
	t.Helper()
	list := &swarmv1alpha1.TaskList{}
	if err := env.Client.List(ctx, list, client.InNamespace(ns)); err != nil {
		t.Fatalf("listing tasks: %v", err)
	}
	out := map[string]string{}
	for _, tk := range list.Items {
		out[tk.Name] = tk.ResourceVersion
	}
	return out
}

func TestResults(t *testing.T) {
	testenv.Require(t, env)
	ctx := testenv.Context(t, time.Minute)
	ns := namespace(ctx, t)
	createHive(ctx, t, ns, "echo")
	base := time.Now().Add(-time.Hour)
	finish := func(phase swarmv1alpha1.TaskPhase, at time.Duration, result, message string) func(*swarmv1alpha1.Task) {
		return func(t *swarmv1alpha1.Task) {
			t.Status.Phase, t.Status.Result, t.Status.Message = phase, result, message
			t.Status.FinishedAt = ptr.To(metav1.NewMicroTime(base.Add(at)))
			if phase != swarmv1alpha1.TaskCancelled {
				t.Status.Attempt = 1
				t.Status.AssignedAt = ptr.To(metav1.NewMicroTime(base.Add(at - 1500*time.Millisecond)))
			}
		}
	}
	long := strings.Repeat("0123456789", 10)
	createTask(ctx, t, ns, "third", "echo", finish(swarmv1alpha1.TaskSucceeded, 3*time.Minute, "multi\nline\nresult", ""))
	createTask(ctx, t, ns, "first", "echo", finish(swarmv1alpha1.TaskFailed, time.Minute, "", "attempt 1 failed (AgentFailed): "+long))
	createTask(ctx, t, ns, "second", "echo", finish(swarmv1alpha1.TaskCancelled, 2*time.Minute, "", "cancelled before it ran"))
	createTask(ctx, t, ns, "other-hive", "other", finish(swarmv1alpha1.TaskSucceeded, 4*time.Minute, long, ""))
	createTask(ctx, t, ns, "pending", "echo")

	t.Run("table", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "results", "echo")
		wantCode(t, r, 0)
		want := regexp.MustCompile(`^NAME\s+HIVE\s+PHASE\s+ATTEMPTS\s+QUEUED\s+RAN\s+AGE\s+RESULT/MESSAGE\n` +
			`first\s+echo\s+Failed\s+1\s+\S+\s+1.5s\s+\S+\s+attempt 1 failed \(AgentFailed\): 012345678901234567890123456…\n` +
			`second\s+echo\s+Cancelled\s+0\s+-\s+-\s+\S+\s+cancelled before it ran\n` +
			`third\s+echo\s+Succeeded\s+1\s+\S+\s+1.5s\s+\S+\s+multi line result\n$`)
		if !want.MatchString(r.stdout) {
			t.Errorf("results are not as expected:\n%s", r.stdout)
		}
	})

	t.Run("whole namespace with a limit", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "results", "--limit", "2")
		wantCode(t, r, 0)
		if !regexp.MustCompile(`^NAME.*\nthird\s.*\nother-hive\s+other\s+Succeeded\s.*…\n$`).MatchString(r.stdout) {
			t.Errorf("results are not the newest two:\n%s", r.stdout)
		}
	})

	t.Run("json prints tasks whole", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "results", "-o", "json")
		wantCode(t, r, 0)
		var got struct {
			APIVersion, Kind string
			Items            []swarmv1alpha1.Task
		}
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
			t.Fatalf("output is not a list: %v\n%s", err, r.stdout)
		}
		if got.Kind != "List" || len(got.Items) != 4 || got.Items[3].Name != "other-hive" || got.Items[3].Status.Result != long ||
			got.Items[0].Kind != "Task" || got.Items[0].APIVersion != "swarm.aihub.dev/v1alpha1" || got.Items[0].ManagedFields != nil {
			t.Errorf("list = %+v", got)
		}
	})

	t.Run("yaml", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "results", "echo", "--limit", "1", "-o", "yaml")
		wantCode(t, r, 0)
		wantContains(t, "stdout", r.stdout, "kind: List", "name: third", "result: |-\n")
	})

	t.Run("go-template", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "results", "echo", "-o", "go-template={{range .items}}{{.metadata.name}}={{.status.phase}} {{end}}")
		wantStdout(t, r, "first=Failed second=Cancelled third=Succeeded ")
	})

	t.Run("wide", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "results", "echo", "-o", "wide")
		wantCode(t, r, 0)
		if !regexp.MustCompile(`(?m)^NAME\s.*\sRESULT/MESSAGE\s+AGENT\n(.*\n){2}third\s.*multi line result\s+-\n$`).MatchString(r.stdout) {
			t.Errorf("wide results are not as expected:\n%s", r.stdout)
		}
	})

	t.Run("all namespaces with a selector", func(t *testing.T) {
		label(ctx, t, getTask(ctx, t, ns, "second"), "run", ns)
		r := kubectlHive(ctx, t, "default", "", "results", "-A", "-l", "run="+ns)
		wantCode(t, r, 0)
		if !regexp.MustCompile(`^NAMESPACE\s+NAME\s+HIVE\s.*\n` + ns + `\s+second\s+echo\s+Cancelled\s[^\n]*\n$`).MatchString(r.stdout) {
			t.Errorf("stdout is not the one task labelled:\n%s", r.stdout)
		}
		r = kubectlHive(ctx, t, "default", "", "results", "-A", "echo", "-l", "run="+ns, "-o", "name")
		wantStdout(t, r, "task.swarm.aihub.dev/second\n")
	})

	t.Run("none", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "results", "nope")
		wantCode(t, r, 0)
		if r.stderr != "No finished tasks for hive nope in namespace "+ns+".\n" {
			t.Errorf("stderr %q", r.stderr)
		}
		r = kubectlHive(ctx, t, namespace(ctx, t), "", "results")
		wantContains(t, "stderr", r.stderr, "No finished tasks in namespace ")
	})

	t.Run("bad limit", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "results", "--limit", "-1")
		wantCode(t, r, 1)
		wantContains(t, "stderr", r.stderr, "--limit must be 0")
	})
}

func getTask(ctx context.Context, t *testing.T, ns, name string) *swarmv1alpha1.Task {
	t.Helper()
	tk := &swarmv1alpha1.Task{}
	if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, tk); err != nil {
		t.Fatalf("reading task %s: %v", name, err)
	}
	return tk
}

func TestSubmit(t *testing.T) {
	testenv.Require(t, env)
	ctx := testenv.Context(t, time.Minute)
	ns := namespace(ctx, t)
	createHive(ctx, t, ns, "echo")

	t.Run("generated name", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "submit", "echo", "--input", `{"q": 1}`, "--priority", "7", "--attempt-timeout", "30s", "--max-retries", "0")
		wantCode(t, r, 0)
		name := strings.TrimSpace(r.stdout)
		if !strings.HasPrefix(name, "echo-") || r.stderr != "" {
			t.Fatalf("stdout %q, stderr %q; want a name echo-xxxxx", r.stdout, r.stderr)
		}
		tk := getTask(ctx, t, ns, name)
		if tk.Spec.Hive != "echo" || tk.Spec.Input != `{"q": 1}` || tk.Spec.Priority != 7 ||
			tk.Spec.Timeout.Duration != 30*time.Second || *tk.Spec.MaxRetries != 0 {
			t.Errorf("spec = %+v", tk.Spec)
		}
	})

	t.Run("schema defaults without flags", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "submit", "echo", "--input", "", "--name", "defaults")
		wantCode(t, r, 0)
		tk := getTask(ctx, t, ns, "defaults")
		if tk.Spec.Input != "" || tk.Spec.Timeout.Duration != 10*time.Minute || *tk.Spec.MaxRetries != 3 {
			t.Errorf("spec = %+v", tk.Spec)
		}
	})

	t.Run("file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "input.json")
		if err := os.WriteFile(path, []byte("from a file\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		r := kubectlHive(ctx, t, ns, "", "submit", "echo", "-f", path, "--name", "from-file", "-o", "yaml")
		wantCode(t, r, 0)
		wantContains(t, "stdout", r.stdout, "kind: Task", "name: from-file", "input: |\n    from a file\n")
		if got := getTask(ctx, t, ns, "from-file").Spec.Input; got != "from a file\n" {
			t.Errorf("input = %q", got)
		}
	})

	t.Run("name output", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "submit", "echo", "--input", "x", "--name", "by-name", "-o", "name")
		wantStdout(t, r, "task.swarm.aihub.dev/by-name\n")
	})

	t.Run("client dry run", func(t *testing.T) {
		before := versions(ctx, t, ns)
		r := kubectlHive(ctx, t, ns, "", "submit", "echo", "--input", "dry", "--priority", "3", "--attempt-timeout", "1m", "--dry-run=client", "-o", "yaml")
		wantCode(t, r, 0)
		var tk swarmv1alpha1.Task
		if err := yaml.Unmarshal([]byte(r.stdout), &tk); err != nil {
			t.Fatalf("stdout is not a task: %v\n%s", err, r.stdout)
		}
		want := swarmv1alpha1.TaskSpec{Hive: "echo", Input: "dry", Priority: 3, Timeout: &metav1.Duration{Duration: time.Minute}}
		if tk.Kind != "Task" || tk.APIVersion != "swarm.aihub.dev/v1alpha1" || tk.GenerateName != "echo-" || tk.Namespace != ns ||
			!cmp.Equal(want, tk.Spec) {
			t.Errorf("task = %+v", tk)
		}
		r = kubectlHive(ctx, t, ns, "", "submit", "echo", "--input", "dry", "--name", "dry", "--dry-run=client")
		wantStdout(t, r, "task.swarm.aihub.dev/dry created (dry run)\n")
		// A client dry run reads nothing either: a hive that does not exist is no error.
		r = kubectlHive(ctx, t, ns, "", "submit", "nope", "--input", "dry", "--dry-run=client", "-o", "name")
		wantCode(t, r, 0)
		if diff := cmp.Diff(before, versions(ctx, t, ns)); diff != "" {
			t.Errorf("a dry run changed tasks (-before +after):\n%s", diff)
		}
	})

	t.Run("server dry run", func(t *testing.T) {
		before := versions(ctx, t, ns)
		r := kubectlHive(ctx, t, ns, "", "submit", "echo", "--input", "dry", "--dry-run=server", "-o", "jsonpath={.metadata.name} {.spec.timeout} {.spec.maxRetries}")
		wantCode(t, r, 0)
		// The API server generated the name and applied the schema's defaults.
		if !regexp.MustCompile(`^echo-\w{5} 10m0s 3$`).MatchString(r.stdout) {
			t.Errorf("stdout = %q", r.stdout)
		}
		r = kubectlHive(ctx, t, ns, "", "submit", "echo", "--input", "dry", "--name", "dry", "--dry-run=server")
		wantStdout(t, r, "task.swarm.aihub.dev/dry created (server dry run)\n")
		r = kubectlHive(ctx, t, ns, "", "submit", "echo", "--input", "x", "--priority", "5000", "--dry-run=server")
		wantCode(t, r, 1)
		wantContains(t, "stderr", r.stderr, "spec.priority")
		if diff := cmp.Diff(before, versions(ctx, t, ns)); diff != "" {
			t.Errorf("a dry run changed tasks (-before +after):\n%s", diff)
		}
	})

	t.Run("stdin", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "from stdin", "submit", "echo", "-f", "-", "--name", "from-stdin")
		wantCode(t, r, 0)
		if got := getTask(ctx, t, ns, "from-stdin").Spec.Input; got != "from stdin" {
			t.Errorf("input = %q", got)
		}
	})

	t.Run("input too large", func(t *testing.T) {
		big := strings.Repeat("é", swarmv1alpha1.MaxInputLength+1)
		r := kubectlHive(ctx, t, ns, "", "submit", "echo", "--input", big, "--name", "big")
		wantCode(t, r, 1)
		wantContains(t, "stderr", r.stderr, "the input has 65537 characters, but a task's input holds at most 65536")
		r = kubectlHive(ctx, t, ns, strings.Repeat("x", 5*swarmv1alpha1.MaxInputLength), "submit", "echo", "-f", "-", "--name", "big")
		wantCode(t, r, 1)
		wantContains(t, "stderr", r.stderr, "the input has more than 65536 characters")
		// Exactly the limit passes.
		r = kubectlHive(ctx, t, ns, strings.Repeat("é", swarmv1alpha1.MaxInputLength), "submit", "echo", "-f", "-", "--name", "just-fits")
		wantCode(t, r, 0)
		err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "big"}, &swarmv1alpha1.Task{})
		if !apierrors.IsNotFound(err) {
			t.Errorf("a task too large was sent: %v", err)
		}
	})

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no input", []string{"submit", "echo"}, "the task needs an input: pass --input TEXT, or -f FILE"},
		{"two inputs", []string{"submit", "echo", "--input", "x", "-f", "-"}, "give the input either with --input or with -f, not both"},
		{"missing file", []string{"submit", "echo", "-f", "/does/not/exist"}, "reading the input: open /does/not/exist"},
		{"unknown hive", []string{"submit", "nope", "--input", "x"}, `hive "nope" not found in namespace "` + ns + `"`},
		{"taken name", []string{"submit", "echo", "--input", "x", "--name", "defaults"}, `task "defaults" already exists in namespace "` + ns + `": choose another --name`},
		{"bad attempt timeout", []string{"submit", "echo", "--input", "x", "--attempt-timeout", "0s"}, "--attempt-timeout must be longer than 0s"},
		{"bad retries", []string{"submit", "echo", "--input", "x", "--max-retries", "-1"}, "--max-retries must be 0 or more"},
		{"timeout without wait", []string{"submit", "echo", "--input", "x", "--timeout", "1s"}, "--timeout bounds the wait and applies only with --wait: add --wait, or bound each attempt of the task with --attempt-timeout"},
		{"negative timeout", []string{"submit", "echo", "--input", "x", "--wait", "--timeout", "-1s"}, "--timeout must be 0"},
		{"no table", []string{"submit", "echo", "--input", "x", "-o", "wide"}, `unsupported output format "wide": use one of json, yaml`},
		{"bad jsonpath", []string{"submit", "echo", "--input", "x", "-o", "jsonpath={.spec"}, "-o jsonpath={.spec: "},
		{"bad dry run", []string{"submit", "echo", "--input", "x", "--dry-run", "yes"}, `--dry-run must be none, client or server, not "yes"`},
		{"dry run and wait", []string{"submit", "echo", "--input", "x", "--dry-run", "server", "--wait"}, "a dry run creates no task to wait for"},
		{"refused by the schema", []string{"submit", "echo", "--input", "x", "--priority", "5000"}, "creating a task for hive \"echo\""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := kubectlHive(ctx, t, ns, "", tc.args...)
			wantCode(t, r, 1)
			wantContains(t, "stderr", r.stderr, "error: "+tc.want)
		})
	}
}

// agent plays the agent of a task: it waits for the task to exist, binds it to a fake
// agent, reports it running, then finishes it with finish. It reports its errors to the
// test.
func agent(ctx context.Context, t *testing.T, ns, name string, finish func(*swarmv1alpha1.TaskStatus)) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := &swarmv1alpha1.Task{}
		for {
			err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, tk)
			if err == nil {
				break
			}
			if !apierrors.IsNotFound(err) || ctx.Err() != nil {
				t.Errorf("waiting for task %s: %v", name, err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		steps := []func(*swarmv1alpha1.TaskStatus){
			func(s *swarmv1alpha1.TaskStatus) {
				s.Phase, s.Agent, s.Attempt, s.AssignedAt = swarmv1alpha1.TaskAssigned, "fake-agent", 1, ptr.To(metav1.NowMicro())
			},
			func(s *swarmv1alpha1.TaskStatus) {
				s.Phase, s.StartedAt = swarmv1alpha1.TaskRunning, ptr.To(metav1.NowMicro())
			},
			func(s *swarmv1alpha1.TaskStatus) {
				finish(s)
				s.FinishedAt = ptr.To(metav1.NowMicro())
			},
		}
		for _, step := range steps {
			time.Sleep(50 * time.Millisecond)
			patchStatus(ctx, t, tk, step)
		}
	}()
	return done
}

func TestSubmitWait(t *testing.T) {
	testenv.Require(t, env)
	ctx := testenv.Context(t, time.Minute)
	ns := namespace(ctx, t)
	createHive(ctx, t, ns, "echo")

	t.Run("succeeded", func(t *testing.T) {
		done := agent(ctx, t, ns, "ok", func(s *swarmv1alpha1.TaskStatus) {
			s.Phase, s.Result = swarmv1alpha1.TaskSucceeded, `{"answer": 42}`
		})
		r := kubectlHive(ctx, t, ns, "", "submit", "echo", "--input", "q", "--name", "ok", "--wait", "--timeout", "30s")
		<-done
		wantCode(t, r, 0)
		if r.stdout != "{\"answer\": 42}\n" {
			t.Errorf("stdout = %q, want the result", r.stdout)
		}
		// Not a terminal: one plain line per change.
		wantContains(t, "stderr", r.stderr,
			"task ok: Pending, 0s elapsed\n",
			"task ok: Assigned on agent fake-agent, attempt 1, ",
			"task ok: Running on agent fake-agent, attempt 1, ",
			"task ok: Succeeded on agent fake-agent, attempt 1, ")
		if strings.Contains(r.stderr, "\r") {
			t.Errorf("stderr is not a terminal but the line was rewritten: %q", r.stderr)
		}
	})

	t.Run("succeeded as json", func(t *testing.T) {
		done := agent(ctx, t, ns, "ok-json", func(s *swarmv1alpha1.TaskStatus) {
			s.Phase, s.Result = swarmv1alpha1.TaskSucceeded, "done\n"
		})
		r := kubectlHive(ctx, t, ns, "", "submit", "echo", "--input", "q", "--name", "ok-json", "--wait", "-o", "json")
		<-done
		wantCode(t, r, 0)
		var tk swarmv1alpha1.Task
		if err := json.Unmarshal([]byte(r.stdout), &tk); err != nil || tk.Status.Result != "done\n" || tk.Kind != "Task" {
			t.Errorf("stdout is not the finished task (%v):\n%s", err, r.stdout)
		}
	})

	t.Run("failed", func(t *testing.T) {
		done := agent(ctx, t, ns, "bad", func(s *swarmv1alpha1.TaskStatus) {
			s.Phase, s.Message = swarmv1alpha1.TaskFailed, "attempt 1 on agent fake-agent failed (AgentFailed): exit status 3; no retries left"
		})
		r := kubectlHive(ctx, t, ns, "", "submit", "echo", "--input", "q", "--name", "bad", "--wait")
		<-done
		wantCode(t, r, 1)
		if r.stdout != "" {
			t.Errorf("stdout = %q, want nothing", r.stdout)
		}
		wantContains(t, "stderr", r.stderr,
			"error: task bad failed after 1 attempt(s): attempt 1 on agent fake-agent failed (AgentFailed): exit status 3; no retries left\n")
	})

	t.Run("cancelled", func(t *testing.T) {
		done := agent(ctx, t, ns, "stop", func(s *swarmv1alpha1.TaskStatus) {
			s.Phase, s.Message = swarmv1alpha1.TaskCancelled, "cancelled by its agent"
		})
		r := kubectlHive(ctx, t, ns, "", "submit", "echo", "--input", "q", "--name", "stop", "--wait")
		<-done
		wantCode(t, r, 1)
		wantContains(t, "stderr", r.stderr, "error: task stop was cancelled: cancelled by its agent\n")
	})

	t.Run("timeout", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "submit", "echo", "--input", "q", "--name", "slow", "--wait", "--timeout", "300ms")
		wantCode(t, r, 2)
		wantContains(t, "stderr", r.stderr,
			"task slow: Pending, 0s elapsed\n",
			"error: gave up waiting for task slow after 300ms (it was Pending); it keeps going: follow it with `kubectl get task slow -n "+ns+"`")
	})

	t.Run("deprecated wait timeout", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "submit", "echo", "--input", "q", "--name", "slow-too", "--wait", "--wait-timeout", "300ms")
		wantCode(t, r, 2)
		wantContains(t, "stderr", r.stderr, "Flag --wait-timeout has been deprecated, use --timeout", "error: gave up waiting for task slow-too after 300ms")
		if r.stdout != "" {
			t.Errorf("stdout = %q, want nothing", r.stdout)
		}
	})

	t.Run("deleted while waiting", func(t *testing.T) {
		go func() {
			tk := &swarmv1alpha1.Task{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "gone"}}
			for ctx.Err() == nil {
				time.Sleep(50 * time.Millisecond)
				if err := env.Client.Delete(ctx, tk); err == nil {
					return
				}
			}
		}()
		r := kubectlHive(ctx, t, ns, "", "submit", "echo", "--input", "q", "--name", "gone", "--wait", "--timeout", "20s")
		wantCode(t, r, 1)
		wantContains(t, "stderr", r.stderr, "error: task gone was deleted while waiting for it to finish")
	})

	t.Run("interrupted", func(t *testing.T) {
		ictx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		r := kubectlHive(ictx, t, ns, "", "submit", "echo", "--input", "q", "--name", "interrupted", "--wait")
		wantCode(t, r, 1)
		wantContains(t, "stderr", r.stderr, "error: stopped waiting for task interrupted; it keeps going")
	})

	t.Run("progress on a terminal", func(t *testing.T) {
		done := agent(ctx, t, ns, "tty", func(s *swarmv1alpha1.TaskStatus) {
			s.Phase, s.Result = swarmv1alpha1.TaskSucceeded, "fine"
		})
		var out, errOut bytes.Buffer
		o := newOptions(genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
		o.isTerminal = func(io.Writer) bool { return true }
		code := execute(ctx, o, []string{"--kubeconfig", kubeconfig(t), "-n", ns, "submit", "echo", "--input", "q", "--name", "tty", "--wait"})
		<-done
		if code != 0 || out.String() != "fine\n" {
			t.Fatalf("exit %d, stdout %q, stderr %q", code, out.String(), errOut.String())
		}
		// One line, rewritten in place, ended once.
		got := errOut.String()
		if !strings.HasPrefix(got, "\rtask tty: Pending, 0s elapsed") || !strings.Contains(got, "\rtask tty: Succeeded") ||
			strings.Count(got, "\n") != 1 || !strings.HasSuffix(got, "\n") {
			t.Errorf("stderr = %q", got)
		}
	})
}

func TestBadKubeconfig(t *testing.T) {
	var out, errOut bytes.Buffer
	streams := genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
	for _, cmd := range [][]string{{"status"}, {"queue", "h"}, {"results"}, {"submit", "h", "--input", "x"}} {
		errOut.Reset()
		code := run(t.Context(), append([]string{"--kubeconfig", filepath.Join(t.TempDir(), "missing")}, cmd...), streams)
		if code != 1 || !strings.Contains(errOut.String(), "kubeconfig") {
			t.Errorf("%v: exit %d, stderr %q; want 1 and a word about the kubeconfig", cmd, code, errOut.String())
		}
	}
}

func TestHelp(t *testing.T) {
	var out, errOut bytes.Buffer
	code := run(t.Context(), []string{"--help"}, genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	wantContains(t, "help", out.String(), "kubectl hive [command]", "status", "submit", "request", "queue", "results", "--kubeconfig", "--namespace")
}

// syncBuffer is a buffer a command writes to while a test reads it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// watching is a command running in the background until its context is cancelled.
type watching struct {
	out, errOut *syncBuffer
	cancel      context.CancelFunc
	code        chan int
}

func startKubectlHive(ctx context.Context, t *testing.T, ns string, args ...string) *watching {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	w := &watching{out: &syncBuffer{}, errOut: &syncBuffer{}, cancel: cancel, code: make(chan int, 1)}
	streams := genericiooptions.IOStreams{In: strings.NewReader(""), Out: w.out, ErrOut: w.errOut}
	args = append([]string{"--kubeconfig", kubeconfig(t), "-n", ns}, args...)
	go func() { w.code <- run(ctx, args, streams) }()
	t.Cleanup(cancel)
	return w
}

// waitOutput waits until the command printed n times what matches re.
func (w *watching) waitOutput(t *testing.T, re string, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for len(regexp.MustCompile(re).FindAllString(w.out.String(), -1)) < n {
		select {
		case code := <-w.code:
			t.Fatalf("exited with %d before printing %q %d times\nstdout:\n%s\nstderr:\n%s", code, re, n, w.out.String(), w.errOut.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("did not print %q %d times in 20s\nstdout:\n%s\nstderr:\n%s", re, n, w.out.String(), w.errOut.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop interrupts the command, and wants it to stop with exit code 0.
func (w *watching) stop(t *testing.T) {
	t.Helper()
	w.cancel()
	select {
	case code := <-w.code:
		if code != 0 {
			t.Errorf("exit code %d after an interrupt, want 0\nstderr:\n%s", code, w.errOut.String())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("still running 10s after an interrupt")
	}
}

func TestWatch(t *testing.T) {
	testenv.Require(t, env)
	ctx := testenv.Context(t, time.Minute)
	ns := namespace(ctx, t)
	echo := createHive(ctx, t, ns, "echo")
	createTask(ctx, t, ns, "first", "echo")

	t.Run("queue", func(t *testing.T) {
		w := startKubectlHive(ctx, t, ns, "queue", "echo", "--watch")
		w.waitOutput(t, `(?m)^1\s+first\s`, 1)
		createTask(ctx, t, ns, "urgent", "echo", func(t *swarmv1alpha1.Task) { t.Spec.Priority = 10 })
		w.waitOutput(t, `(?m)^1\s+urgent\s+10\s+\S+\s*\n2\s+first\s`, 1)
		w.stop(t)
		// The whole queue again, with its header, after a blank line.
		if !regexp.MustCompile(`^POSITION\s.*\n1\s+first\s[^\n]*\n\nPOSITION\s`).MatchString(w.out.String()) {
			t.Errorf("stdout = %q", w.out.String())
		}
	})

	t.Run("status", func(t *testing.T) {
		w := startKubectlHive(ctx, t, ns, "status", "echo", "-w")
		w.waitOutput(t, `No agent pods\.`, 1)
		createAgent(ctx, t, echo, "echo-a", "r1", true, false)
		w.waitOutput(t, `(?m)^echo-a\s+idle\s+0\s+true\s+r1\s`, 1)
		w.waitOutput(t, `Agents:     1/3 ready; 0 starting, 1 idle`, 1)
		w.stop(t)
	})

	t.Run("the hive goes", func(t *testing.T) {
		w := startKubectlHive(ctx, t, ns, "status", "echo", "--watch", "-o", "name")
		w.waitOutput(t, `hive.swarm.aihub.dev/echo\n`, 1)
		if err := env.Client.Delete(ctx, echo); err != nil {
			t.Fatal(err)
		}
		select {
		case code := <-w.code:
			if code != 1 || !strings.Contains(w.errOut.String(), `error: hive "echo" not found`) {
				t.Errorf("exit %d, stderr %q; want 1 and the hive not found", code, w.errOut.String())
			}
		case <-time.After(20 * time.Second):
			t.Fatal("still watching a hive deleted 20s ago")
		}
	})

	t.Run("unknown hive", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "queue", "nope", "--watch")
		wantCode(t, r, 1)
		wantContains(t, "stderr", r.stderr, `hive "nope" not found`)
	})
}

func TestCompletion(t *testing.T) {
	testenv.Require(t, env)
	ctx := testenv.Context(t, time.Minute)
	ns := namespace(ctx, t)
	createHive(ctx, t, ns, "echo")
	createHive(ctx, t, ns, "embed")
	createHive(ctx, t, ns, "web")
	complete := func(args ...string) result {
		var out, errOut bytes.Buffer
		streams := genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
		code := run(ctx, append([]string{"__complete"}, args...), streams)
		return result{out.String(), errOut.String(), code}
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"status", ""}, "echo\nembed\nweb\n:4\n"},
		{[]string{"queue", "e"}, "echo\nembed\n:4\n"},
		{[]string{"results", "w"}, "web\n:4\n"},
		{[]string{"submit", "emb"}, "embed\n:4\n"},
		// One hive only: nothing more to complete, and no file names either.
		{[]string{"submit", "echo", ""}, ":4\n"},
	} {
		r := complete(append([]string{"--kubeconfig", kubeconfig(t), "-n", ns}, tc.args...)...)
		if r.code != 0 || r.stdout != tc.want {
			t.Errorf("completing %q: exit %d, stdout %q, want %q (stderr %q)", tc.args, r.code, r.stdout, tc.want, r.stderr)
		}
	}

	r := complete("--kubeconfig", kubeconfig(t), "-n", ns, "status", "-o", "")
	wantContains(t, "-o completions", r.stdout, "wide\n", "json\n", "jsonpath\n", ":4\n")

	// An error is said on stderr, which shells hide, and completes nothing.
	r = complete("--kubeconfig", filepath.Join(t.TempDir(), "missing"), "status", "")
	if r.stdout != ":1\n" || !strings.Contains(r.stderr, "error: ") || !strings.Contains(r.stderr, "kubeconfig") {
		t.Errorf("stdout %q, stderr %q; want no completions and the error", r.stdout, r.stderr)
	}
}

func TestCompletionScript(t *testing.T) {
	// kubectl runs kubectl_complete-hive with the words after "kubectl hive"; it must hand
	// them to the plugin's __complete. A kubectl that prints its arguments stands in.
	dir := t.TempDir()
	fake := "#!/bin/sh\necho \"$@\"\n"
	if err := os.WriteFile(filepath.Join(dir, "kubectl"), []byte(fake), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
	script, err := filepath.Abs("kubectl_complete-hive")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(script, "status", "-n", "agents", "").Output()
	if err != nil {
		t.Fatalf("running %s (it must be executable): %v", script, err)
	}
	if string(out) != "hive __complete status -n agents \n" {
		t.Errorf("the script ran kubectl %q", out)
	}
}

func TestServerWarnings(t *testing.T) {
	testenv.Require(t, env)
	ctx := testenv.Context(t, time.Minute)
	ns := namespace(ctx, t)
	createHive(ctx, t, ns, "echo")
	// A ValidatingAdmissionPolicy in Warn mode makes the API server answer with a warning,
	// as it does for a deprecated API.
	policy := &admissionregistrationv1.ValidatingAdmissionPolicy{
		ObjectMeta: metav1.ObjectMeta{Name: ns},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicySpec{
			MatchConstraints: &admissionregistrationv1.MatchResources{
				ResourceRules: []admissionregistrationv1.NamedRuleWithOperations{{
					RuleWithOperations: admissionregistrationv1.RuleWithOperations{
						Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
						Rule: admissionregistrationv1.Rule{
							APIGroups: []string{swarmv1alpha1.GroupVersion.Group}, APIVersions: []string{"*"}, Resources: []string{"tasks"},
						},
					},
				}},
			},
			Validations: []admissionregistrationv1.Validation{{Expression: "object.spec.priority < 100", Message: "priorities of 100 and more are for incidents"}},
		},
	}
	binding := &admissionregistrationv1.ValidatingAdmissionPolicyBinding{
		ObjectMeta: metav1.ObjectMeta{Name: ns},
		Spec: admissionregistrationv1.ValidatingAdmissionPolicyBindingSpec{
			PolicyName:        policy.Name,
			ValidationActions: []admissionregistrationv1.ValidationAction{admissionregistrationv1.Warn},
			MatchResources: &admissionregistrationv1.MatchResources{NamespaceSelector: &metav1.LabelSelector{
				MatchLabels: map[string]string{corev1.LabelMetadataName: ns},
			}},
		},
	}
	for _, obj := range []client.Object{policy, binding} {
		if err := env.Client.Create(ctx, obj); err != nil {
			t.Fatalf("creating %s: %v", obj.GetName(), err)
		}
		t.Cleanup(func() { _ = env.Client.Delete(context.Background(), obj) })
	}

	// The API server applies a new policy within a few seconds.
	deadline := time.Now().Add(30 * time.Second)
	for {
		r := kubectlHive(ctx, t, ns, "", "submit", "echo", "--input", "x", "--priority", "500", "--dry-run=server")
		wantCode(t, r, 0)
		if strings.Contains(r.stderr, "Warning: ") {
			wantContains(t, "stderr", r.stderr, "priorities of 100 and more are for incidents\n")
			if strings.Count(r.stderr, "Warning: ") != 1 {
				t.Errorf("stderr = %q, want the warning once", r.stderr)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no warning on stderr 30s after the policy was created: %q", r.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func TestForbidden(t *testing.T) {
	testenv.Require(t, env)
	ctx := testenv.Context(t, time.Minute)
	ns := namespace(ctx, t)
	createHive(ctx, t, ns, "echo")
	// A user who may read and create, but not watch.
	user, err := env.ControlPlane().AddUser(envtest.User{Name: "watchless-" + ns}, nil)
	if err != nil {
		t.Fatalf("adding a user: %v", err)
	}
	kc, err := user.KubeConfig()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(path, kc, 0o600); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "watchless"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{swarmv1alpha1.GroupVersion.Group}, Resources: []string{"hives", "tasks"}, Verbs: []string{"get", "list", "create"}},
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}},
		},
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "watchless"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: "watchless-" + ns}},
	}
	for _, obj := range []client.Object{role, binding} {
		if err := env.Client.Create(ctx, obj); err != nil {
			t.Fatalf("creating %s: %v", obj.GetName(), err)
		}
	}
	as := func(args ...string) result {
		var out, errOut bytes.Buffer
		streams := genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
		code := run(ctx, append([]string{"--kubeconfig", path, "-n", ns}, args...), streams)
		return result{out.String(), errOut.String(), code}
	}

	r := as("status", "echo")
	wantCode(t, r, 0)

	// Informers retry what fails; a watch that is forbidden must end the command instead,
	// saying what to do.
	r = as("status", "echo", "--watch")
	wantCode(t, r, 1)
	wantContains(t, "stderr", r.stderr, "forbidden", "ask for access, or check --context and --namespace")

	r = as("submit", "echo", "--input", "x", "--name", "unwatched", "--wait", "--timeout", "30s")
	wantCode(t, r, 1)
	wantContains(t, "stderr", r.stderr, "error: watching task unwatched: ", "ask for access")

	// Another namespace: not even hives can be listed there, for completion either.
	r = as("-n", "default", "__complete", "status", "")
	if r.stdout != ":1\n" || !strings.Contains(r.stderr, `error: listing hives in namespace "default": `) || !strings.Contains(r.stderr, "ask for access") {
		t.Errorf("completion: stdout %q, stderr %q", r.stdout, r.stderr)
	}
}
