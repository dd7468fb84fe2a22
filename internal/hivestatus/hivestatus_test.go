package hivestatus

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/pool"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

type want struct {
	reason  string
	status  metav1.ConditionStatus
	message string
}

func observed(counts pool.Counts, mutate ...func(*Observed)) Observed {
	o := Observed{
		Generation: 3, Desired: 3, MinAvailable: 3, UpdateRevision: "new", Selector: "swarm.aihub.dev/hive=h",
		Plan: pool.Plan{Counts: counts}, Now: t0,
	}
	for _, m := range mutate {
		m(&o)
	}
	return o
}

func TestCompute(t *testing.T) {
	cases := map[string]struct {
		prev        swarmv1alpha1.HiveStatus
		obs         Observed
		wantCurrent string
		want        map[string]want
	}{
		"new hive creating agents": {
			obs:         observed(pool.Counts{}, func(o *Observed) { o.Plan.Create = 3 }),
			wantCurrent: "new",
			want: map[string]want{
				swarmv1alpha1.HiveAvailable:     {swarmv1alpha1.ReasonAgentsUnavailable, metav1.ConditionFalse, "0 of 3 agents are ready to take tasks; at least 3 are needed"},
				swarmv1alpha1.HiveProgressing:   {swarmv1alpha1.ReasonScalingUp, metav1.ConditionTrue, "Creating agents: 0 of 3 exist"},
				swarmv1alpha1.HiveDegraded:      {swarmv1alpha1.ReasonAsExpected, metav1.ConditionFalse, "Agent pods are created as expected"},
				swarmv1alpha1.HiveScalingActive: {swarmv1alpha1.ReasonAutoscalingDisabled, metav1.ConditionFalse, "spec.autoscaling is not set: spec.replicas is set by the user, or by an HPA or KEDA through the scale subresource"},
			},
		},
		"agents starting": {
			obs:         observed(pool.Counts{Live: 3, Ready: 1, Available: 1, Updated: 3, Idle: 1}),
			wantCurrent: "new",
			want: map[string]want{
				swarmv1alpha1.HiveProgressing: {swarmv1alpha1.ReasonWaitingForReady, metav1.ConditionTrue, "Waiting for agents to become ready: 1 of 3 ready"},
			},
		},
		"stable hive": {
			obs:         observed(pool.Counts{Live: 3, Ready: 3, Available: 3, Updated: 3, Idle: 2, Busy: 1}),
			wantCurrent: "new",
			want: map[string]want{
				swarmv1alpha1.HiveAvailable:   {swarmv1alpha1.ReasonAgentsReady, metav1.ConditionTrue, "3 of 3 agents are ready to take tasks"},
				swarmv1alpha1.HiveProgressing: {swarmv1alpha1.ReasonStable, metav1.ConditionFalse, "All 3 agents run revision new"},
			},
		},
		"rollout waiting for busy outdated agents": {
			prev:        swarmv1alpha1.HiveStatus{CurrentRevision: "old"},
			obs:         observed(pool.Counts{Live: 4, Ready: 4, Available: 3, Updated: 3, Outdated: 1, Draining: 1, Busy: 1, BusyDraining: 1}),
			wantCurrent: "old",
			want: map[string]want{
				swarmv1alpha1.HiveAvailable:   {swarmv1alpha1.ReasonAgentsReady, metav1.ConditionTrue, "3 of 3 agents are ready to take tasks"},
				swarmv1alpha1.HiveProgressing: {swarmv1alpha1.ReasonRolloutInProgress, metav1.ConditionTrue, "Rolling out revision new: 3 of 3 agents updated, 3 available; waiting for 1 busy outdated agent to finish"},
			},
		},
		"rollout waiting for updated agents": {
			prev:        swarmv1alpha1.HiveStatus{CurrentRevision: "old"},
			obs:         observed(pool.Counts{Live: 4, Ready: 3, Available: 3, Updated: 1, Outdated: 3}, func(o *Observed) { o.Desired = 4; o.MinAvailable = 3 }),
			wantCurrent: "old",
			want: map[string]want{
				swarmv1alpha1.HiveProgressing: {swarmv1alpha1.ReasonRolloutInProgress, metav1.ConditionTrue, "Rolling out revision new: 1 of 4 agents updated, 3 available; waiting for updated agents to become ready"},
			},
		},
		"scale down waiting for a busy agent": {
			obs:         observed(pool.Counts{Live: 4, Ready: 4, Available: 3, Updated: 3, Draining: 1, Busy: 1, BusyDraining: 1}),
			wantCurrent: "new",
			want: map[string]want{
				swarmv1alpha1.HiveProgressing: {swarmv1alpha1.ReasonScalingDown, metav1.ConditionTrue, "Removing agents: 4 of 3 remain; waiting for 1 busy draining agent to finish"},
			},
		},
		"template refused by the API server": {
			obs: observed(pool.Counts{}, func(o *Observed) {
				o.Plan.Create = 3
				o.CreateError = errors.New(`Pod "h-" is invalid: spec.containers[0].image: Required value`)
			}),
			wantCurrent: "new",
			want: map[string]want{
				swarmv1alpha1.HiveDegraded: {swarmv1alpha1.ReasonPodCreateFailed, metav1.ConditionTrue, `Creating an agent pod failed: Pod "h-" is invalid: spec.containers[0].image: Required value`},
			},
		},
		"autoscaled hive reports the autoscaler's verdict": {
			prev: swarmv1alpha1.HiveStatus{Conditions: []metav1.Condition{{
				Type: swarmv1alpha1.HiveScalingActive, Status: metav1.ConditionTrue, Reason: swarmv1alpha1.ReasonDesiredWithinRange, Message: "kept",
			}}},
			obs: observed(pool.Counts{Live: 3, Ready: 3, Available: 3, Updated: 3, Idle: 3}, func(o *Observed) {
				o.Scaling = &Scaling{Reason: swarmv1alpha1.ReasonTooManyReplicas, Message: "40 tasks need 20 agents; maxReplicas is 3", ScaledAt: &t0}
			}),
			wantCurrent: "new",
			want: map[string]want{
				swarmv1alpha1.HiveScalingActive: {swarmv1alpha1.ReasonTooManyReplicas, metav1.ConditionTrue, "40 tasks need 20 agents; maxReplicas is 3"},
			},
		},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			got := Compute(&tc.prev, tc.obs)
			if got.CurrentRevision != tc.wantCurrent {
				t.Errorf("currentRevision = %q, want %q", got.CurrentRevision, tc.wantCurrent)
			}
			if got.ObservedGeneration != 3 || got.Selector != tc.obs.Selector || got.UpdateRevision != "new" {
				t.Errorf("generation, selector or revision not carried: %+v", got)
			}
			for typ, w := range tc.want {
				c := meta.FindStatusCondition(got.Conditions, typ)
				if c == nil {
					t.Fatalf("no %s condition", typ)
				}
				if diff := cmp.Diff(w, want{c.Reason, c.Status, c.Message}, cmp.AllowUnexported(want{})); diff != "" {
					t.Errorf("%s (-want +got):\n%s", typ, diff)
				}
			}
		})
	}
}

