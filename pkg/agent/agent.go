// Package agent is the Go SDK for writing Hive agents.
//
// An agent runs in a pod of a Hive. It watches the tasks bound to its pod, runs a handler
// for each (up to its concurrency at once), and writes the outcome into the task's status.
// The protocol it follows is described in docs/agent-protocol.md; this package is one
// implementation of it:
//
//	func main() {
//		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
//		defer stop()
//		err := agent.Run(ctx, agent.Options{}, func(ctx context.Context, t *agent.Task) (string, error) {
//			return strings.ToUpper(t.Input), nil
//		})
//		if err != nil {
//			log.Fatal(err)
//		}
//	}
//
// Run reads its identity from the environment the operator injects (POD_NAME,
// POD_NAMESPACE, HIVE_NAME, AGENT_CONCURRENCY), serves /readyz and /healthz, and on
// cancellation of its context stops taking tasks, lets running handlers finish within the
// shutdown grace, and releases the rest back to the queue.
package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/config"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

// Handler does the work of one task attempt. It returns the result to store in
// status.result, or an error that fails the attempt (retried as the task's spec allows).
//
// ctx is cancelled when the attempt's timeout passes, when the task is cancelled or
// deleted, when it is taken away from this agent, and when the shutdown grace runs out.
// The agent writes the outcome those call for at once; the handler should return promptly
// once ctx is done, and what it returns then is discarded. Its slot stays taken until it
// returns, and a handler that has not returned Options.StopGrace after its context ended
// makes the agent report itself not ready and unhealthy.
//
// An error wrapped with Permanent fails the task at once, without the retries its spec
// allows: return it for failures another attempt cannot fix (invalid input, say). A
// result longer than status.result holds fails the task the same way.
type Handler func(ctx context.Context, task *Task) (result string, err error)

// Permanent marks a handler's error as one a retry cannot fix: the task fails for good
// (phase Failed, reason PermanentFailure) after this attempt, whatever spec.maxRetries
// allows. The mark survives further wrapping with %w, and the task's message is the whole
// error's text. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{reason: swarmv1alpha1.ReasonPermanentFailure, err: err}
}

// IsPermanent reports whether err, or an error it wraps, was marked with Permanent: the
// agent fails the task without retrying it.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// permanentError is an attempt's failure that fails its task for good, with the reason
// recorded in the AttemptFailed condition.
type permanentError struct {
	reason string
	err    error
}

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// TaskSelector is the field selector of the tasks an agent watches: those bound to its
// pod that have not finished. Finished tasks leave the watch, so an agent's memory holds
// only the tasks it works on, however many it has run.
func TaskSelector(pod string) fields.Selector {
	return fields.AndSelectors(fields.OneTermEqualSelector(swarmv1alpha1.TaskFieldAgent, pod), swarmv1alpha1.UnfinishedTasks())
}

// Options configure an agent. The zero value reads everything from the environment.
type Options struct {
	// Config reaches the API server; default: in-cluster, or the KUBECONFIG file.
	Config *rest.Config
	// Client, when set, makes the agent's reads and writes instead of one built from Config
	// (the watch always uses Config).
	Client client.Client

	// PodName is the agent's pod, the value of status.agent on its tasks; default $POD_NAME.
	PodName string
	// Namespace is the pod's and its tasks' namespace; default $POD_NAMESPACE.
	Namespace string
	// Hive is the agent's hive; default $HIVE_NAME. Informational.
	Hive string
	// Concurrency is how many handlers run at once; default $AGENT_CONCURRENCY, else 1.
	Concurrency int

	// RunningAfter is how long a handler runs before the agent marks the task Running. A
	// task that finishes sooner skips the Running write, so a quick task costs the API
	// server three writes in all: create, bind, finish. Unset (nil), it is
	// DefaultRunningAfter; zero (or negative) marks every task Running as it starts.
	RunningAfter *time.Duration
	// ShutdownGrace is how long running handlers may go on after Run's context is
	// cancelled before they are cancelled and their tasks released. The releases, and writes
	// still retrying, then get ReleaseTimeout more before they are given up: keep the sum
	// below the pod's terminationGracePeriodSeconds. Default 20s.
	ShutdownGrace time.Duration
	// StopGrace is how long a handler may take to return once its context is cancelled
	// before the agent reports itself not ready and unhealthy (a liveness probe on
	// /healthz then restarts it). Default 30s.
	StopGrace time.Duration
	// HealthAddr is where /readyz and /healthz are served; default ":8080"; "0" disables.
	HealthAddr string

	// ServingAddr is where requests from the hive gateway are served (POST /v1/requests,
	// see docs/agent-protocol.md) with the same handler as tasks; default
	// ":$AGENT_SERVING_PORT" when the operator set it (the hive has spec.serving), else
	// none; "0" disables.
	ServingAddr string
	// ServingConcurrency is how many requests are served at once, apart from the task
	// slots; one more is answered 429. Default $AGENT_SERVING_CONCURRENCY, else 1.
	ServingConcurrency int
	// Logger receives the agent's logs; default discards them.
	Logger logr.Logger
}

