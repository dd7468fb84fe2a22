package v1alpha1_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Run(m, &env)) }

const hiveYAML = `
apiVersion: swarm.aihub.dev/v1alpha1
kind: Hive
metadata:
  name: h
spec:
  replicas: 2
  agent:
    concurrency: 2
    capabilities: [gpu]
  template:
    spec:
      containers:
      - name: agent
        image: example.com/agent:v1
`

const taskYAML = `
apiVersion: swarm.aihub.dev/v1alpha1
kind: Task
metadata:
  name: t
spec:
  hive: h
  input: '{"q": 1}'
`

func parse(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(doc), &u.Object); err != nil {
		t.Fatalf("parsing manifest: %v", err)
	}
	return u
}

// set returns a mutation that sets a field, given as a dotted path, to a value.
func set(path string, value any) func(*unstructured.Unstructured) {
	return func(u *unstructured.Unstructured) {
		if err := unstructured.SetNestedField(u.Object, value, strings.Split(path, ".")...); err != nil {
			panic(fmt.Sprintf("setting %s: %v", path, err))
		}
	}
}

func unset(path string) func(*unstructured.Unstructured) {
	return func(u *unstructured.Unstructured) {
		unstructured.RemoveNestedField(u.Object, strings.Split(path, ".")...)
	}
}

// namespace creates a fresh namespace for one test.
func namespace(t *testing.T) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "validation-"}}
	if err := env.Client.Create(t.Context(), ns); err != nil {
		t.Fatalf("creating namespace: %v", err)
	}
	return ns.Name
}

