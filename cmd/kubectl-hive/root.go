package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
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
		Short: "Inspect Hives, submit Tasks and send requests",
		Long: `kubectl hive shows what the agents of a Hive are doing, the queue of its Tasks
in dispatch order and the results of finished Tasks, submits Tasks, and sends requests
through the hive gateway.`,
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
	cmd.AddCommand(newStatusCommand(o), newSubmitCommand(o), newRequestCommand(o), newQueueCommand(o), newResultsCommand(o), newVersionCommand())
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

// namespace is the namespace the flags name: -n, else the kubeconfig context's, else
// default.
func (o *options) namespace() (string, error) {
	ns, _, err := o.flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return "", fmt.Errorf("reading the namespace from the kubeconfig: %w; pass --kubeconfig, --context or -n", err)
	}
	return ns, nil
}

// connect returns a client for the cluster the flags name, and the namespace to work in:
// all of them ("") with allNamespaces.
func (o *options) connect(allNamespaces bool) (client.WithWatch, string, error) {
	ns, err := o.namespace()
	if err != nil {
		return nil, "", err
	}
	cfg, err := o.flags.ToRESTConfig()
	if err != nil {
		return nil, "", fmt.Errorf("loading the kubeconfig: %w; pass --kubeconfig or set KUBECONFIG", err)
	}
	// The API server's warnings (a deprecation, a policy in Warn mode) are for the person
	// running the command: on stderr, each once, as kubectl prints them.
	cfg.WarningHandler = rest.NewWarningWriter(o.streams.ErrOut, rest.WarningWriterOptions{Deduplicate: true})
	c, err := o.newClient(cfg)
	if err != nil {
		return nil, "", fmt.Errorf("creating a client for %s: %w", cfg.Host, err)
	}
	if allNamespaces {
		ns = metav1.NamespaceAll
	}
	return c, ns, nil
}

// completeHive completes a HIVE argument with the names of the hives in the namespace.
func (o *options) completeHive(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	names, err := o.hiveNames(cmd.Context(), toComplete)
	if err != nil {
		// Shells hide this; it shows when `kubectl hive __complete ...` is run by hand.
		_, _ = fmt.Fprintln(cmd.ErrOrStderr(), "error: "+err.Error())
		return nil, cobra.ShellCompDirectiveError
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

func (o *options) hiveNames(ctx context.Context, prefix string) ([]string, error) {
	c, ns, err := o.connect(false)
	if err != nil {
		return nil, err
	}
	list := &swarmv1alpha1.HiveList{}
	if err := c.List(ctx, list, client.InNamespace(ns)); err != nil {
		return nil, explain(fmt.Sprintf("listing hives in namespace %q", ns), err)
	}
	var names []string
	for _, h := range list.Items {
		if strings.HasPrefix(h.Name, prefix) {
			names = append(names, h.Name)
		}
	}
	return names, nil
}

// scope is which objects a command lists: those of the namespace or, with -A, of all
// namespaces, that the label selector of -l selects.
type scope struct {
	allNamespaces bool
	selector      string
}

// add adds -A and -l to cmd; what says what -l selects.
func (s *scope) add(cmd *cobra.Command, what string) {
	cmd.Flags().BoolVarP(&s.allNamespaces, "all-namespaces", "A", false, "List across all namespaces, whatever -n says.")
	cmd.Flags().StringVarP(&s.selector, "selector", "l", "", "Label selector on "+what+", such as -l team=search or -l 'tier in (a,b)'.")
}

// parse returns the label selector of -l; hive is the HIVE a command names, refused
// together with -A as kubectl refuses a name with it.
func (s *scope) parse(hive string) (labels.Selector, error) {
	if s.allNamespaces && hive != "" {
		return nil, fmt.Errorf("a hive name needs a namespace, but -A covers all of them: pass the hive's namespace with -n, or drop the name %s", hive)
	}
	sel, err := labels.Parse(s.selector)
	if err != nil {
		return nil, fmt.Errorf("invalid label selector %q: %w", s.selector, err)
	}
	return sel, nil
}

// hiveNotFound is the error for a hive that does not exist, saying how to find the right
// one.
func hiveNotFound(name, namespace string) error {
	return fmt.Errorf("hive %q not found in namespace %q: list the hives with `kubectl get hives -n %s`, or pick another namespace with -n",
		name, namespace, namespace)
}

// needsAction reports whether err is one only a person can fix (forbidden, unauthorised,
// no CRD): trying again will not help.
func needsAction(err error) bool {
	return apierrors.IsForbidden(err) || apierrors.IsUnauthorized(err) || meta.IsNoMatchError(err)
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

// viewFlags are what status and queue share: an optional hive, the namespaces and labels it
// selects, how it prints, and --watch.
type viewFlags struct {
	out      *outputFlags
	sc       scope
	name     string
	sel      labels.Selector
	watching bool
}

// newViewCommand completes cmd (its texts set) as status or queue: one optional hive name,
// the output and scope flags, --watch; run gets the view once the command line is read.
func newViewCommand(o *options, cmd *cobra.Command, prints, selects, watches string, run func(context.Context, *viewFlags) error) *cobra.Command {
	v := &viewFlags{out: newOutputFlags("")}
	cmd.Args = cobra.MaximumNArgs(1)
	cmd.ValidArgsFunction = o.completeHive
	cmd.RunE = func(cmd *cobra.Command, args []string) error {
		// -o first: a typo costs no request.
		if err := v.out.validate(); err != nil {
			return err
		}
		if len(args) == 1 {
			v.name = args[0]
		}
		var err error
		if v.sel, err = v.sc.parse(v.name); err != nil {
			return err
		}
		return run(cmd.Context(), v)
	}
	v.out.add(cmd, true, prints)
	v.sc.add(cmd, selects)
	cmd.Flags().BoolVarP(&v.watching, "watch", "w", false, watches)
	return cmd
}
