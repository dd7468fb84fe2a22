package handlers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/aihub-dev/hive-operator/pkg/agent"
)

// Headers HTTP sets on each request, naming the task it carries.
const (
	HeaderTaskName      = "X-Task-Name"
	HeaderTaskNamespace = "X-Task-Namespace"
	HeaderTaskAttempt   = "X-Task-Attempt"
	HeaderTaskHive      = "X-Task-Hive"
)

// errorBodyTail is how much of the end of an error response a failure's message quotes,
// and errorBodyMax how much of it is read at most to find that end.
const (
	errorBodyTail = 1024
	errorBodyMax  = 1 << 20
)

// HTTPOptions configure HTTP. The zero value sends JSON with the shared client.
type HTTPOptions struct {
	// ContentType is the requests' Content-Type; default application/json.
	ContentType string
	// Client sends the requests; default a client whose connections are pooled across every
	// HTTP handler of the process.
	Client *http.Client
}

// sharedClient is the default client. It sets no overall timeout: each request lasts at
// most as long as its task's attempt, whose context it carries, and answers from model
// endpoints may take minutes. Only the steps that should be quick are bounded.
var sharedClient = &http.Client{Transport: &http.Transport{
	Proxy:                 http.ProxyFromEnvironment,
	DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
	ForceAttemptHTTP2:     true,
	TLSHandshakeTimeout:   10 * time.Second,
	ExpectContinueTimeout: time.Second,
	IdleConnTimeout:       90 * time.Second,
	MaxIdleConns:          100,
	// An agent sends up to its concurrency of requests at once, usually all to one host;
	// the default of 2 idle connections per host would close and reopen the others.
	MaxIdleConnsPerHost: 100,
}}

// HTTP returns a handler that POSTs each task's input to endpoint, with the task named in
// the X-Task-* headers. The body of a 2xx answer is the result; any other status fails the
// attempt with a message quoting the end of the body. Redirects are followed.
//
// Messages name the endpoint without its password and query, which may hold credentials:
// they end up in the task's status, which more people may read than the agent's flags.
func HTTP(endpoint string, opts HTTPOptions) agent.Handler {
	if opts.ContentType == "" {
		opts.ContentType = "application/json"
	}
	if opts.Client == nil {
		opts.Client = sharedClient
	}
	shown := endpointForMessages(endpoint)
	return func(ctx context.Context, task *agent.Task) (string, error) {
		return post(ctx, endpoint, shown, &opts, task)
	}
}

// endpointForMessages returns endpoint without the parts that may be secret.
func endpointForMessages(endpoint string) string {
	u, err := url.Parse(endpoint)
	if err != nil {
		return "the endpoint"
	}
	u.RawQuery, u.ForceQuery, u.Fragment, u.RawFragment = "", false, "", ""
	return u.Redacted()
}

func post(ctx context.Context, endpoint, shown string, opts *HTTPOptions, task *agent.Task) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(task.Input))
	if err != nil {
		return "", fmt.Errorf("building the request to %s: %w", shown, unwrapURLError(err))
	}
	req.Header.Set("Content-Type", opts.ContentType)
	req.Header.Set(HeaderTaskName, task.Name)
	req.Header.Set(HeaderTaskNamespace, task.Namespace)
	req.Header.Set(HeaderTaskAttempt, strconv.Itoa(int(task.Attempt)))
	req.Header.Set(HeaderTaskHive, task.Hive)

	resp, err := opts.Client.Do(req)
	if err != nil {
		return "", fmt.Errorf("posting the task to %s: %w", shown, unwrapURLError(err))
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		body := &tailBuffer{max: errorBodyTail}
		_, _ = io.Copy(body, io.LimitReader(resp.Body, errorBodyMax)) // what was read is enough to report
		return "", errors.New(withOutput(fmt.Sprintf("POST %s answered %s", shown, resp.Status), "body", body.String()))
	}
	if task.Request {
		// A request's answer streams to its caller as the endpoint sends it (a model
		// server's tokens), and is stored nowhere.
		if _, err := io.Copy(task.Output, resp.Body); err != nil {
			return "", fmt.Errorf("streaming the answer of %s: %w", shown, err)
		}
		return "", nil
	}
	if resp.ContentLength > resultLimit {
		return "", fmt.Errorf("%w: %s answered with %d bytes, more than the limit of %d", ErrResultTooLarge, shown, resp.ContentLength, resultLimit)
	}
	result := &cappedBuffer{limit: resultLimit}
	if _, err := io.Copy(result, io.LimitReader(resp.Body, resultLimit+1)); err != nil {
		return "", fmt.Errorf("reading the answer of %s: %w", shown, err)
	}
	if result.overflowed() {
		return "", fmt.Errorf("%w: %s answered with more than the limit of %d bytes", ErrResultTooLarge, shown, resultLimit)
	}
	return result.String(), nil
}

// unwrapURLError drops the *url.Error around err, whose message holds the whole URL.
func unwrapURLError(err error) error {
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		return urlErr.Err
	}
	return err
}