// TestInvalidManifestsAreRejected applies manifests a user could plausibly write wrong and
// checks that each is refused with a message naming the field and what to do.
func TestInvalidManifestsAreRejected(t *testing.T) {
	testenv.Require(t, env)
	ns := namespace(t)
	longName := strings.Repeat("a", 64)

	cases := map[string]struct {
		base    string
		mutate  []func(*unstructured.Unstructured)
		wantErr string
	}{
		"hive: negative replicas": {
			base: hiveYAML, mutate: muts(set("spec.replicas", int64(-1))),
			wantErr: "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0",
		},
		"hive: overflowing replicas": {
			base: hiveYAML, mutate: muts(set("spec.replicas", int64(1)<<40)),
			wantErr: "spec.replicas in body should be less than or equal to 10000",
		},
		"hive: zero concurrency": {
			base: hiveYAML, mutate: muts(set("spec.agent.concurrency", int64(0))),
			wantErr: "spec.agent.concurrency in body should be greater than or equal to 1",
		},
		"hive: concurrency above the cap": {
			base: hiveYAML, mutate: muts(set("spec.agent.concurrency", int64(5000))),
			wantErr: "spec.agent.concurrency in body should be less than or equal to 1000",
		},
		"hive: a cap of no finished tasks": {
			base: hiveYAML, mutate: muts(set("spec.taskRetention.maxFinishedTasks", int64(0))),
			wantErr: "spec.taskRetention.maxFinishedTasks in body should be greater than or equal to 1",
		},
		"hive: a negative retention": {
			base: hiveYAML, mutate: muts(set("spec.taskRetention.ttlSecondsAfterFinished", int64(-1))),
			wantErr: "spec.taskRetention.ttlSecondsAfterFinished in body should be greater than or equal to 0",
		},
		"hive: no serving slots": {
			base: hiveYAML, mutate: muts(set("spec.serving.concurrency", int64(0))),
			wantErr: "spec.serving.concurrency in body should be greater than or equal to 1",
		},
		"hive: serving port out of range": {
			base: hiveYAML, mutate: muts(set("spec.serving.port", int64(70000))),
			wantErr: "spec.serving.port in body should be less than or equal to 65535",
		},
		"hive: a negative request queue": {
			base: hiveYAML, mutate: muts(set("spec.serving.queueLength", int64(-1))),
			wantErr: "spec.serving.queueLength in body should be greater than or equal to 0",
		},
		"hive: a request queue timeout of an hour": {
			base: hiveYAML, mutate: muts(set("spec.serving.queueTimeout", "1h")),
			wantErr: "serving.queueTimeout must be a duration between 0s and 10m, such as 10s",
		},
		"hive: a request queue timeout that is no duration": {
			base: hiveYAML, mutate: muts(set("spec.serving.queueTimeout", "soon")),
			wantErr: "serving.queueTimeout must be a duration between 0s and 10m, such as 10s",
		},
		"hive: malformed capability": {
			base: hiveYAML, mutate: muts(set("spec.agent.capabilities", []any{"GPU!"})),
			wantErr: "spec.agent.capabilities: Invalid value: each capability must be a lowercase name",
		},
		"hive: capability too long": {
			base: hiveYAML, mutate: muts(set("spec.agent.capabilities", []any{longName})),
			wantErr: "spec.agent.capabilities[0]: Too long: may not be more than 63 bytes",
		},
		"hive: duplicate capability": {
			base: hiveYAML, mutate: muts(set("spec.agent.capabilities", []any{"gpu", "gpu"})),
			wantErr: "spec.agent.capabilities[1]: Duplicate value: \"gpu\"",
		},
		"hive: min above max": {
			base: hiveYAML, mutate: muts(set("spec.autoscaling", map[string]any{"minReplicas": int64(5), "maxReplicas": int64(2)})),
			wantErr: "autoscaling.minReplicas must be less than or equal to autoscaling.maxReplicas",
		},
		"hive: autoscaling without max": {
			base: hiveYAML, mutate: muts(set("spec.autoscaling", map[string]any{"minReplicas": int64(0)})),
			wantErr: "spec.autoscaling.maxReplicas: Required value",
		},
		"hive: zero max replicas": {
			base: hiveYAML, mutate: muts(set("spec.autoscaling", map[string]any{"maxReplicas": int64(0)})),
			wantErr: "spec.autoscaling.maxReplicas in body should be greater than or equal to 1",
		},
		"hive: zero target utilisation": {
			base: hiveYAML, mutate: muts(set("spec.autoscaling", map[string]any{"maxReplicas": int64(3), "targetUtilizationPercent": int64(0)})),
			wantErr: "spec.autoscaling.targetUtilizationPercent in body should be greater than or equal to 1",
		},
		"hive: scale-down window in words": {
			base: hiveYAML, mutate: muts(set("spec.autoscaling", map[string]any{"maxReplicas": int64(3), "scaleDownWindow": "5 minutes"})),
			wantErr: "scaleDownWindow must be a duration between 0s and 24h, such as 1m or 5m",
		},
		"hive: scale-down window too long": {
			base: hiveYAML, mutate: muts(set("spec.autoscaling", map[string]any{"maxReplicas": int64(3), "scaleDownWindow": "48h"})),
			wantErr: "scaleDownWindow must be a duration between 0s and 24h",
		},
		"hive: negative idle timeout": {
			base: hiveYAML, mutate: muts(set("spec.autoscaling", map[string]any{"maxReplicas": int64(3), "idleTimeout": "-1s"})),
			wantErr: "idleTimeout must be a duration between 0s and 168h",
		},
		"hive: zero scale-up step": {
			base: hiveYAML, mutate: muts(set("spec.autoscaling", map[string]any{"maxReplicas": int64(3), "maxScaleUpStep": int64(0)})),
			wantErr: "spec.autoscaling.maxScaleUpStep in body should be greater than or equal to 1",
		},
		"hive: surge without percent sign": {
			base: hiveYAML, mutate: muts(set("spec.rollout.maxSurge", "150")),
			wantErr: "maxSurge must be a non-negative number or a percentage, such as 1 or 25%",
		},
		"hive: surge not a number": {
			base: hiveYAML, mutate: muts(set("spec.rollout.maxSurge", "lots%")),
			wantErr: "maxSurge must be a non-negative number or a percentage",
		},
		"hive: negative surge": {
			base: hiveYAML, mutate: muts(set("spec.rollout.maxSurge", int64(-1))),
			wantErr: "maxSurge must be a non-negative number or a percentage",
		},
		"hive: unavailable above 100%": {
			base: hiveYAML, mutate: muts(set("spec.rollout.maxUnavailable", "101%")),
			wantErr: "maxUnavailable must be a non-negative number or a percentage between 0% and 100%",
		},
		"hive: surge and unavailable both zero": {
			base: hiveYAML, mutate: muts(set("spec.rollout.maxSurge", int64(0)), set("spec.rollout.maxUnavailable", "0%")),
			wantErr: "rollout.maxSurge and rollout.maxUnavailable must not both be 0",
		},
		"hive: drain timeout in words": {
			base: hiveYAML, mutate: muts(set("spec.rollout.drainTimeout", "forever")),
			wantErr: "drainTimeout must be a duration between 0s and 168h, such as 30s or 10m",
		},
		"hive: disruption above 100%": {
			base: hiveYAML, mutate: muts(set("spec.disruption.maxUnavailable", "200%")),
			wantErr: "disruption.maxUnavailable must be a non-negative number or a percentage between 0% and 100%",
		},
		"hive: name too long for a label": {
			base: hiveYAML, mutate: muts(set("metadata.name", longName)),
			wantErr: "hive names must be at most 63 characters",
		},
		"hive: no template": {
			base: hiveYAML, mutate: muts(unset("spec.template")),
			wantErr: "spec.template: Required value",
		},
		"hive: template without containers": {
			base: hiveYAML, mutate: muts(set("spec.template.spec", map[string]any{})),
			wantErr: "spec.template.spec.containers: Required value",
		},
		"hive: misspelt field": {
			base: hiveYAML, mutate: muts(set("spec.replica", int64(3))),
			wantErr: `unknown field "spec.replica"`,
		},
		"task: empty hive": {
			base: taskYAML, mutate: muts(set("spec.hive", "")),
			wantErr: "spec.hive in body should be at least 1 chars long",
		},
		"task: no hive": {
			base: taskYAML, mutate: muts(unset("spec.hive")),
			wantErr: "spec.hive: Required value",
		},
		"task: hive name with capitals": {
			base: taskYAML, mutate: muts(set("spec.hive", "My_Hive")),
			wantErr: "spec.hive must be a valid hive name",
		},
		"task: oversized input": {
			base: taskYAML, mutate: muts(set("spec.input", strings.Repeat("x", swarmv1alpha1.MaxInputLength+1))),
			wantErr: "spec.input: Too long: may not be more than 65536 bytes",
		},
		"task: priority above the cap": {
			base: taskYAML, mutate: muts(set("spec.priority", int64(1001))),
			wantErr: "spec.priority in body should be less than or equal to 1000",
		},
		"task: priority below the floor": {
			base: taskYAML, mutate: muts(set("spec.priority", int64(-5000))),
			wantErr: "spec.priority in body should be greater than or equal to -1000",
		},
		"task: zero timeout": {
			base: taskYAML, mutate: muts(set("spec.timeout", "0s")),
			wantErr: "timeout must be a duration greater than 0s and at most 168h",
		},
		"task: timeout in words": {
			base: taskYAML, mutate: muts(set("spec.timeout", "ten minutes")),
			wantErr: "timeout must be a duration greater than 0s and at most 168h, such as 30s or 10m",
		},
		"task: negative retries": {
			base: taskYAML, mutate: muts(set("spec.maxRetries", int64(-1))),
			wantErr: "spec.maxRetries in body should be greater than or equal to 0",
		},
		"task: backoff too long": {
			base: taskYAML, mutate: muts(set("spec.backoff", "2h")),
			wantErr: "backoff must be a duration between 0s and 1h",
		},
		"task: malformed required capability": {
			base: taskYAML, mutate: muts(set("spec.requiredCapabilities", []any{"Big GPU"})),
			wantErr: "each required capability must be a lowercase name",
		},
		"task: depends on itself": {
			base: taskYAML, mutate: muts(set("spec.dependsOn", []any{"other", "t"})),
			wantErr: "a task cannot depend on itself",
		},
		"task: malformed dependency name": {
			base: taskYAML, mutate: muts(set("spec.dependsOn", []any{"Step_One"})),
			wantErr: "each entry of dependsOn must be a valid task name",
		},
		"task: negative ttl": {
			base: taskYAML, mutate: muts(set("spec.ttlSecondsAfterFinished", int64(-5))),
			wantErr: "spec.ttlSecondsAfterFinished in body should be greater than or equal to 0",
		},
	}
	if len(cases) < 30 {
		t.Fatalf("only %d invalid manifests; the suite promises at least 30", len(cases))
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			obj := parse(t, tc.base)
			obj.SetNamespace(ns)
			for _, m := range tc.mutate {
				m(obj)
			}
			err := env.Client.Create(t.Context(), obj, client.FieldValidation("Strict"))
			if err == nil {
				t.Fatalf("created %s; want it rejected with %q", obj.GetName(), tc.wantErr)
			}
			if !apierrors.IsInvalid(err) && !apierrors.IsBadRequest(err) {
				t.Fatalf("got %v; want an Invalid or BadRequest error", err)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error does not say what is wrong\n got: %v\nwant: %s", err, tc.wantErr)
			}
		})
	}
}

