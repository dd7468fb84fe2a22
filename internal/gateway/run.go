package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/readiness"
	"github.com/aihub-dev/hive-operator/internal/requestload"
)

// RunOptions configure a gateway process.
type RunOptions struct {
	// Listener is where requests are served; ListenAddr is opened when it is nil.
	Listener   net.Listener
	ListenAddr string
	// ProbeAddr serves /healthz and /readyz (ready once the caches have synced);
	// MetricsAddr the metrics and the load the operator polls, at /load ("0" disables
	// either).
	ProbeAddr, MetricsAddr string
	// Namespaces are the namespaces whose hives are served; all when empty.
	Namespaces []string
	// ShutdownGrace is how long requests in flight may finish once ctx ends.
	ShutdownGrace time.Duration
	Handler       Options
}

// Run runs a gateway until ctx ends: a manager whose cache watches hives and their agent
// pods, the syncer that keeps the pool in step with it, and the request server, which
// answers only once the caches have synced. It elects no leader: every replica serves.
func Run(ctx context.Context, cfg *rest.Config, o RunOptions) error {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(swarmv1alpha1.AddToScheme(scheme))
	cacheOpts := CacheOptions()
	if len(o.Namespaces) > 0 {
		cacheOpts.DefaultNamespaces = map[string]cache.Config{}
		for _, ns := range o.Namespaces {
			cacheOpts.DefaultNamespaces[ns] = cache.Config{}
		}
	}
	pool := NewPool(nil)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: scheme,
		Cache:  cacheOpts,
		// The gateway serves its own metrics endpoint (metricsServer).
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: o.ProbeAddr,
	})
	if err != nil {
		return fmt.Errorf("creating the gateway's manager: %w", err)
	}
	o.Handler.Metrics = NewMetrics(pool)
	if o.MetricsAddr != "0" && o.MetricsAddr != "" {
		if err := mgr.Add(metricsServer(o.MetricsAddr, pool, o.Handler.Metrics)); err != nil {
			return fmt.Errorf("adding the metrics server: %w", err)
		}
	}
	if err := NewSyncer(mgr.GetCache(), pool).SetupWithManager(mgr); err != nil {
		return err
	}
	if err := errors.Join(mgr.AddHealthzCheck("healthz", healthz.Ping), mgr.AddReadyzCheck("caches", readiness.CachesSynced(mgr.GetCache()))); err != nil {
		return fmt.Errorf("adding the health checks: %w", err)
	}
	l := o.Listener
	if l == nil {
		if l, err = net.Listen("tcp", o.ListenAddr); err != nil {
			return fmt.Errorf("serving requests on %s: %w", o.ListenAddr, err)
		}
	}
	if o.Handler.Logger.GetSink() == nil {
		o.Handler.Logger = ctrl.Log.WithName("gateway")
	}
	srv := &http.Server{Handler: NewHandler(pool, o.Handler), ReadHeaderTimeout: 10 * time.Second}
	err = mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		// Requests are routed from the cache: none is taken before it has synced.
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return nil
		}
		errs := make(chan error, 1)
		go func() { errs <- srv.Serve(l) }()
		select {
		case err := <-errs:
			return fmt.Errorf("serving requests: %w", err)
		case <-ctx.Done():
		}
		shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.ShutdownGrace)
		defer cancel()
		if err := srv.Shutdown(shutdown); err != nil {
			_ = srv.Close()
		}
		return nil
	}))
	if err != nil {
		return fmt.Errorf("adding the request server: %w", err)
	}
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("running the gateway: %w", err)
	}
	return nil
}

// metricsServer serves, on addr, the gateway's metrics at /metrics (its own registry, so
// that gateways in one process each count their own, and controller-runtime's, for its
// watches and client) and its load at /load, which the operator polls (package
// requestload).
func metricsServer(addr string, pool *Pool, m *Metrics) manager.RunnableFunc {
	return func(ctx context.Context) error {
		reg := prometheus.NewRegistry()
		if err := m.Register(reg); err != nil {
			return fmt.Errorf("registering the gateway's metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(prometheus.Gatherers{reg, ctrlmetrics.Registry}, promhttp.HandlerOpts{}))
		mux.Handle(requestload.Path, ReportHandler(pool))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("serving metrics on %s: %w", addr, err)
		}
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			<-ctx.Done()
			_ = srv.Close()
		}()
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("serving metrics: %w", err)
		}
		return nil
	}
}
