package agentpod

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

func TestBuild(t *testing.T) {
	hive := &swarmv1alpha1.Hive{
		ObjectMeta: metav1.ObjectMeta{Name: "h", Namespace: "ns", UID: "u1"},
		Spec: swarmv1alpha1.HiveSpec{
			Agent: swarmv1alpha1.AgentSpec{Concurrency: 0, Capabilities: []string{"a", "b"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"x": "y", swarmv1alpha1.LabelHive: "spoof"}},
				Spec: corev1.PodSpec{
					InitContainers: []corev1.Container{{Name: "init"}},
					Containers:     []corev1.Container{{Name: "main", Env: []corev1.EnvVar{{Name: "AGENT_CONCURRENCY", Value: "99"}}}},
				},
			},
		},
	}
	pod := Build(hive, "rev1")
	if pod.GenerateName != "h-" || pod.Namespace != "ns" {
		t.Errorf("name %q namespace %q", pod.GenerateName, pod.Namespace)
	}
	if pod.Labels["x"] != "y" || pod.Labels[swarmv1alpha1.LabelHive] != "h" || Revision(pod) != "rev1" {
		t.Errorf("labels %v", pod.Labels)
	}
	if hiveName, ok := ControllerHive(pod); !ok || hiveName != "h" {
		t.Errorf("ControllerHive = %q, %v", hiveName, ok)
	}
	for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
		got := map[string]string{}
		for _, e := range c.Env {
			if _, dup := got[e.Name]; dup {
				t.Errorf("container %s has %s twice", c.Name, e.Name)
			}
			got[e.Name] = e.Value
		}
		if got["AGENT_CONCURRENCY"] != "1" || got["AGENT_CAPABILITIES"] != "a,b" || got["HIVE_NAME"] != "h" {
			t.Errorf("container %s env %v", c.Name, got)
		}
	}
	if hive.Spec.Template.Labels[swarmv1alpha1.LabelHive] != "spoof" || len(hive.Spec.Template.Spec.Containers[0].Env) != 1 {
		t.Error("Build changed the hive's template")
	}
	if _, _, ok := Serving(pod); ok {
		t.Error("an agent of a hive without spec.serving serves requests")
	}
}

func TestServing(t *testing.T) {
	hive := &swarmv1alpha1.Hive{
		ObjectMeta: metav1.ObjectMeta{Name: "h", Namespace: "ns"},
		Spec: swarmv1alpha1.HiveSpec{
			Serving:  &swarmv1alpha1.ServingSpec{},
			Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "main"}}}},
		},
	}
	if port, slots, ok := Serving(Build(hive, "r")); !ok || port != 8081 || slots != 8 {
		t.Errorf("Serving of the defaults = %d, %d, %v; want 8081, 8, true", port, slots, ok)
	}
	with := func(env ...corev1.EnvVar) *corev1.Pod {
		return &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Env: env}}}}
	}
	port := func(v string) corev1.EnvVar { return corev1.EnvVar{Name: swarmv1alpha1.EnvServingPort, Value: v} }
	slots := func(v string) corev1.EnvVar {
		return corev1.EnvVar{Name: swarmv1alpha1.EnvServingConcurrency, Value: v}
	}
	cases := map[string]struct {
		pod         *corev1.Pod
		port, slots int
		ok          bool
	}{
		"port and slots":      {with(port("9000"), slots("3")), 9000, 3, true},
		"no slots given":      {with(port("9000")), 9000, 1, true},
		"slots not a number":  {with(port("9000"), slots("x")), 9000, 1, true},
		"no port":             {with(slots("3")), 0, 0, false},
		"port not a number":   {with(port("http")), 0, 0, false},
		"port out of range":   {with(port("70000"), slots("3")), 0, 0, false},
		"port from elsewhere": {with(corev1.EnvVar{Name: swarmv1alpha1.EnvServingPort, ValueFrom: &corev1.EnvVarSource{}}), 0, 0, false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p, s, ok := Serving(tc.pod)
			if p != tc.port || s != tc.slots || ok != tc.ok {
				t.Errorf("Serving = %d, %d, %v; want %d, %d, %v", p, s, ok, tc.port, tc.slots, tc.ok)
			}
		})
	}
}

