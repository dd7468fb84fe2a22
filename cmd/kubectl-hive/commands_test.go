package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
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

func wantCode(t *testing.T, r result, code int) {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
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

	t.Run("json", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "status", "echo", "-o", "json")
		wantCode(t, r, 0)
		var s HiveSummary
		if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
			t.Fatalf("output is not a summary: %v\n%s", err, r.stdout)
		}
		if s.Name != "echo" || s.Agents != (AgentCounts{Starting: 1, Idle: 1, Busy: 1, Draining: 1}) ||
			s.Queue != (QueueCounts{Pending: 2, Blocked: 1, Running: 1}) || len(s.Problems) != 2 || len(s.Pods) != 4 {
			t.Errorf("summary = %+v", s)
		}
	})

	t.Run("yaml of all", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "status", "-o", "yaml")
		wantCode(t, r, 0)
		var got struct{ Items []HiveSummary }
		if err := yaml.Unmarshal([]byte(r.stdout), &got); err != nil || len(got.Items) != 2 {
			t.Fatalf("output is not a list of two summaries (%v):\n%s", err, r.stdout)
		}
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
		r := kubectlHive(ctx, t, ns, "", "status", "-o", "wide")
		wantCode(t, r, 1)
		wantContains(t, "stderr", r.stderr, `unsupported output format "wide"`)
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
	createTask(ctx, t, ns, "b-second", "echo")
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

	t.Run("json", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "queue", "echo", "-o", "json")
		wantCode(t, r, 0)
		var got queueOutput
		if err := json.Unmarshal([]byte(r.stdout), &got); err != nil {
			t.Fatalf("output is not a queue: %v\n%s", err, r.stdout)
		}
		if got.Hive != "echo" || got.Namespace != ns || len(got.Items) != 6 ||
			got.Items[0].Position != 1 || got.Items[0].Name != "z-urgent" || !got.Items[0].Dispatchable ||
			got.Items[5].Position != 0 || got.Items[5].Dispatchable || got.Items[5].Note == "" || got.Items[0].WaitingText == "" {
			t.Errorf("queue = %+v", got)
		}
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

	t.Run("needs a hive", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "queue")
		wantCode(t, r, 1)
		wantContains(t, "stderr", r.stderr, "accepts 1 arg(s), received 0")
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

	t.Run("none", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "results", "nope")
		wantCode(t, r, 0)
		if r.stderr != "No finished tasks for hive nope in namespace "+ns+".\n" {
			t.Errorf("stderr %q", r.stderr)
		}
		r = kubectlHive(ctx, t, namespace(ctx, t), "", "results")
		wantContains(t, "stderr", r.stderr, "No finished tasks for namespace ")
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
		r := kubectlHive(ctx, t, ns, "", "submit", "echo", "--input", `{"q": 1}`, "--priority", "7", "--timeout", "30s", "--max-retries", "0")
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
		{"bad timeout", []string{"submit", "echo", "--input", "x", "--timeout", "0s"}, "--timeout must be longer than 0s"},
		{"bad retries", []string{"submit", "echo", "--input", "x", "--max-retries", "-1"}, "--max-retries must be 0 or more"},
		{"wait timeout alone", []string{"submit", "echo", "--input", "x", "--wait-timeout", "1s"}, "--wait-timeout only applies with --wait"},
		{"negative wait timeout", []string{"submit", "echo", "--input", "x", "--wait", "--wait-timeout", "-1s"}, "--wait-timeout must be 0"},
		{"bad output", []string{"submit", "echo", "--input", "x", "-o", "name"}, `unsupported output format "name"`},
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
		r := kubectlHive(ctx, t, ns, "", "submit", "echo", "--input", "q", "--name", "ok", "--wait", "--wait-timeout", "30s")
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

	t.Run("wait timeout", func(t *testing.T) {
		r := kubectlHive(ctx, t, ns, "", "submit", "echo", "--input", "q", "--name", "slow", "--wait", "--wait-timeout", "300ms")
		wantCode(t, r, 2)
		wantContains(t, "stderr", r.stderr,
			"task slow: Pending, 0s elapsed\n",
			"error: gave up waiting for task slow after 300ms (it was Pending); it keeps going: follow it with `kubectl get task slow -n "+ns+"`")
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
		r := kubectlHive(ctx, t, ns, "", "submit", "echo", "--input", "q", "--name", "gone", "--wait", "--wait-timeout", "20s")
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
	wantContains(t, "help", out.String(), "kubectl hive [command]", "status", "submit", "queue", "results", "--kubeconfig", "--namespace")
}
