package controllers

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/metrics"
	"github.com/aihub-dev/hive-operator/test/builder"
)

// The metrics are process-wide: each test counts under hive names of its own and compares
// before with after.

// samples reads how many observations a histogram of the operator's metrics holds.
func samples(t *testing.T, o prometheus.Observer) uint64 {
	t.Helper()
	m := &dto.Metric{}
	if err := o.(prometheus.Metric).Write(m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

func TestMetricsObserverCountsWhatTheControllersReport(t *testing.T) {
	const hive = "observed-unit"
	read := func() map[string]float64 {
		return map[string]float64{
			"queue waits":  float64(samples(t, metrics.QueueWait.WithLabelValues("ns", hive))),
			"agent losses": counterValue(t, metrics.AgentLosses.WithLabelValues("ns", hive)),
			"scaled up":    counterValue(t, metrics.ScaleEvents.WithLabelValues("ns", hive, "up")),
			"scaled down":  counterValue(t, metrics.ScaleEvents.WithLabelValues("ns", hive, "down")),
			"rollouts":     counterValue(t, metrics.Rollouts.WithLabelValues("ns", hive)),
		}
	}
	before := read()
	var o prometheusMetrics
	o.Bound("ns", hive, 2*time.Second)
	o.AttemptFailed("ns", hive, swarmv1alpha1.ReasonAgentLost)
	o.AttemptFailed("ns", hive, swarmv1alpha1.ReasonTimedOut) // counted with the outcomes, not as a loss
	o.Scaled("ns", hive, "up")
	o.Scaled("ns", hive, "up")
	o.RolloutStarted("ns", hive)
	after := read()
	got := map[string]float64{}
	for k := range after {
		got[k] = after[k] - before[k]
	}
	want := map[string]float64{"queue waits": 1, "agent losses": 1, "scaled up": 2, "scaled down": 0, "rollouts": 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("counted (-want +got):\n%s", diff)
	}
}

func TestTaskTransitionsAreCountedByWhatTheyMean(t *testing.T) {
	running := func(hive string) *swarmv1alpha1.Task {
		task := builder.Task("ns", "t").Hive(hive).Bound("agent-1", 2, unitNow.Add(-time.Minute)).Obj()
		task.Status.Phase = swarmv1alpha1.TaskRunning
		return task
	}
	cases := map[string]struct {
		to   func(*swarmv1alpha1.Task) *swarmv1alpha1.Task
		want map[string]float64
	}{
		// The cache sees a task that finishes leave it; the watch of finished tasks counts
		// its outcome (Finished).
		"a task succeeded": {
			to: func(t *swarmv1alpha1.Task) *swarmv1alpha1.Task {
				t.Status.Phase, t.Status.FinishedAt = swarmv1alpha1.TaskSucceeded, ptrMicro(unitNow)
				return t
			},
		},
		"an attempt timed out and is retried": {
			to: func(t *swarmv1alpha1.Task) *swarmv1alpha1.Task {
				t.Status.Phase, t.Status.Agent, t.Status.FailedAttempts = swarmv1alpha1.TaskPending, "", 1
				t.Status.Conditions = []metav1.Condition{{Type: swarmv1alpha1.TaskAttemptFailed, Status: metav1.ConditionTrue,
					Reason: swarmv1alpha1.ReasonTimedOut, Message: "attempt 2 ran longer than its timeout"}}
				return t
			},
			want: map[string]float64{"retried after timing out": 1},
		},
		// A condition left by an earlier attempt says nothing of this one: with no failure
		// counted, it is a release.
		"an agent released its task": {
			to: func(t *swarmv1alpha1.Task) *swarmv1alpha1.Task {
				t.Status.Phase, t.Status.Agent = swarmv1alpha1.TaskPending, ""
				t.Status.Conditions = []metav1.Condition{{Type: swarmv1alpha1.TaskAttemptFailed, Status: metav1.ConditionTrue,
					Reason: swarmv1alpha1.ReasonTimedOut, Message: "attempt 1 ran longer than its timeout"}}
				return t
			},
			want: map[string]float64{"released": 1},
		},
		"a task started": {to: func(t *swarmv1alpha1.Task) *swarmv1alpha1.Task { return t }},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			hive := "transitions-" + strings.ReplaceAll(name, " ", "-")
			read := func() map[string]float64 {
				return map[string]float64{
					"succeeded":                counterValue(t, metrics.Outcomes.WithLabelValues("ns", hive, string(swarmv1alpha1.TaskSucceeded))),
					"run times":                float64(samples(t, metrics.RunTime.WithLabelValues("ns", hive, string(swarmv1alpha1.TaskSucceeded)))),
					"retried after timing out": counterValue(t, metrics.Retries.WithLabelValues("ns", hive, swarmv1alpha1.ReasonTimedOut)),
					"released":                 counterValue(t, metrics.Retries.WithLabelValues("ns", hive, "Released")),
				}
			}
			before := read()
			observeTransition(running(hive), tc.to(running(hive)))
			observeTransition("not a task", running(hive)) // ignored
			after := read()
			got := map[string]float64{}
			for k := range after {
				if d := after[k] - before[k]; d != 0 {
					got[k] = d
				}
			}
			want := tc.want
			if want == nil {
				want = map[string]float64{}
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("counted (-want +got):\n%s", diff)
			}
		})
	}
}

