// Command manager runs the Hive operator: the controllers that keep hives of agent pods and
// dispatch tasks to them.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/controllers"
	"github.com/aihub-dev/hive-operator/internal/lazylog"
	"github.com/aihub-dev/hive-operator/internal/memlimit"
	"github.com/aihub-dev/hive-operator/internal/readiness"
	"github.com/aihub-dev/hive-operator/internal/restmapping"
	"github.com/aihub-dev/hive-operator/internal/version"
)

// options are the manager's command-line flags.
type options struct {
	version       bool
	metricsAddr   string
	metricsSecure bool
	// metricsCertDir holds tls.crt and tls.key for the metrics endpoint; empty for a
	// self-signed certificate.
	metricsCertDir string
	enableHTTP2    bool
	probeAddr      string
	pprofAddr      string

	leaderElect          bool
	leaderElectNamespace string
	leaseDuration        time.Duration
	renewDeadline        time.Duration
	retryPeriod          time.Duration

	namespaces string
	qps        float64
	burst      int
	// gatewayService is the gateways' Service, namespace/name.
	gatewayService string

	controllers controllers.Options
	zap         zap.Options
}

// inCluster reports whether the manager runs in a pod, where leader election is on by
// default (several replicas may run); a manager run from a laptop elects no leader.
func inCluster() bool {
	_, err := os.Stat("/var/run/secrets/kubernetes.io/serviceaccount/token")
	return os.Getenv("KUBERNETES_SERVICE_HOST") != "" && err == nil
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	fs.BoolVar(&o.version, "version", false, "Print the version and exit.")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8443", "Address the metrics endpoint binds to; 0 disables it.")
	fs.BoolVar(&o.metricsSecure, "metrics-secure", true,
		"Serve metrics over HTTPS to callers authorised to get /metrics (authenticated and authorised by the API server); false serves plain HTTP for local runs.")
	fs.StringVar(&o.metricsCertDir, "metrics-cert-dir", "",
		"Directory with tls.crt and tls.key (a mounted kubernetes.io/tls Secret) for the HTTPS metrics endpoint, reloaded when they change; empty serves a self-signed certificate.")
	fs.BoolVar(&o.enableHTTP2, "enable-http2", false,
		"Serve metrics over HTTP/2; off by default against the HTTP/2 rapid-reset and stream-cancellation attacks.")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address /healthz and /readyz bind to.")
	fs.StringVar(&o.pprofAddr, "pprof-bind-address", "", "Address Go's pprof profiles are served on, for profiling; empty disables them.")

	fs.BoolVar(&o.leaderElect, "leader-elect", inCluster(),
		"Elect a leader with a Lease so that only one of several replicas works at a time (default: on when running in a cluster).")
	fs.StringVar(&o.leaderElectNamespace, "leader-election-namespace", "",
		"Namespace of the leader-election Lease; defaults to the namespace the manager runs in.")
	fs.DurationVar(&o.leaseDuration, "leader-elect-lease-duration", 15*time.Second,
		"How long a standby waits after the leader's last renewal before taking over.")
	fs.DurationVar(&o.renewDeadline, "leader-elect-renew-deadline", 10*time.Second,
		"How long the leader retries renewing its lease before it stops working.")
	fs.DurationVar(&o.retryPeriod, "leader-elect-retry-period", 2*time.Second, "How often candidates try to acquire or renew the lease.")

	fs.StringVar(&o.namespaces, "namespaces", "",
		"Comma-separated namespaces whose hives and tasks the operator manages; empty for all.")
	fs.Float64Var(&o.qps, "kube-api-qps", 300, "Requests per second the operator may make to the API server.")
	fs.IntVar(&o.burst, "kube-api-burst", 600, "Requests the operator may make in a burst above --kube-api-qps.")

	fs.IntVar(&o.controllers.HiveConcurrency, "hive-concurrency", 2, "Hives whose pods are reconciled at once.")
	fs.IntVar(&o.controllers.DispatchConcurrency, "dispatch-concurrency", 4, "Hives whose queues are dispatched at once.")
	fs.IntVar(&o.controllers.BindConcurrency, "bind-concurrency", 16, "Binds in flight at once for one hive.")
	fs.IntVar(&o.controllers.TaskConcurrency, "task-concurrency", 8, "Tasks whose lifecycle is reconciled at once.")
	fs.DurationVar(&o.controllers.AgentLostGrace, "agent-lost-grace", 15*time.Second,
		"How long an agent may stay not ready before its tasks are requeued (an agent whose pod is being deleted has its pod's grace period instead).")
	fs.DurationVar(&o.controllers.MissingDependencyTimeout, "missing-dependency-timeout", 5*time.Minute,
		"How long a task waits for a task named in its dependsOn that does not exist before it fails.")
	fs.DurationVar(&o.controllers.FinishedTaskSweepInterval, "finished-task-sweep-interval", 5*time.Minute,
		"How often every finished task is listed, a page at a time, to delete those past their retention and enforce maxFinishedTasks; tasks that finish while the operator runs are deleted on time without it.")
	fs.StringVar(&o.gatewayService, "gateway-service", "",
		"The hive gateways' Service, namespace/name: each gateway it lists is asked for its requests queued and in flight, which scale hives and keep busy agents from deletion. Empty: hives scale on tasks only.")
	fs.StringVar(&o.controllers.Gateways.Port, "gateway-load-port", "metrics", "The name of the gateway Service's port that serves /load.")
	fs.DurationVar(&o.controllers.Gateways.Interval, "gateway-load-interval", time.Second, "How often each gateway is asked for its load.")
	o.zap.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("parsing flags: %w", err)
	}
	if o.gatewayService != "" {
		ns, name, ok := strings.Cut(o.gatewayService, "/")
		if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
			return nil, fmt.Errorf("--gateway-service=%q must be namespace/name", o.gatewayService)
		}
		o.controllers.Gateways.Namespace, o.controllers.Gateways.Service = ns, name
	}
	if o.controllers.Gateways.Interval <= 0 {
		return nil, fmt.Errorf("--gateway-load-interval=%s must be positive", o.controllers.Gateways.Interval)
	}
	if o.version {
		return o, nil
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q: every setting is a --flag", fs.Args())
	}
	if o.qps <= 0 || o.burst <= 0 {
		return nil, errors.New("--kube-api-qps and --kube-api-burst must be positive")
	}
	if o.metricsCertDir != "" {
		// controller-runtime falls back to a self-signed certificate when the files are
		// missing, which a scraper verifying the certificate would refuse: say so at start.
		for _, name := range []string{"tls.crt", "tls.key"} {
			if _, err := os.Stat(filepath.Join(o.metricsCertDir, name)); err != nil {
				return nil, fmt.Errorf("--metrics-cert-dir: %w; mount a Secret with tls.crt and tls.key there", err)
			}
		}
	}
	if o.leaderElect && (o.leaseDuration <= o.renewDeadline || o.renewDeadline <= o.retryPeriod || o.retryPeriod <= 0) {
		return nil, errors.New("leader election needs --leader-elect-lease-duration > --leader-elect-renew-deadline > --leader-elect-retry-period > 0")
	}
	return o, nil
}

