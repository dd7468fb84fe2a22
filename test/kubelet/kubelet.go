// Package kubelet plays the kubelet for the agent pods of tests, on a control plane with no
// nodes (envtest) or with simulated ones (kwok): it binds pods to a node, marks them Ready
// after a delay (unless the cluster does, as kwok does), starts each Ready pod's containers
// through a Runtime, and, when a pod is deleted, stops them gracefully within the pod's
// grace period and only then finishes the deletion, as a real kubelet does. A test can also
// fail a pod or hold it not ready.
//
// It watches the pods once (an informer), so a thousand agent pods cost the API server one
// watch, and writes their statuses with bounded concurrency.
package kubelet

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/aihub-dev/hive-operator/internal/agentpod"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

// Runtime runs the containers of pods. Calls for one pod come one at a time.
type Runtime interface {
	// Start starts the containers of a pod that became Ready.
	Start(pod *corev1.Pod)
	// Stop stops them gracefully, as SIGTERM does, and returns once they have stopped, or
	// once grace has passed, after killing them.
	Stop(pod string, grace time.Duration)
	// Kill stops them at once, as a crash or SIGKILL does.
	Kill(pod string)
}

// Kubelet plays the kubelet for the pods of one namespace.
type Kubelet struct {
	// Config reaches the API server, for the pod watch.
	Config *rest.Config
	// Client writes pod statuses, bindings and deletions.
	Client client.Client
	// Namespace is where the pods live; Selector, when set, narrows them (one hive's).
	Namespace string
	Selector  labels.Selector
	// NodeName, when set, is the node pods without one are bound to, as a scheduler would:
	// the API server deletes a pod that has no node at once, with no grace period.
	NodeName string
	// MarkReady makes the kubelet mark pods Running and Ready ReadyAfter after they were
	// created; leave it false where the cluster does it (kwok).
	MarkReady  bool
	ReadyAfter time.Duration
	// Runtime runs the containers of Ready pods; nil runs none.
	Runtime Runtime
	// StartBeforeReady starts a pod's containers before it is marked Ready, and marks it
	// Ready once Runtime.Start has returned: with a Runtime whose Start returns once the
	// agent's readiness probe passes, pods become Ready as a real kubelet's do, when their
	// agent can serve. Without it, the containers start once the pod is Ready.
	StartBeforeReady bool
	// PodIP returns the IP a pod is given; the same for every pod when nil. It must give
	// one pod the same IP every time.
	PodIP func(pod *corev1.Pod) string
	// Workers is the number of pods handled at once. Default 16.
	Workers int

	queue workqueue.TypedDelayingInterface[string]
	store cache.Cache

	mu      sync.Mutex
	held    map[string]bool
	running map[string]bool // pods whose containers the runtime runs
	// stopping holds the pods whose containers are being stopped for a deletion.
	stopping map[string]bool
	errs     int
	lastErr  error
}

// Start watches the pods until ctx is done and returns once the watch has synced.
func (k *Kubelet) Start(ctx context.Context) error {
	if k.Workers == 0 {
		k.Workers = 16
	}
	k.held, k.running, k.stopping = map[string]bool{}, map[string]bool{}, map[string]bool{}
	k.queue = workqueue.NewTypedDelayingQueue[string]()
	enqueue := func(obj any) {
		if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if p, ok := obj.(*corev1.Pod); ok {
			k.queue.Add(p.Name)
		}
	}
	store, err := testenv.Watch(ctx, k.Config, k.Namespace, k.Selector, map[client.Object]toolscache.ResourceEventHandler{
		&corev1.Pod{}: toolscache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, obj any) { enqueue(obj) }, DeleteFunc: enqueue},
	})
	if err != nil {
		k.queue.ShutDown()
		return fmt.Errorf("kubelet: %w", err)
	}
	k.store = store
	for range k.Workers {
		go func() {
			for {
				name, shutdown := k.queue.Get()
				if shutdown {
					return
				}
				k.sync(ctx, name)
				k.queue.Done(name)
			}
		}()
	}
	go func() {
		<-ctx.Done()
		k.queue.ShutDown()
		if k.Runtime == nil {
			return
		}
		k.mu.Lock()
		defer k.mu.Unlock()
		for name := range k.running {
			k.Runtime.Kill(name)
		}
	}()
	return nil
}

// Hold keeps a pod not ready (or lets it be ready again when hold is false).
func (k *Kubelet) Hold(name string, hold bool) {
	k.mu.Lock()
	k.held[name] = hold
	k.mu.Unlock()
	k.queue.Add(name)
}

// Fail makes a pod's containers exit: phase Failed, not ready.
func (k *Kubelet) Fail(ctx context.Context, name string) error {
	pod := &corev1.Pod{}
	if err := k.Client.Get(ctx, client.ObjectKey{Namespace: k.Namespace, Name: name}, pod); err != nil {
		return fmt.Errorf("reading pod %s: %w", name, err)
	}
	k.Hold(name, true)
	k.kill(name)
	return k.setStatus(ctx, pod, corev1.PodFailed, false)
}