func TestState(t *testing.T) {
	ready := corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	stamp := time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC)
	cases := map[string]struct {
		pod                                   corev1.Pod
		ready, terminating, finished, canTake bool
		draining                              bool
		since                                 time.Time
	}{
		"ready":       {pod: corev1.Pod{Status: ready}, ready: true, canTake: true},
		"not ready":   {pod: corev1.Pod{}},
		"terminating": {pod: corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &metav1.Time{}}, Status: ready}, ready: true, terminating: true},
		"failed":      {pod: corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodFailed}}, finished: true},
		"draining": {
			pod:   corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{swarmv1alpha1.AnnotationDrainingSince: stamp.Format(time.RFC3339Nano)}}, Status: ready},
			ready: true, draining: true, since: stamp,
		},
		"draining with a mangled mark": {
			pod:   corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{swarmv1alpha1.AnnotationDrainingSince: "soon"}}, Status: ready},
			ready: true, draining: true,
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			p := &tc.pod
			since, draining := DrainingSince(p)
			if IsReady(p) != tc.ready || IsTerminating(p) != tc.terminating || IsFinished(p) != tc.finished ||
				CanTakeTasks(p) != tc.canTake || draining != tc.draining || IsDraining(p) != tc.draining || !since.Equal(tc.since) {
				t.Errorf("ready %v terminating %v finished %v canTake %v draining %v since %v",
					IsReady(p), IsTerminating(p), IsFinished(p), CanTakeTasks(p), draining, since)
			}
		})
	}
}

func TestControllerHiveIgnoresOtherOwners(t *testing.T) {
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{OwnerReferences: []metav1.OwnerReference{
		{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "rs", Controller: new(true)},
	}}}
	if _, ok := ControllerHive(pod); ok {
		t.Error("a ReplicaSet's pod was taken for a hive's")
	}
}

func TestTheStateOfAnAgent(t *testing.T) {
	cases := map[string]struct {
		facts Facts
		want  State
	}{
		"ready and idle":                     {Facts{Ready: true}, StateIdle},
		"ready and working":                  {Facts{Ready: true, Tasks: 2}, StateBusy},
		"not ready and idle":                 {Facts{}, StateStarting},
		"not ready, still working":           {Facts{Tasks: 1}, StateBusy},
		"draining, idle":                     {Facts{Ready: true, Draining: true}, StateDraining},
		"draining, still working":            {Facts{Ready: true, Draining: true, Tasks: 3}, StateDraining},
		"being deleted, still working":       {Facts{Ready: true, Stopping: true, Tasks: 1}, StateStopping},
		"being deleted while draining":       {Facts{Draining: true, Stopping: true}, StateStopping},
		"not ready and draining, idle":       {Facts{Draining: true}, StateDraining},
		"not ready, draining, still working": {Facts{Draining: true, Tasks: 1}, StateDraining},
	}
	for name, tc := range cases {
		if got := tc.facts.State(); got != tc.want {
			t.Errorf("%s: %s, want %s", name, got, tc.want)
		}
	}
	draining := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{swarmv1alpha1.AnnotationDrainingSince: "x"}}}
	if got := StateOf(draining, 1); got != StateDraining {
		t.Errorf("StateOf a draining pod with a task: %s", got)
	}
}

func TestNotReadySince(t *testing.T) {
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	changed := created.Add(time.Minute)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{CreationTimestamp: metav1.NewTime(created)}}
	if got := NotReadySince(pod); !got.Equal(created.Add(time.Second)) {
		t.Errorf("never ready: %v", got)
	}
	pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: metav1.NewTime(changed)}}
	if got := NotReadySince(pod); !got.Equal(changed.Add(time.Second)) {
		t.Errorf("no longer ready: %v", got)
	}
	pod.Status.Conditions[0].Status = corev1.ConditionTrue
	if got := NotReadySince(pod); !got.IsZero() {
		t.Errorf("ready: %v", got)
	}
}