func muts(m ...func(*unstructured.Unstructured)) []func(*unstructured.Unstructured) { return m }

// TestInvalidUpdatesAreRejected covers the rules that compare an object with its previous
// version: immutable fields, the one-way cancel switch, and the status written by agents.
func TestInvalidUpdatesAreRejected(t *testing.T) {
	testenv.Require(t, env)
	ns := namespace(t)

	cases := map[string]struct {
		status  bool
		mutate  func(*swarmv1alpha1.Task)
		wantErr string
	}{
		"changed hive": {
			mutate:  func(t *swarmv1alpha1.Task) { t.Spec.Hive = "other" },
			wantErr: "spec.hive is immutable: create a new task to run it on another hive",
		},
		"changed input": {
			mutate:  func(t *swarmv1alpha1.Task) { t.Spec.Input = "different" },
			wantErr: "spec.input is immutable",
		},
		"removed input": {
			mutate:  func(t *swarmv1alpha1.Task) { t.Spec.Input = "" },
			wantErr: "spec.input is immutable",
		},
		"added dependency": {
			mutate:  func(t *swarmv1alpha1.Task) { t.Spec.DependsOn = []string{"later"} },
			wantErr: "spec.dependsOn is immutable",
		},
		"uncancelled": {
			mutate:  func(t *swarmv1alpha1.Task) { t.Spec.Cancel = false },
			wantErr: "spec.cancel cannot be unset once a task has been cancelled",
		},
		"unknown phase": {
			status:  true,
			mutate:  func(t *swarmv1alpha1.Task) { t.Status.Phase = "Done" },
			wantErr: `status.phase: Unsupported value: "Done"`,
		},
		"bound without an agent": {
			status:  true,
			mutate:  func(t *swarmv1alpha1.Task) { t.Status.Phase = swarmv1alpha1.TaskAssigned },
			wantErr: "status.agent must be set while a task is Assigned or Running",
		},
		"oversized result": {
			status: true,
			mutate: func(t *swarmv1alpha1.Task) {
				t.Status.Phase = swarmv1alpha1.TaskSucceeded
				t.Status.Result = strings.Repeat("r", swarmv1alpha1.MaxResultLength+1)
			},
			wantErr: "status.result: Too long: may not be more than 262144 bytes",
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			task := &swarmv1alpha1.Task{
				ObjectMeta: metav1.ObjectMeta{GenerateName: "immutable-", Namespace: ns},
				Spec:       swarmv1alpha1.TaskSpec{Hive: "h", Input: "original", Cancel: name == "uncancelled"},
			}
			if err := env.Client.Create(t.Context(), task); err != nil {
				t.Fatalf("creating the task: %v", err)
			}
			base := task.DeepCopy()
			tc.mutate(task)
			var err error
			if tc.status {
				err = env.Client.Status().Patch(t.Context(), task, client.MergeFrom(base))
			} else {
				err = env.Client.Patch(t.Context(), task, client.MergeFrom(base))
			}
			if err == nil {
				t.Fatalf("update accepted; want it rejected with %q", tc.wantErr)
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("error does not say what is wrong\n got: %v\nwant: %s", err, tc.wantErr)
			}
		})
	}
}