func main() {
	os.Exit(start(ctrl.SetupSignalHandler(), os.Args[1:], ctrl.GetConfig, os.Stdout, os.Stderr))
}

// start is the manager's process without the process: it parses args, sets up logging and
// the Go memory limit, finds the cluster through config and runs until ctx ends, and
// returns the exit code (0 also for --help and --version, 2 for bad flags, 1 when the
// manager fails).
func start(ctx context.Context, args []string, config func() (*rest.Config, error), stdout, stderr io.Writer) int {
	o, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, err)
		return 2
	}
	if o.version {
		fmt.Fprintln(stdout, version.String("manager"))
		return 0
	}
	ctrl.SetLogger(lazylog.New(zap.New(zap.UseFlagOptions(&o.zap), zap.WriteTo(stderr))))
	// Without GOMEMLIMIT, the heap may grow to twice its live size, past the container's
	// limit: give the runtime a soft limit under it instead.
	if os.Getenv("GOMEMLIMIT") == "" {
		if soft, ok := memlimit.FromCgroup(os.ReadFile); ok {
			debug.SetMemoryLimit(soft)
			ctrl.Log.WithName("setup").Info("Go memory limit set from the container's", "bytes", soft, "share", memlimit.Share)
		}
	}
	cfg, err := config()
	if err != nil {
		ctrl.Log.Error(err, "unable to find a kubeconfig or in-cluster configuration")
		return 1
	}
	if err := run(ctx, cfg, o); err != nil {
		ctrl.Log.Error(err, "the manager stopped with an error")
		return 1
	}
	return 0
}

