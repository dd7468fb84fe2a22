package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
)

// requestFlags is the command line of request.
type requestFlags struct {
	input, file    string
	inputSet       bool
	gatewayService string
	gatewayURL     string
	timeout        time.Duration
	verbose        bool
}

// defaultGatewayService is the gateway the chart installs with its default release name.
const defaultGatewayService = "hive-system/hive-operator-gateway"

func newRequestCommand(o *options) *cobra.Command {
	f := &requestFlags{}
	cmd := &cobra.Command{
		Use:   "request HIVE (--input TEXT | -f FILE)",
		Short: "Send a request to a hive through its gateway and print the answer",
		Long: `Send a request to a hive with spec.serving: the hive gateway forwards it to an agent
with a free serving slot, and the answer is printed on stdout as it streams. Nothing is
written to the API server. The request goes through the API server's proxy to the
gateway's Service (--gateway-service, which needs "get" on services/proxy there), or
straight to --gateway-url (after kubectl port-forward, say). Exits 0 when the agent
answered that it succeeded, 1 otherwise, with the reason on stderr.`,
		Example: `  kubectl hive request echo --input hello
  echo '{"prompt": "hi"}' | kubectl hive request chat -f - --timeout 30s
  kubectl hive request echo --input hello --gateway-url http://localhost:8000 -v`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: o.completeHive,
		RunE: func(cmd *cobra.Command, args []string) error {
			f.inputSet = cmd.Flags().Changed("input")
			return runRequest(cmd.Context(), o, args[0], f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.input, "input", "", "The request's input, as is.")
	fl.StringVarP(&f.file, "filename", "f", "", "Read the input from this file; - reads stdin.")
	fl.StringVar(&f.gatewayService, "gateway-service", defaultGatewayService, "The gateway's Service, namespace/name, reached through the API server's proxy on its port http.")
	fl.StringVar(&f.gatewayURL, "gateway-url", "", "The gateway's address, such as http://localhost:8000, instead of the API server's proxy.")
	fl.DurationVar(&f.timeout, "timeout", 0, "How long the agent may take (Hive-Timeout), such as 30s; 0 leaves it to the agent (10m).")
	fl.BoolVarP(&f.verbose, "verbose", "v", false, "Print the request's id, its agent and its outcome on stderr.")
	return cmd
}

func runRequest(ctx context.Context, o *options, hive string, f *requestFlags) error {
	if f.timeout < 0 {
		return fmt.Errorf("--timeout must be 0 or more, not %s", f.timeout)
	}
	if f.gatewayURL != "" && f.gatewayService != defaultGatewayService {
		return errors.New("give either --gateway-url or --gateway-service, not both")
	}
	switch {
	case f.inputSet && f.file != "":
		return errors.New("give the input either with --input or with -f, not both")
	case !f.inputSet && f.file == "":
		return errors.New("the request needs an input: pass --input TEXT, or -f FILE (-f - reads stdin)")
	}
	// A request's input is capped as a task's is.
	input, err := (&submitFlags{input: f.input, file: f.file, inputSet: f.inputSet}).readInput(o.streams.In)
	if err != nil {
		return err
	}
	ns, err := o.namespace()
	if err != nil {
		return err
	}
	base, hc, err := o.gateway(f)
	if err != nil {
		return err
	}
	endpoint := base + "/v1/namespaces/" + url.PathEscape(ns) + "/hives/" + url.PathEscape(hive) + "/requests"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(input))
	if err != nil {
		return fmt.Errorf("sending the request: %w", err)
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if f.timeout > 0 {
		req.Header.Set(swarmv1alpha1.HeaderTimeout, f.timeout.String())
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("sending the request to hive %q: %w", hive, err)
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return refusal(hive, resp)
	}
	// The answer streams: each piece reaches stdout as it comes.
	if _, err := io.Copy(flushing{o.streams.Out}, resp.Body); err != nil {
		return fmt.Errorf("reading the answer of hive %q: %w", hive, err)
	}
	outcome := resp.Trailer.Get(swarmv1alpha1.HeaderOutcome)
	if outcome == "" {
		outcome = resp.Header.Get(swarmv1alpha1.HeaderOutcome)
	}
	if f.verbose {
		_, _ = fmt.Fprintf(o.streams.ErrOut, "request %s answered by agent %s: %s\n",
			resp.Header.Get(swarmv1alpha1.HeaderRequestID), resp.Header.Get(swarmv1alpha1.HeaderAgent), orDefault(outcome, "no outcome"))
	}
	if outcome == swarmv1alpha1.OutcomeFailed {
		msg := resp.Trailer.Get(swarmv1alpha1.HeaderError)
		return fmt.Errorf("the agent of hive %q failed the request midway: %s", hive, orDefault(msg, "no message"))
	}
	return nil
}

// refusal explains an answer other than 200: the gateway's (no slot, no such hive) or the
// agent's failure before it streamed anything.
func refusal(hive string, resp *http.Response) error {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	msg := resp.Header.Get(swarmv1alpha1.HeaderError)
	if msg == "" {
		msg = strings.TrimSpace(string(body))
	}
	// The API server's proxy answers with a Status: no such Service, no endpoint ready, no
	// right to it.
	var status metav1.Status
	if json.Unmarshal(body, &status) == nil && status.Kind == "Status" {
		return fmt.Errorf("reaching the gateway through the API server: %s (%s); check --gateway-service, or pass --gateway-url", status.Message, resp.Status)
	}
	switch {
	case resp.StatusCode == http.StatusServiceUnavailable && resp.Header.Get("Retry-After") != "":
		return fmt.Errorf("hive %q has no free serving slot (%s); try again in %ss: %s", hive, resp.Status, resp.Header.Get("Retry-After"), msg)
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("hive %q does not serve requests: %s; see `kubectl get hive %s` and its spec.serving", hive, msg, hive)
	}
	return fmt.Errorf("hive %q answered %s: %s", hive, resp.Status, msg)
}

// gateway returns the base URL of the gateway and the client to reach it with.
func (o *options) gateway(f *requestFlags) (string, *http.Client, error) {
	if f.gatewayURL != "" {
		u, err := url.Parse(f.gatewayURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return "", nil, fmt.Errorf("--gateway-url %q is not an http(s) URL such as http://localhost:8000", f.gatewayURL)
		}
		return strings.TrimSuffix(f.gatewayURL, "/"), &http.Client{}, nil
	}
	ns, name, ok := strings.Cut(f.gatewayService, "/")
	if !ok || ns == "" || name == "" || strings.Contains(name, "/") {
		return "", nil, fmt.Errorf("--gateway-service %q must be namespace/name", f.gatewayService)
	}
	cfg, err := o.flags.ToRESTConfig()
	if err != nil {
		return "", nil, fmt.Errorf("loading the kubeconfig: %w; pass --kubeconfig or set KUBECONFIG", err)
	}
	hc, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return "", nil, fmt.Errorf("creating a client for %s: %w", cfg.Host, err)
	}
	base := strings.TrimSuffix(cfg.Host, "/") + "/api/v1/namespaces/" + url.PathEscape(ns) + "/services/" + url.PathEscape(name) + ":http/proxy"
	return base, hc, nil
}

// flushing writes through to a writer that may buffer, flushing it after each write when it
// can, so that a streamed answer shows as it comes.
type flushing struct{ w io.Writer }

func (f flushing) Write(b []byte) (int, error) {
	n, err := f.w.Write(b)
	if fl, ok := f.w.(interface{ Flush() error }); ok {
		_ = fl.Flush()
	}
	return n, err //nolint:wrapcheck // io.Copy wraps nothing; runRequest does
}