// TestAllowedUpdates checks that the rules do not refuse what users and agents must do.
func TestAllowedUpdates(t *testing.T) {
	testenv.Require(t, env)
	ns := namespace(t)
	task := &swarmv1alpha1.Task{
		ObjectMeta: metav1.ObjectMeta{Name: "allowed", Namespace: ns},
		Spec:       swarmv1alpha1.TaskSpec{Hive: "h", Input: "in", DependsOn: []string{"a"}},
	}
	if err := env.Client.Create(t.Context(), task); err != nil {
		t.Fatalf("creating the task: %v", err)
	}
	base := task.DeepCopy()
	task.Spec.Priority = 500
	task.Spec.Cancel = true
	task.Spec.Timeout = &metav1.Duration{Duration: time.Minute}
	if err := env.Client.Patch(t.Context(), task, client.MergeFrom(base)); err != nil {
		t.Fatalf("changing priority, timeout and cancelling: %v", err)
	}
	base = task.DeepCopy()
	task.Status.Phase = swarmv1alpha1.TaskRunning
	task.Status.Agent = "pod-a"
	task.Status.Attempt = 1
	if err := env.Client.Status().Patch(t.Context(), task, client.MergeFrom(base)); err != nil {
		t.Fatalf("binding through the status: %v", err)
	}
}

