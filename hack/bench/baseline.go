package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/aihub-dev/hive-operator/test/kwok"
)

// kwokCluster is a simulated cluster made by kwokctl's binary runtime (test/kwok): a real
// etcd, API server, scheduler and controller manager, with kwok playing the nodes and their
// kubelets, and the CRDs installed.
type kwokCluster struct {
	*kwok.Cluster
	cluster    *cluster
	createTime time.Duration
}

// kwokFuture is a kwok cluster being created in the background.
type kwokFuture struct {
	done    chan struct{}
	cluster *kwokCluster
	err     error
}

// resolveKwokAssets finds (or provides) the binaries of a kwok cluster.
func (b *bench) resolveKwokAssets(ctx context.Context) error {
	var err error
	if b.cfg.clusterAssets == "" {
		b.logf("providing the cluster binaries (hack/setup-envtest.sh cluster)")
		if b.cfg.clusterAssets, err = setupEnvtest(ctx, b.root, "cluster"); err != nil {
			return err
		}
	}
	if b.cfg.kwokDir == "" {
		if b.cfg.kwokDir, err = setupEnvtest(ctx, b.root, "print-kwok-dir"); err != nil {
			return err
		}
	}
	b.res.Machine.KwokVersion = toolVersion(filepath.Join(b.cfg.kwokDir, "kwokctl"))
	return nil
}

// startKwok creates the kwok cluster in the background.
func (b *bench) startKwok(ctx context.Context) *kwokFuture {
	o := kwok.Options{
		Name:    fmt.Sprintf("hive-bench-%d", os.Getpid()),
		WorkDir: filepath.Join(b.workDir, "kwok"),
		K8sDir:  b.cfg.clusterAssets, KwokDir: b.cfg.kwokDir, Nodes: b.cfg.kwokNodes,
	}
	f := &kwokFuture{done: make(chan struct{})}
	b.logf("kwok: creating cluster %s (%d nodes)", o.Name, o.Nodes)
	go func() {
		defer close(f.done)
		f.cluster, f.err = createKwok(ctx, b.root, o)
	}()
	return f
}

// createKwok creates the cluster, waits until it is usable and installs the CRDs.
func createKwok(ctx context.Context, root string, o kwok.Options) (*kwokCluster, error) {
	start := time.Now()
	k, err := kwok.Create(ctx, o)
	if err != nil {
		return nil, err
	}
	cfg := k.Config()
	cfg.QPS, cfg.Burst = clientQPS, clientBurst
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, errors.Join(fmt.Errorf("creating a kwok client: %w", err), k.Delete())
	}
	if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{
		Paths: []string{filepath.Join(root, "config", "crd", "bases")}, ErrorIfPathMissing: true, Scheme: scheme,
	}); err != nil {
		return nil, errors.Join(fmt.Errorf("installing the CRDs on kwok: %w", err), k.Delete())
	}
	// The API server and etcd are metered like envtest's.
	pids := map[string]int{}
	for name, component := range map[string]string{"apiserver": kwok.KubeAPIServer, "etcd": kwok.Etcd} {
		if pid, err := k.PID(component); err == nil {
			pids[name] = pid
		}
	}
	return &kwokCluster{
		Cluster:    k,
		cluster:    &cluster{config: cfg, client: c, kubeconfig: k.Kubeconfig(), pids: pids},
		createTime: time.Since(start),
	}, nil
}

// wait returns the cluster once it is created.
func (f *kwokFuture) wait(ctx context.Context) (*kwokCluster, error) {
	select {
	case <-f.done:
		return f.cluster, f.err
	case <-ctx.Done():
		return nil, fmt.Errorf("creating the kwok cluster: %w", context.Cause(ctx))
	}
}

// delete deletes the cluster once its creation has ended; its processes end with it.
func (f *kwokFuture) delete() {
	<-f.done
	if f.cluster != nil {
		_ = f.cluster.Delete()
	}
}