// Errors returns how many writes failed and the last failure: a kubelet keeps going (the
// API server may be restarting), but a test may want to know.
func (k *Kubelet) Errors() (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.errs, k.lastErr
}

// Running returns how many pods' containers run.
func (k *Kubelet) Running() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.running)
}

func (k *Kubelet) sync(ctx context.Context, name string) {
	pod := &corev1.Pod{}
	err := k.store.Get(ctx, client.ObjectKey{Namespace: k.Namespace, Name: name}, pod)
	switch {
	case apierrors.IsNotFound(err):
		k.kill(name)
		k.mu.Lock()
		delete(k.held, name)
		delete(k.stopping, name)
		k.mu.Unlock()
		return
	case err != nil:
		k.failed(err)
		k.queue.AddAfter(name, time.Second)
		return
	}
	switch {
	case pod.DeletionTimestamp != nil:
		k.terminate(ctx, pod)
	case pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded:
		k.kill(name)
	case pod.Spec.NodeName == "" && k.NodeName != "":
		k.bind(ctx, pod)
	case k.isHeld(name):
		if agentpod.IsReady(pod) {
			k.write(ctx, pod, corev1.PodRunning, false)
		}
	case !agentpod.IsReady(pod):
		if !k.MarkReady {
			return
		}
		if wait := time.Until(pod.CreationTimestamp.Add(k.ReadyAfter)); wait > 0 {
			k.queue.AddAfter(name, wait)
			return
		}
		if k.StartBeforeReady {
			k.start(pod)
		}
		k.write(ctx, pod, corev1.PodRunning, true)
	default:
		k.start(pod)
	}
}

func (k *Kubelet) isHeld(name string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.held[name]
}

// start runs the containers of a pod, once. Calls for one pod come one at a time (the
// queue's), so Start runs outside the lock: a Runtime may wait for its agent to be ready.
func (k *Kubelet) start(pod *corev1.Pod) {
	k.mu.Lock()
	if k.Runtime == nil || k.running[pod.Name] {
		k.mu.Unlock()
		return
	}
	k.running[pod.Name] = true
	k.mu.Unlock()
	k.Runtime.Start(pod.DeepCopy())
}

func (k *Kubelet) kill(name string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.running[name] {
		delete(k.running, name)
		k.Runtime.Kill(name)
	}
}

// terminate stops the containers of a pod being deleted within its grace period, as on
// SIGTERM (the pod stops being ready at once: an agent fails its readiness on SIGTERM),
// then finishes the deletion.
func (k *Kubelet) terminate(ctx context.Context, pod *corev1.Pod) {
	k.mu.Lock()
	if k.stopping[pod.Name] {
		k.mu.Unlock()
		return
	}
	k.stopping[pod.Name] = true
	running := k.running[pod.Name]
	delete(k.running, pod.Name)
	k.mu.Unlock()
	if agentpod.IsReady(pod) {
		k.write(ctx, pod, pod.Status.Phase, false)
	}
	uid := pod.UID
	go func() {
		if running {
			k.Runtime.Stop(pod.Name, time.Until(pod.DeletionTimestamp.Time))
		}
		err := k.Client.Delete(ctx, pod, client.GracePeriodSeconds(0), client.Preconditions{UID: &uid})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			k.failed(err)
			k.mu.Lock()
			delete(k.stopping, pod.Name)
			k.mu.Unlock()
			k.queue.AddAfter(pod.Name, time.Second)
		}
	}()
}

// bind puts a pod on the kubelet's node, as a scheduler would.
func (k *Kubelet) bind(ctx context.Context, pod *corev1.Pod) {
	binding := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: k.NodeName},
	}
	if err := k.Client.SubResource("binding").Create(ctx, pod, binding); err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		k.failed(err)
		k.queue.AddAfter(pod.Name, time.Second)
	}
}

func (k *Kubelet) write(ctx context.Context, pod *corev1.Pod, phase corev1.PodPhase, ready bool) {
	if err := k.setStatus(ctx, pod, phase, ready); err != nil {
		k.failed(err)
		k.queue.AddAfter(pod.Name, time.Second)
	}
}

func (k *Kubelet) failed(err error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.errs++
	k.lastErr = err
}

func (k *Kubelet) setStatus(ctx context.Context, pod *corev1.Pod, phase corev1.PodPhase, ready bool) error {
	base := pod.DeepCopy()
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	now := metav1.Now()
	pod.Status.Phase = phase
	if pod.Status.StartTime == nil {
		pod.Status.StartTime = &now
	}
	pod.Status.PodIP = "10.0.0.1"
	if k.PodIP != nil {
		pod.Status.PodIP = k.PodIP(pod)
	}
	pod.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: status, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: status, LastTransitionTime: now},
	}
	if err := k.Client.Status().Patch(ctx, pod, client.MergeFrom(base)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("writing the status of pod %s: %w", pod.Name, err)
	}
	return nil
}