// serving reports whether the agent serves requests.
func (o *Options) serving() bool { return o.ServingAddr != "" && o.ServingAddr != "0" }

// DefaultRunningAfter is Options.RunningAfter when it is unset: long enough for a quick
// task to skip the Running write, short enough for people watching a long one to see it
// run.
const DefaultRunningAfter = time.Second

// ReleaseTimeout is how long an agent that is shutting down waits, once its
// ShutdownGrace is over, for the releases of the tasks it stopped and for the writes
// still retrying. Then it interrupts their backoff and gives them up: the pod is about to
// be killed (its default grace period of 30s leaves 10s after the default ShutdownGrace),
// and the operator requeues the tasks of an agent that is gone.
const ReleaseTimeout = 5 * time.Second

// MaxErrorLength is how much of a handler's error the agent stores in the task's message,
// in bytes: handlers that quote output should keep the part that explains the failure
// within it.
const MaxErrorLength = 4096

// ErrNoIdentity is returned by Run when the pod name or namespace is unknown.
var ErrNoIdentity = errors.New("agent: no pod name or namespace: set Options or the POD_NAME and POD_NAMESPACE environment variables")

func (o *Options) defaults() error {
	if o.PodName == "" {
		o.PodName = os.Getenv(swarmv1alpha1.EnvPodName)
	}
	if o.Namespace == "" {
		o.Namespace = os.Getenv(swarmv1alpha1.EnvPodNamespace)
	}
	if o.Hive == "" {
		o.Hive = os.Getenv(swarmv1alpha1.EnvHiveName)
	}
	if o.PodName == "" || o.Namespace == "" {
		return ErrNoIdentity
	}
	if o.Concurrency <= 0 {
		if v, err := strconv.Atoi(os.Getenv(swarmv1alpha1.EnvAgentConcurrency)); err == nil && v > 0 {
			o.Concurrency = v
		} else {
			o.Concurrency = 1
		}
	}
	// A copy: the caller's variable may change while the agent runs.
	o.RunningAfter = ptr.To(ptr.Deref(o.RunningAfter, DefaultRunningAfter))
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = 20 * time.Second
	}
	if o.StopGrace <= 0 {
		o.StopGrace = 30 * time.Second
	}
	if o.HealthAddr == "" {
		o.HealthAddr = ":8080"
	}
	if o.ServingAddr == "" {
		if port := os.Getenv(swarmv1alpha1.EnvServingPort); port != "" {
			o.ServingAddr = ":" + port
		}
	}
	if o.ServingConcurrency <= 0 {
		if v, err := strconv.Atoi(os.Getenv(swarmv1alpha1.EnvServingConcurrency)); err == nil && v > 0 {
			o.ServingConcurrency = v
		} else {
			o.ServingConcurrency = 1
		}
	}
	if o.serving() && o.ServingAddr == o.HealthAddr {
		return fmt.Errorf("agent: requests and health checks cannot both be served on %s: give spec.serving.port another port", o.ServingAddr)
	}
	if o.Logger.GetSink() == nil {
		o.Logger = logr.Discard()
	}
	if o.Config == nil {
		cfg, err := config.GetConfig()
		if err != nil {
			return fmt.Errorf("agent: finding the API server: %w", err)
		}
		o.Config = cfg
	}
	if o.Client == nil {
		c, err := client.New(o.Config, client.Options{Scheme: scheme})
		if err != nil {
			return fmt.Errorf("agent: creating a client: %w", err)
		}
		o.Client = c
	}
	return nil
}