// runBaseline times Jobs from creation to their pod Running, then tasks from creation to
// bound to a warm agent, on the same kwok cluster.
func (b *bench) runBaseline(ctx context.Context, f *kwokFuture) (*BaselineResult, error) {
	k, err := f.wait(ctx)
	if err != nil {
		return nil, err
	}
	b.logf("kwok: cluster ready in %s", k.createTime.Round(time.Second))
	res := &BaselineResult{Nodes: b.cfg.kwokNodes, ClusterCreateSeconds: round(k.createTime.Seconds(), 1), Jobs: b.cfg.jobs}

	b.logf("kwok: %d Jobs, one every %s", b.cfg.jobs, b.cfg.jobGap)
	jobs, err := measureJobs(ctx, k.cluster.client, "default", b.cfg.jobs, b.cfg.jobGap)
	if err != nil {
		return res, err
	}
	res.JobToRunning, res.JobsRunning = summarise(jobs), len(jobs)
	b.logf("kwok: Job → pod Running p50 %s ms (%d of %d)", fmtMs(res.JobToRunning.P50), len(jobs), b.cfg.jobs)

	w, err := b.newWorld(ctx, k.cluster, worldSpec{ns: "default", hive: "warm", agents: 2, concurrency: b.cfg.concurrency})
	if err != nil {
		return res, err
	}
	defer w.close()
	n := b.cfg.jobs
	b.logf("kwok: %d tasks for 2 warm agents, one every %s", n, b.cfg.warmGap)
	run, err := w.run(ctx, runSpec{name: "warm tasks on kwok", prefix: "warm", kind: "warm", tasks: n, drive: spacedDriver(n, b.cfg.warmGap)})
	if err != nil {
		return res, err
	}
	res.WarmTasks, res.WarmSucceeded = n, run.Outcome.Succeeded
	res.WarmBind, res.WarmEndToEnd = run.QueueWait, run.EndToEnd
	res.RatioP50 = round(ratio(res.JobToRunning.P50, res.WarmBind.P50), 1)
	res.RatioP95 = round(ratio(res.JobToRunning.P95, res.WarmBind.P95), 1)
	b.logf("kwok: task → bound p50 %s ms: %.0f× faster than a Job", fmtMs(res.WarmBind.P50), res.RatioP50)
	return res, nil
}

// spacedDriver creates tasks one at a time with a gap, to measure latency without load.
func spacedDriver(n int, gap time.Duration) driver {
	return func(ctx context.Context, create func(i int) error) error {
		for i := range n {
			if err := create(i); err != nil {
				return err
			}
			sleepCtx(ctx, gap)
			if ctx.Err() != nil {
				return fmt.Errorf("creating tasks: %w", context.Cause(ctx))
			}
		}
		return nil
	}
}

// measureJobs creates n Jobs one at a time, gap apart, and returns for each whose pod reached
// Running (or beyond) within two minutes the time from its creation.
func measureJobs(ctx context.Context, c client.WithWatch, ns string, n int, gap time.Duration) ([]time.Duration, error) {
	var mu sync.Mutex
	running := map[string]time.Time{}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ready := make(chan struct{})
	go watchLoop(wctx, c, ns, func() client.ObjectList { return &corev1.PodList{} }, func(ev watch.Event) {
		pod, ok := ev.Object.(*corev1.Pod)
		if !ok || ev.Type == watch.Deleted {
			return
		}
		switch pod.Status.Phase {
		case corev1.PodRunning, corev1.PodSucceeded, corev1.PodFailed:
			job := pod.Labels[batchv1.JobNameLabel]
			mu.Lock()
			if _, seen := running[job]; !seen {
				running[job] = time.Now()
			}
			mu.Unlock()
		}
	}, ready, client.HasLabels{batchv1.JobNameLabel})
	if err := waitWatches(ctx, ns, ready); err != nil {
		return nil, err
	}

	created := map[string]time.Time{}
	for i := range n {
		job := &batchv1.Job{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("bench-job-%d", i)},
			Spec: batchv1.JobSpec{
				BackoffLimit: ptr.To(int32(0)),
				Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{
					RestartPolicy: corev1.RestartPolicyNever,
					Containers:    []corev1.Container{{Name: "work", Image: "bench.invalid/job:v1"}},
				}},
			},
		}
		created[job.Name] = time.Now()
		if err := c.Create(ctx, job); err != nil {
			return nil, fmt.Errorf("creating job %s: %w", job.Name, err)
		}
		sleepCtx(ctx, gap)
	}
	deadline := time.Now().Add(2 * time.Minute)
	for {
		mu.Lock()
		done := len(running) >= n
		mu.Unlock()
		if done || time.Now().After(deadline) {
			break
		}
		sleepCtx(ctx, 50*time.Millisecond)
		if ctx.Err() != nil {
			return nil, fmt.Errorf("waiting for the jobs' pods: %w", context.Cause(ctx))
		}
	}
	mu.Lock()
	defer mu.Unlock()
	var out []time.Duration
	for name, at := range created {
		if r, ok := running[name]; ok {
			out = append(out, r.Sub(at))
		}
	}
	return out, nil
}