// informerCache is a cache whose task informer is informer, or err when that is set.
type informerCache struct {
	cache.Cache
	informer cache.Informer
	err      error
}

func (c informerCache) GetInformer(context.Context, client.Object, ...cache.InformerGetOption) (cache.Informer, error) {
	return c.informer, c.err
}

// handlerlessInformer refuses event handlers, as a stopped informer does.
type handlerlessInformer struct{ cache.Informer }

func (handlerlessInformer) AddEventHandler(toolscache.ResourceEventHandler) (toolscache.ResourceEventHandlerRegistration, error) {
	return nil, errors.New("handler was not added to shared informer because it has stopped already")
}

func TestTaskMetricsReportATaskWatchTheyCannotHave(t *testing.T) {
	cases := map[string]cache.Cache{
		"no informer":                   informerCache{err: errors.New("no kind is registered for the type")},
		"an informer that takes no one": informerCache{informer: handlerlessInformer{}},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := taskTransitions{cache: c}.Start(ctx)
			if err == nil || !strings.Contains(err.Error(), "watching tasks for metrics") {
				t.Fatalf("Start = %v; want an error saying the task watch failed", err)
			}
		})
	}
	if !(taskTransitions{}).NeedLeaderElection() {
		t.Error("task metrics would be counted by every replica, not by the leader alone")
	}
}

// refusingIndexer refuses every index, as a cache already started does.
type refusingIndexer struct{}

func (refusingIndexer) IndexField(context.Context, client.Object, string, client.IndexerFunc) error {
	return errors.New("informer has already started")
}

func TestSetupIndexesReportsAnIndexItCannotRegister(t *testing.T) {
	err := SetupIndexes(context.Background(), refusingIndexer{})
	if err == nil || !strings.Contains(err.Error(), "indexing *v1.Pod by "+IndexPodHive) {
		t.Fatalf("SetupIndexes = %v; want an error naming the index", err)
	}
}

func TestCacheIndexesHoldWhatTheControllersLookUp(t *testing.T) {
	index := func(name string) client.IndexerFunc {
		for _, i := range cacheIndexes {
			if i.name == name {
				return i.extract
			}
		}
		t.Fatalf("no index %s", name)
		return nil
	}
	hive := unitHive()
	running := builder.Task("ns", "t").Hive("h").DependsOn("up").Bound("agent-1", 1, unitNow).Obj()
	running.Status.Phase = swarmv1alpha1.TaskRunning
	cases := map[string]struct {
		index string
		obj   client.Object
		want  []string
	}{
		"an agent pod by its hive":           {index: IndexPodHive, obj: agentPodOf(hive, hive, "a"), want: []string{"h"}},
		"a pod of no hive":                   {index: IndexPodHive, obj: &corev1.Pod{}},
		"a queued task by its hive":          {index: IndexTaskActiveHive, obj: builder.Task("ns", "t").Hive("h").Obj(), want: []string{"h"}},
		"a finished task in no hive's queue": {index: IndexTaskActiveHive, obj: finishedTask(builder.Task("ns", "t").Hive("h"), unitNow)},
		"a running task by its agent":        {index: IndexTaskAgent, obj: running, want: []string{"agent-1"}},
		"a queued task by no agent":          {index: IndexTaskAgent, obj: builder.Task("ns", "t").Hive("h").Obj()},
		// Its agent's slot is free again.
		"a finished task by no agent":  {index: IndexTaskAgent, obj: finishedTask(builder.Task("ns", "t").Hive("h").Bound("agent-1", 1, unitNow), unitNow)},
		"a task by what it depends on": {index: IndexTaskDependsOn, obj: builder.Task("ns", "t").DependsOn("a", "b").Obj(), want: []string{"a", "b"}},
		// Its dependencies may expire: it no longer reads them.
		"a finished task by nothing": {index: IndexTaskDependsOn, obj: finishedTask(builder.Task("ns", "t").DependsOn("a"), unitNow)},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, index(tc.index)(tc.obj)); diff != "" {
				t.Errorf("indexed by (-want +got):\n%s", diff)
			}
		})
	}
}