// TestDefaults checks the defaults the schema fills in, read back from the API server.
func TestDefaults(t *testing.T) {
	testenv.Require(t, env)
	ns := namespace(t)
	ctx := t.Context()

	hive := &swarmv1alpha1.Hive{
		ObjectMeta: metav1.ObjectMeta{Name: "defaults", Namespace: ns},
		Spec: swarmv1alpha1.HiveSpec{
			Template:    corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: "a"}}}},
			Autoscaling: &swarmv1alpha1.AutoscalingSpec{MaxReplicas: 4},
			Serving:     &swarmv1alpha1.ServingSpec{},
		},
	}
	if err := env.Client.Create(ctx, hive); err != nil {
		t.Fatalf("creating the hive: %v", err)
	}
	got := &swarmv1alpha1.Hive{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(hive), got); err != nil {
		t.Fatalf("reading the hive: %v", err)
	}
	wantHive := swarmv1alpha1.HiveSpec{
		Replicas: ptr.To[int32](1),
		Template: hive.Spec.Template,
		Agent:    swarmv1alpha1.AgentSpec{Concurrency: 1},
		Autoscaling: &swarmv1alpha1.AutoscalingSpec{
			MinReplicas:              ptr.To[int32](0),
			MaxReplicas:              4,
			TargetUtilizationPercent: ptr.To[int32](100),
			ScaleUpWindow:            &metav1.Duration{},
			ScaleDownWindow:          &metav1.Duration{Duration: time.Minute},
			MaxScaleUpStep:           ptr.To[int32](10),
			IdleTimeout:              &metav1.Duration{Duration: 5 * time.Minute},
		},
		Rollout: swarmv1alpha1.RolloutSpec{
			MaxSurge:       ptr.To(intstr.FromString("25%")),
			MaxUnavailable: ptr.To(intstr.FromInt32(0)),
			DrainTimeout:   &metav1.Duration{Duration: 10 * time.Minute},
		},
		Disruption:    &swarmv1alpha1.DisruptionSpec{MaxUnavailable: ptr.To(intstr.FromInt32(1))},
		TaskRetention: &swarmv1alpha1.TaskRetentionSpec{TTLSecondsAfterFinished: ptr.To[int32](3600)},
		Serving: &swarmv1alpha1.ServingSpec{
			Concurrency: ptr.To[int32](8), Port: ptr.To[int32](8081), QueueLength: ptr.To[int32](100),
			QueueTimeout: &metav1.Duration{Duration: 10 * time.Second},
		},
	}
	if diff := cmp.Diff(wantHive, got.Spec); diff != "" {
		t.Errorf("hive defaults (-want +got):\n%s", diff)
	}
	// What the operator assumes of a hive read without the schema's defaulting is what the
	// schema sets.
	bare := swarmv1alpha1.HiveSpec{Autoscaling: &swarmv1alpha1.AutoscalingSpec{}, Serving: &swarmv1alpha1.ServingSpec{}}
	as, gs := bare.Autoscaling, got.Spec.Autoscaling
	bs, gsv := bare.Serving, got.Spec.Serving
	assumed := []any{bare.ReplicasOrDefault(), bare.Agent.ConcurrencyOrDefault(), bare.Rollout.MaxSurgeOrDefault(),
		bare.Rollout.MaxUnavailableOrDefault(), bare.Rollout.DrainTimeoutOrDefault(), bare.DisruptionMaxUnavailableOrDefault(),
		as.MinReplicasOrDefault(), as.TargetUtilizationPercentOrDefault(), as.ScaleUpWindowOrDefault(),
		as.ScaleDownWindowOrDefault(), as.MaxScaleUpStepOrDefault(), as.IdleTimeoutOrDefault(), bare.TaskRetentionOrDefault(),
		bs.ConcurrencyOrDefault(), bs.PortOrDefault(), bs.QueueLengthOrDefault(), bs.QueueTimeoutOrDefault()}
	stored := []any{*got.Spec.Replicas, got.Spec.Agent.Concurrency, *got.Spec.Rollout.MaxSurge,
		*got.Spec.Rollout.MaxUnavailable, got.Spec.Rollout.DrainTimeout.Duration, *got.Spec.Disruption.MaxUnavailable,
		*gs.MinReplicas, *gs.TargetUtilizationPercent, gs.ScaleUpWindow.Duration,
		gs.ScaleDownWindow.Duration, *gs.MaxScaleUpStep, gs.IdleTimeout.Duration, time.Duration(*got.Spec.TaskRetention.TTLSecondsAfterFinished) * time.Second,
		*gsv.Concurrency, *gsv.Port, *gsv.QueueLength, gsv.QueueTimeout.Duration}
	if diff := cmp.Diff(stored, assumed); diff != "" {
		t.Errorf("the defaults the operator assumes differ from the schema's (-schema +assumed):\n%s", diff)
	}

	task := &swarmv1alpha1.Task{
		ObjectMeta: metav1.ObjectMeta{Name: "defaults", Namespace: ns},
		Spec:       swarmv1alpha1.TaskSpec{Hive: "defaults"},
	}
	if err := env.Client.Create(ctx, task); err != nil {
		t.Fatalf("creating the task: %v", err)
	}
	gotTask := &swarmv1alpha1.Task{}
	if err := env.Client.Get(ctx, client.ObjectKeyFromObject(task), gotTask); err != nil {
		t.Fatalf("reading the task: %v", err)
	}
	wantTask := swarmv1alpha1.TaskSpec{
		Hive:       "defaults",
		Timeout:    &metav1.Duration{Duration: 10 * time.Minute},
		MaxRetries: ptr.To[int32](3),
		Backoff:    &metav1.Duration{Duration: time.Second},
	}
	if diff := cmp.Diff(wantTask, gotTask.Spec); diff != "" {
		t.Errorf("task defaults (-want +got):\n%s", diff)
	}
	// A new task reads as Pending without anyone writing its status: the default is applied
	// when the object is read, which saves a write per task.
	if gotTask.Status.Phase != swarmv1alpha1.TaskPending {
		t.Errorf("new task phase = %q, want %q", gotTask.Status.Phase, swarmv1alpha1.TaskPending)
	}
}

