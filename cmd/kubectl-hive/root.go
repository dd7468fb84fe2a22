package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/version"
)

// scheme holds the types the plugin reads and writes: Hives, Tasks and Pods.
var scheme = runtime.NewScheme()

func init() {
	utilruntime.Must(corev1.AddToScheme(scheme))
	utilruntime.Must(swarmv1alpha1.AddToScheme(scheme))
}

// options is what every command shares: where the cluster is, the streams, and the seams
// the tests replace.
type options struct {
	flags   *genericclioptions.ConfigFlags
	streams genericiooptions.IOStreams
	// newClient makes the client from the rest config the flags describe.
	newClient func(*rest.Config) (client.WithWatch, error)
	now       func() time.Time
	// isTerminal reports whether w is a terminal, where a progress line is rewritten in
	// place rather than printed once per change.
	isTerminal func(w io.Writer) bool
}

func newOptions(streams genericiooptions.IOStreams) *options {
	return &options{
		flags:   genericclioptions.NewConfigFlags(true),
		streams: streams,
		newClient: func(cfg *rest.Config) (client.WithWatch, error) {
			return client.NewWithWatch(cfg, client.Options{Scheme: scheme})
		},
		now:        time.Now,
		isTerminal: isTerminal,
	}
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func newRootCommand(o *options) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "kubectl-hive",
		Short: "Inspect Hives and submit Tasks",
		Long: `kubectl hive shows what the agents of a Hive are doing, the queue of its Tasks
in dispatch order and the results of finished Tasks, and submits Tasks.`,
		Annotations: map[string]string{
			// Help and usage say "kubectl hive", the way a user runs the plugin.
			cobra.CommandDisplayNameAnnotation: "kubectl hive",
		},
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version.Get(),
	}
	cmd.SetVersionTemplate(version.String("kubectl-hive") + "\n")
	cmd.SetIn(o.streams.In)
	cmd.SetOut(o.streams.Out)
	cmd.SetErr(o.streams.ErrOut)
	o.flags.AddFlags(cmd.PersistentFlags())
	cmd.AddCommand(newStatusCommand(o), newSubmitCommand(o), newQueueCommand(o), newResultsCommand(o), newVersionCommand())
	return cmd
}

// newVersionCommand prints the plugin's release, which talks to any operator of the same
// API version.
func newVersionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the plugin's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := fmt.Fprintln(cmd.OutOrStdout(), version.String("kubectl-hive")); err != nil {
				return fmt.Errorf("printing the version: %w", err)
			}
			return nil
		},
	}
}

// connect returns a client for the cluster the flags name, and the namespace to work in.
func (o *options) connect() (client.WithWatch, string, error) {
	ns, _, err := o.flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("reading the namespace from the kubeconfig: %w; pass --kubeconfig, --context or -n", err)
	}
	cfg, err := o.flags.ToRESTConfig()
	if err != nil {
		return nil, "", fmt.Errorf("loading the kubeconfig: %w; pass --kubeconfig or set KUBECONFIG", err)
	}
	c, err := o.newClient(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("creating a client for %s: %w", cfg.Host, err)
	}
	return c, ns, nil
}

// hiveNotFound is the error for a hive that does not exist, saying how to find the right
// one.
func hiveNotFound(name, namespace string) error {
	return fmt.Errorf("hive %q not found in namespace %q: list the hives with `kubectl get hives -n %s`, or pick another namespace with -n",
		name, namespace, namespace)
}

// explain adds what to do to the API errors a person can act on, after saying what was
// being done.
func explain(doing string, err error) error {
	switch {
	case apierrors.IsForbidden(err):
		return fmt.Errorf("%s: %w; ask for access, or check --context and --namespace", doing, err)
	case apierrors.IsUnauthorized(err):
		return fmt.Errorf("%s: %w; log in again, or check --kubeconfig and --context", doing, err)
	case meta.IsNoMatchError(err):
		return fmt.Errorf("%s: %w; are the Hive and Task CRDs installed in this cluster?", doing, err)
	default:
		return fmt.Errorf("%s: %w", doing, err)
	}
}

// outputFlag is the -o flag of a command.
type outputFlag struct{ format string }

const (
	outputTable = ""
	outputJSON  = "json"
	outputYAML  = "yaml"
)

// add adds -o to cmd; without names what the command prints without it.
func (f *outputFlag) add(cmd *cobra.Command, without string) {
	cmd.Flags().StringVarP(&f.format, "output", "o", outputTable, "Output format: json or yaml. Without it, "+without+".")
}

func (f *outputFlag) validate() error {
	switch f.format {
	case outputTable, outputJSON, outputYAML:
		return nil
	}
	return fmt.Errorf("unsupported output format %q: use -o json or -o yaml, or leave -o out for a table", f.format)
}

// getHive reads a hive, with an error that says what to do when it does not exist.
func getHive(ctx context.Context, c client.Client, namespace, name string) (*swarmv1alpha1.Hive, error) {
	h := &swarmv1alpha1.Hive{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, h); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, hiveNotFound(name, namespace)
		}
		return nil, explain(fmt.Sprintf("reading hive %q in namespace %q", name, namespace), err)
	}
	return h, nil
}
