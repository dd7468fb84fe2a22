// Package kubelet plays the part of the kubelet in integration tests, where no node runs
// pods: it marks the pods of a namespace Running and Ready after a delay, finishes the
// graceful deletion of pods bound to a node, and lets a test fail a pod or hold it not
// ready.
package kubelet

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Kubelet marks the pods of one namespace ready.
type Kubelet struct {
	// Client talks to the API server directly.
	Client client.Client
	// Namespace is where the pods live.
	Namespace string
	// ReadyAfter is how long after its creation a pod becomes Ready.
	ReadyAfter time.Duration
	// Interval is how often the kubelet looks at the pods. Default 20ms.
	Interval time.Duration

	mu   sync.Mutex
	held map[string]bool
}

// Start runs the kubelet until ctx is done.
func (k *Kubelet) Start(ctx context.Context) {
	interval := k.Interval
	if interval == 0 {
		interval = 20 * time.Millisecond
	}
	go func() {
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
				// A failed pass is retried on the next tick; the API server may be restarting.
				_ = k.step(ctx)
			}
		}
	}()
}

// Hold keeps a pod not ready (or releases it when hold is false).
func (k *Kubelet) Hold(name string, hold bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.held == nil {
		k.held = map[string]bool{}
	}
	k.held[name] = hold
}

func (k *Kubelet) isHeld(name string) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.held[name]
}

func (k *Kubelet) step(ctx context.Context) error {
	pods := &corev1.PodList{}
	if err := k.Client.List(ctx, pods, client.InNamespace(k.Namespace)); err != nil {
		return fmt.Errorf("listing pods: %w", err)
	}
	now := time.Now()
	for i := range pods.Items {
		pod := &pods.Items[i]
		switch {
		case pod.DeletionTimestamp != nil:
			if pod.Spec.NodeName != "" {
				_ = k.Client.Delete(ctx, pod, client.GracePeriodSeconds(0))
			}
		case pod.Status.Phase == corev1.PodFailed || pod.Status.Phase == corev1.PodSucceeded:
		case k.isHeld(pod.Name):
			if isReady(pod) {
				_ = k.setStatus(ctx, pod, corev1.PodRunning, false)
			}
		case !isReady(pod) && now.Sub(pod.CreationTimestamp.Time) >= k.ReadyAfter:
			_ = k.setStatus(ctx, pod, corev1.PodRunning, true)
		}
	}
	return nil
}

// Fail makes a pod's containers exit: phase Failed, not ready.
func (k *Kubelet) Fail(ctx context.Context, name string) error {
	pod := &corev1.Pod{}
	if err := k.Client.Get(ctx, client.ObjectKey{Namespace: k.Namespace, Name: name}, pod); err != nil {
		return fmt.Errorf("reading pod %s: %w", name, err)
	}
	k.Hold(name, true)
	return k.setStatus(ctx, pod, corev1.PodFailed, false)
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

func isReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