func TestComputeKeepsTransitionTimesOfUnchangedConditions(t *testing.T) {
	counts := pool.Counts{Live: 3, Ready: 3, Available: 3, Updated: 3, Idle: 3}
	first := Compute(&swarmv1alpha1.HiveStatus{}, observed(counts))
	later := observed(counts, func(o *Observed) { o.Now = t0.Add(time.Hour) })
	second := Compute(&first, later)
	if !Equal(&first, &second) {
		t.Fatalf("an unchanged hive produced a different status:\n%s", cmp.Diff(first, second))
	}
	counts.Available, counts.Ready = 2, 2
	third := Compute(&second, observed(counts, func(o *Observed) { o.Now = t0.Add(2 * time.Hour) }))
	c := meta.FindStatusCondition(third.Conditions, swarmv1alpha1.HiveAvailable)
	if !c.LastTransitionTime.Time.Equal(t0.Add(2 * time.Hour)) {
		t.Errorf("Available changed but its transition time is %v", c.LastTransitionTime)
	}
}

func TestOnlyCountersChanged(t *testing.T) {
	base := swarmv1alpha1.HiveStatus{Replicas: 3, ReadyReplicas: 3, BusyAgents: 1, IdleAgents: 2, QueuedTasks: 5, RunningTasks: 1}
	cases := map[string]struct {
		mutate func(*swarmv1alpha1.HiveStatus)
		want   bool
	}{
		"busy and queued moved": {func(s *swarmv1alpha1.HiveStatus) {
			s.BusyAgents, s.IdleAgents, s.QueuedTasks, s.RunningTasks = 3, 0, 40, 3
		}, true},
		"an agent became ready": {func(s *swarmv1alpha1.HiveStatus) { s.ReadyReplicas = 2 }, false},
		"a condition changed": {func(s *swarmv1alpha1.HiveStatus) {
			s.Conditions = []metav1.Condition{{Type: swarmv1alpha1.HiveDegraded, Status: metav1.ConditionTrue}}
		}, false},
		"a new revision": {func(s *swarmv1alpha1.HiveStatus) { s.UpdateRevision = "x" }, false},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			changed := base
			tc.mutate(&changed)
			if got := OnlyCountersChanged(&base, &changed); got != tc.want {
				t.Errorf("OnlyCountersChanged = %v, want %v", got, tc.want)
			}
		})
	}
}
