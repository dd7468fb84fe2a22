//go:build e2e

package kwok_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/aihub-dev/hive-operator/test/kwok"
	"github.com/aihub-dev/hive-operator/test/testenv"
)

const (
	readyDelay = 3 * time.Second
	slowLabel  = "kwok-test/slow"
	holdLabel  = "kwok-test/hold"
)

func eventually(t *testing.T, timeout time.Duration, f func() error) {
	t.Helper()
	testenv.Eventually(t, timeout, 50*time.Millisecond, f)
}

func newPod(name string, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "kwok.invalid/c:v1"}}},
	}
}

func isReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitReady waits until a pod is Ready and returns how long after its creation it was seen so.
func waitReady(t *testing.T, cs kubernetes.Interface, name string, timeout time.Duration) time.Duration {
	t.Helper()
	var took time.Duration
	eventually(t, timeout, func() error {
		p, err := cs.CoreV1().Pods(metav1.NamespaceDefault).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !isReady(p) {
			return fmt.Errorf("pod %s is %s, not ready (node %q)", name, p.Status.Phase, p.Spec.NodeName)
		}
		took = time.Since(p.CreationTimestamp.Time)
		return nil
	})
	return took
}

func waitGone(t *testing.T, cs kubernetes.Interface, name string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, func() error {
		_, err := cs.CoreV1().Pods(metav1.NamespaceDefault).Get(context.Background(), name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case err != nil:
			return fmt.Errorf("reading pod %s: %w", name, err)
		}
		return fmt.Errorf("pod %s still there", name)
	})
}

