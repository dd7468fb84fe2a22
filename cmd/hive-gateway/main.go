// Command hive-gateway serves requests to hives: POST
// /v1/namespaces/{namespace}/hives/{hive}/requests is forwarded to an agent of the hive with
// a free serving slot (the least loaded, Ready and not draining) and its answer streamed
// back, with nothing written to the API server. It is stateless: run as many replicas as
// the load needs; each watches the hives and their agent pods and holds its own queue per
// hive. See docs/hives.md#serving-requests and docs/agent-protocol.md#requests.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/aihub-dev/hive-operator/internal/gateway"
	"github.com/aihub-dev/hive-operator/internal/version"
)

// options are the gateway's command-line flags.
type options struct {
	version       bool
	listen        string
	probeAddr     string
	metricsAddr   string
	namespaces    string
	maxTries      int
	shutdownGrace time.Duration
	qps           float64
	burst         int
	zap           zap.Options
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("hive-gateway", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.BoolVar(&o.version, "version", false, "Print the version and exit.")
	fs.StringVar(&o.listen, "listen", ":8000", "Address requests are served on.")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "Address /healthz and /readyz bind to (ready once the watches have synced).")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8082", "Address the metrics endpoint binds to; 0 disables it.")
	fs.StringVar(&o.namespaces, "namespaces", "", "Comma-separated namespaces whose hives are served; empty for all.")
	fs.IntVar(&o.maxTries, "max-tries", 3, "Agents that may refuse a request (they cannot be reached, or are shutting down) before it is answered 503; one agent that refuses for a moment is tried again after a backoff, within the hive's queue timeout.")
	fs.DurationVar(&o.shutdownGrace, "shutdown-grace", 25*time.Second,
		"How long requests in flight may finish after SIGTERM; keep it below the pod's terminationGracePeriodSeconds.")
	fs.Float64Var(&o.qps, "kube-api-qps", 50, "Requests per second the gateway may make to the API server (its watches only).")
	fs.IntVar(&o.burst, "kube-api-burst", 100, "Requests the gateway may make in a burst above --kube-api-qps.")
	o.zap.BindFlags(fs)
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("parsing flags: %w", err)
	}
	switch {
	case o.version:
		return o, nil
	case fs.NArg() > 0:
		return nil, fmt.Errorf("unexpected arguments %q: every setting is a --flag", fs.Args())
	case o.maxTries < 1:
		return nil, fmt.Errorf("--max-tries=%d must be at least 1", o.maxTries)
	case o.shutdownGrace <= 0:
		return nil, fmt.Errorf("--shutdown-grace=%s must be positive", o.shutdownGrace)
	case o.qps <= 0 || o.burst <= 0:
		return nil, errors.New("--kube-api-qps and --kube-api-burst must be positive")
	}
	return o, nil
}

func main() {
	os.Exit(run(ctrl.SetupSignalHandler(), os.Args[1:], ctrl.GetConfig, os.Stdout, os.Stderr))
}

// run is the program, until ctx ends: it returns the exit code (2 for bad flags, 1 when the
// gateway fails). getConfig finds the cluster.
func run(ctx context.Context, args []string, getConfig func() (*rest.Config, error), stdout, stderr io.Writer) int {
	o, err := parseFlags(args)
	if errors.Is(err, flag.ErrHelp) {
		_, _ = fmt.Fprintln(stdout, "Usage: hive-gateway [flags]; see docs/hives.md#serving-requests")
		return 0
	}
	if err != nil {
		_, _ = fmt.Fprintf(stderr, "hive-gateway: %v\n", err)
		return 2
	}
	if o.version {
		_, _ = fmt.Fprintln(stdout, version.String("hive-gateway"))
		return 0
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&o.zap), zap.WriteTo(stderr)))
	cfg, err := getConfig()
	if err != nil {
		ctrl.Log.Error(err, "unable to find a kubeconfig or in-cluster configuration")
		return 1
	}
	cfg.QPS, cfg.Burst = float32(o.qps), o.burst
	var namespaces []string
	for _, ns := range strings.Split(o.namespaces, ",") {
		if ns = strings.TrimSpace(ns); ns != "" {
			namespaces = append(namespaces, ns)
		}
	}
	err = gateway.Run(ctx, cfg, gateway.RunOptions{
		ListenAddr: o.listen, ProbeAddr: o.probeAddr, MetricsAddr: o.metricsAddr, Namespaces: namespaces,
		ShutdownGrace: o.shutdownGrace, Handler: gateway.Options{MaxTries: o.maxTries},
	})
	if err != nil {
		ctrl.Log.Error(err, "the gateway stopped with an error")
		return 1
	}
	return 0
}