// run starts the manager and blocks until ctx is cancelled (then shuts down gracefully
// within the manager's grace period) or the manager fails.
func run(ctx context.Context, cfg *rest.Config, o *options) error {
	log := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(swarmv1alpha1.AddToScheme(scheme))

	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = float32(o.qps), o.burst

	var tlsOpts []func(*tls.Config)
	if !o.enableHTTP2 {
		tlsOpts = append(tlsOpts, func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} })
	}
	metricsOpts := metricsserver.Options{BindAddress: o.metricsAddr, SecureServing: o.metricsSecure, TLSOpts: tlsOpts, CertDir: o.metricsCertDir}
	if o.metricsSecure {
		metricsOpts.FilterProvider = filters.WithAuthenticationAndAuthorization
	}

	cacheOpts := o.controllers.Gateways.Cache(controllers.CacheOptions())
	if o.namespaces != "" {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range strings.Split(o.namespaces, ",") {
			if ns = strings.TrimSpace(ns); ns != "" {
				cacheOpts.DefaultNamespaces[ns] = cache.Config{}
				o.controllers.Namespaces = append(o.controllers.Namespaces, ns)
			}
		}
	}

	leaseDuration, renewDeadline, retryPeriod := o.leaseDuration, o.renewDeadline, o.retryPeriod
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Cache:                         cacheOpts,
		MapperProvider:                restmapping.Provider,
		Metrics:                       metricsOpts,
		HealthProbeBindAddress:        o.probeAddr,
		PprofBindAddress:              o.pprofAddr,
		LeaderElection:                o.leaderElect,
		LeaderElectionID:              "hive-operator.swarm.aihub.dev",
		LeaderElectionNamespace:       o.leaderElectNamespace,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &leaseDuration,
		RenewDeadline:                 &renewDeadline,
		RetryPeriod:                   &retryPeriod,
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	if err := controllers.Setup(ctx, mgr, o.controllers); err != nil {
		return fmt.Errorf("setting up the controllers: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return fmt.Errorf("adding the health check: %w", err)
	}
	// Ready once the caches have synced: a replica that has not seen the cluster yet should
	// not receive traffic (metrics) nor count as available in a rollout of the operator.
	if err := mgr.AddReadyzCheck("caches", readiness.CachesSynced(mgr.GetCache())); err != nil {
		return fmt.Errorf("adding the readiness check: %w", err)
	}

	if err := mgr.Add(releaseAfterSync{cache: mgr.GetCache()}); err != nil {
		return fmt.Errorf("adding the memory release: %w", err)
	}

	log.Info("starting the manager", "leaderElection", o.leaderElect, "namespaces", o.namespaces)
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("running the manager: %w", err)
	}
	return nil
}

// releaseAfterSync returns the garbage of the caches' initial lists to the system once they
// have synced. Decoding them (inputs and results the cache strips, the watches' buffers)
// grows the heap far past what the caches keep, and the runtime gives pages back only
// slowly: without it the process's resident size would stay at its start-up peak.
type releaseAfterSync struct{ cache cache.Cache }

// NeedLeaderElection is false: every replica has caches.
func (releaseAfterSync) NeedLeaderElection() bool { return false }

// Start waits for the caches' initial sync, then releases what is free.
func (r releaseAfterSync) Start(ctx context.Context) error {
	if r.cache.WaitForCacheSync(ctx) {
		debug.FreeOSMemory()
	}
	return nil
}