func TestCluster(t *testing.T) {
	k8sDir, kwokDir, err := kwok.DirsFromEnv("make test-e2e")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	slowReady, err := kwok.PodReadyStage("slow-ready", readyDelay, 0, map[string]string{slowLabel: "true"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c, err := kwok.Create(ctx, kwok.Options{
		K8sDir: k8sDir, KwokDir: kwokDir, Nodes: 1,
		Stages: []string{
			slowReady,
			kwok.PodDeleteStage("delete-unheld", holdLabel),
		},
		OmitDefaultStages: []string{kwok.StagePodDelete},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Delete(); err != nil {
			t.Error(err)
		}
	})
	t.Logf("cluster %s up in %s", c.Name(), time.Since(start).Round(time.Millisecond))
	cs := kubernetes.NewForConfigOrDie(c.Config())

	pids := map[string]int{}
	for _, component := range []string{kwok.Etcd, kwok.KubeAPIServer, kwok.KubeControllerManager, kwok.KubeScheduler, kwok.KwokController} {
		pid, err := c.PID(component)
		if err != nil {
			t.Fatal(err)
		}
		pids[component] = pid
	}

	t.Run("a selected pod becomes ready only after the delay, others at once", func(t *testing.T) {
		pods := cs.CoreV1().Pods(metav1.NamespaceDefault)
		if _, err := pods.Create(ctx, newPod("slow", map[string]string{slowLabel: "true", holdLabel: "true"}), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := pods.Create(ctx, newPod("fast", nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		fast := waitReady(t, cs, "fast", 30*time.Second)
		slow := waitReady(t, cs, "slow", readyDelay+30*time.Second)
		t.Logf("ready after creation: fast %s, slow %s", fast.Round(time.Millisecond), slow.Round(time.Millisecond))
		if slow < readyDelay {
			t.Errorf("the slow pod was ready %s after its creation, before the %s delay", slow, readyDelay)
		}
		if fast >= readyDelay {
			t.Errorf("the unselected pod took %s: it should get the default pod-ready stage", fast)
		}
	})

	t.Run("a held pod stays terminating until deleted with grace 0", func(t *testing.T) {
		pods := cs.CoreV1().Pods(metav1.NamespaceDefault)
		if err := pods.Delete(ctx, "fast", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		waitGone(t, cs, "fast", 30*time.Second) // PodDeleteStage finishes it
		if err := pods.Delete(ctx, "slow", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		p, err := pods.Get(ctx, "slow", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("the held pod was deleted: %v", err)
		}
		if p.DeletionTimestamp == nil {
			t.Fatal("the held pod is not terminating")
		}
		if err := pods.Delete(ctx, "slow", metav1.DeleteOptions{GracePeriodSeconds: new(int64(0))}); err != nil {
			t.Fatal(err)
		}
		waitGone(t, cs, "slow", 10*time.Second)
	})

	t.Run("the API server restarts and clients keep working", func(t *testing.T) {
		cms := cs.CoreV1().ConfigMaps(metav1.NamespaceDefault)
		owner, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "owner"}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Log("stopping the API server for 12 s, past the controller manager's renew deadline")
		begin := time.Now()
		if err := c.StopAPIServer(ctx, 0); err != nil {
			t.Fatal(err)
		}
		t.Logf("stopped in %s", time.Since(begin).Round(time.Millisecond))
		if _, err := cms.Get(ctx, "owner", metav1.GetOptions{}); err == nil {
			t.Error("the API server still answers while stopped")
		}
		time.Sleep(12 * time.Second)
		begin = time.Now()
		if err := c.StartAPIServer(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("API server ready again in %s", time.Since(begin).Round(time.Millisecond))

		// An informer started before a restart must see objects created after it.
		var seen atomic.Int32
		factory := informers.NewSharedInformerFactory(cs, 0)
		informer := factory.Core().V1().ConfigMaps().Informer()
		if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(obj any) {
			if cm, ok := obj.(*corev1.ConfigMap); ok && cm.Name == "after" {
				seen.Add(1)
			}
		}}); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		defer close(stop)
		factory.Start(stop)
		factory.WaitForCacheSync(stop)
		begin = time.Now()
		if err := c.RestartAPIServer(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("RestartAPIServer took %s", time.Since(begin).Round(time.Millisecond))

		got, err := cms.Get(ctx, "owner", metav1.GetOptions{})
		if err != nil || got.UID != owner.UID {
			t.Fatalf("the object from before the restart: %v, %v", got, err)
		}
		pid, err := c.PID(kwok.KubeAPIServer)
		if err != nil || pid == pids[kwok.KubeAPIServer] {
			t.Errorf("kube-apiserver pid %d (%v), before %d", pid, err, pids[kwok.KubeAPIServer])
		}
		for _, component := range []string{kwok.Etcd, kwok.KubeControllerManager, kwok.KubeScheduler, kwok.KwokController} {
			if pid, err := c.PID(component); err != nil || pid != pids[component] {
				t.Errorf("%s: pid %d (%v), before %d: only the API server should restart", component, pid, err, pids[component])
			}
		}

		if _, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "after"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 60*time.Second, func() error {
			if seen.Load() == 0 {
				return fmt.Errorf("the informer has not seen the object created after the restart")
			}
			return nil
		})

		t.Log("the scheduler and kwok still run pods, the garbage collector still collects")
		if _, err := cs.CoreV1().Pods(metav1.NamespaceDefault).Create(ctx, newPod("after", nil), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitReady(t, cs, "after", 60*time.Second)
		dependent := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "dependent", OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "v1", Kind: "ConfigMap", Name: owner.Name, UID: owner.UID,
		}}}}
		if _, err := cms.Create(ctx, dependent, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := cms.Delete(ctx, "owner", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		eventually(t, 60*time.Second, func() error {
			_, err := cms.Get(ctx, "dependent", metav1.GetOptions{})
			switch {
			case apierrors.IsNotFound(err):
				return nil
			case err != nil:
				return fmt.Errorf("reading the dependent: %w", err)
			}
			return errors.New("the dependent is still there")
		})
	})
}

// Two clusters created at the same moment, as `go test` does when it runs the e2e and the
// kwok packages in parallel, both become usable: each kwokctl picks its ports by probing
// downwards from the same number, so two creations that overlap would pick the same ports.
func TestClustersCreatedAtOnce(t *testing.T) {
	k8sDir, kwokDir, err := kwok.DirsFromEnv("make test-e2e")
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	clusters := make([]*kwok.Cluster, 2)
	errs := make([]error, 2)
	done := make(chan int)
	for i := range clusters {
		go func() {
			clusters[i], errs[i] = kwok.Create(ctx, kwok.Options{K8sDir: k8sDir, KwokDir: kwokDir, Nodes: 1, ReadyTimeout: time.Minute})
			done <- i
		}()
	}
	for range clusters {
		<-done
	}
	for i, c := range clusters {
		if errs[i] != nil {
			t.Errorf("cluster %d: %v", i, errs[i])
			continue
		}
		t.Cleanup(func() {
			if err := c.Delete(); err != nil {
				t.Error(err)
			}
		})
		if _, err := kubernetes.NewForConfigOrDie(c.Config()).CoreV1().Nodes().List(ctx, metav1.ListOptions{}); err != nil {
			t.Errorf("cluster %s: %v", c.Name(), err)
		}
	}
}