// TestSamplesAreAccepted applies every manifest under config/samples.
func TestSamplesAreAccepted(t *testing.T) {
	testenv.Require(t, env)
	ns := namespace(t)
	root, err := testenv.ModuleRoot()
	if err != nil {
		t.Fatal(err)
	}
	files, err := filepath.Glob(filepath.Join(root, "config", "samples", "swarm_*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples found: %v", err)
	}
	kinds := map[string]int{}
	for _, file := range files {
		for _, obj := range readManifests(t, file) {
			obj.SetNamespace(ns)
			if err := env.Client.Create(t.Context(), obj, client.FieldValidation("Strict")); err != nil {
				t.Errorf("%s: %s %s refused: %v", filepath.Base(file), obj.GetKind(), obj.GetName(), err)
			}
			kinds[obj.GetKind()]++
		}
	}
	if kinds["Hive"] == 0 || kinds["Task"] == 0 {
		t.Errorf("samples hold %v; want at least one Hive and one Task", kinds)
	}
}

func readManifests(t *testing.T, file string) []*unstructured.Unstructured {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []*unstructured.Unstructured
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if len(u.Object) > 0 {
			out = append(out, u)
		}
	}
}

// TestServedShape checks what kubectl relies on: the printer columns, the scale
// subresource and the selectable fields agents watch with.
func TestServedShape(t *testing.T) {
	testenv.Require(t, env)
	ns := namespace(t)
	ctx := t.Context()

	hive := &swarmv1alpha1.Hive{
		ObjectMeta: metav1.ObjectMeta{Name: "shape", Namespace: ns},
		Spec: swarmv1alpha1.HiveSpec{
			Replicas: ptr.To[int32](2),
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: "a"}}}},
		},
	}
	if err := env.Client.Create(ctx, hive); err != nil {
		t.Fatalf("creating the hive: %v", err)
	}

	t.Run("printer columns", func(t *testing.T) {
		for resource, want := range map[string][]string{
			"hives": {"Name", "Ready", "Up-to-date", "Busy", "Queued", "Revision", "Age", "Concurrency", "Update-revision"},
			"tasks": {"Name", "Hive", "Phase", "Agent", "Attempt", "Age", "Priority", "Message"},
		} {
			table := &metav1.Table{}
			err := restClient(t).Get().AbsPath("/apis/swarm.aihub.dev/v1alpha1/namespaces", ns, resource).
				SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").Do(ctx).Into(table)
			if err != nil {
				t.Fatalf("getting %s as a table: %v", resource, err)
			}
			var got []string
			for _, c := range table.ColumnDefinitions {
				got = append(got, c.Name)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s columns (-want +got):\n%s", resource, diff)
			}
		}
	})

	t.Run("scale subresource", func(t *testing.T) {
		scale := &autoscalingv1.Scale{}
		if err := env.Client.SubResource("scale").Get(ctx, hive, scale); err != nil {
			t.Fatalf("reading the scale: %v", err)
		}
		if scale.Spec.Replicas != 2 {
			t.Errorf("scale replicas = %d, want 2", scale.Spec.Replicas)
		}
		scale.Spec.Replicas = 5
		if err := env.Client.SubResource("scale").Update(ctx, hive, client.WithSubResourceBody(scale)); err != nil {
			t.Fatalf("scaling through the subresource: %v", err)
		}
		got := &swarmv1alpha1.Hive{}
		if err := env.Client.Get(ctx, client.ObjectKeyFromObject(hive), got); err != nil {
			t.Fatal(err)
		}
		if got.Spec.Replicas == nil || *got.Spec.Replicas != 5 {
			t.Errorf("spec.replicas after scaling = %v, want 5", got.Spec.Replicas)
		}
	})

	t.Run("selectable fields", func(t *testing.T) {
		for i, agent := range []string{"pod-a", "pod-b", "pod-a"} {
			task := &swarmv1alpha1.Task{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("sel-%d", i), Namespace: ns},
				Spec:       swarmv1alpha1.TaskSpec{Hive: []string{"x", "y", "y"}[i]},
			}
			if err := env.Client.Create(ctx, task); err != nil {
				t.Fatal(err)
			}
			base := task.DeepCopy()
			task.Status.Phase, task.Status.Agent, task.Status.Attempt = swarmv1alpha1.TaskAssigned, agent, 1
			if err := env.Client.Status().Patch(ctx, task, client.MergeFrom(base)); err != nil {
				t.Fatal(err)
			}
		}
		for selector, want := range map[string][]string{
			"status.agent=pod-a":             {"sel-0", "sel-2"},
			"spec.hive=y":                    {"sel-1", "sel-2"},
			"spec.hive=y,status.agent=pod-a": {"sel-2"},
		} {
			list := &swarmv1alpha1.TaskList{}
			sel := client.MatchingFieldsSelector{}
			var err error
			if sel.Selector, err = fieldsSelector(selector); err != nil {
				t.Fatal(err)
			}
			if err := env.Client.List(ctx, list, client.InNamespace(ns), sel); err != nil {
				t.Fatalf("listing with %s: %v", selector, err)
			}
			var got []string
			for _, item := range list.Items {
				got = append(got, item.Name)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("tasks with %s (-want +got):\n%s", selector, diff)
			}
		}
	})
}

func restClient(t *testing.T) *rest.RESTClient {
	t.Helper()
	cfg := rest.CopyConfig(env.Config)
	cfg.GroupVersion = &swarmv1alpha1.GroupVersion
	cfg.APIPath = "/apis"
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(testenv.Scheme).WithoutConversion()
	c, err := rest.RESTClientFor(cfg)
	if err != nil {
		t.Fatalf("creating a REST client: %v", err)
	}
	return c
}

func fieldsSelector(s string) (fields.Selector, error) {
	sel, err := fields.ParseSelector(s)
	if err != nil {
		return nil, fmt.Errorf("parsing field selector %q: %w", s, err)
	}
	return sel, nil
}
