// Package faultproxy is a reverse proxy between a test's clients (operator processes,
// agents) and the API server that injects faults: writes refused with a conflict or an
// internal error, writes that succeed but are answered with an error, delayed writes, and
// watches cut after a while. It lets a chaos test check that the operator and its agents
// converge however the API server answers, with real client-go clients and real processes
// and no change to their code.
//
// The proxy listens on plain HTTP on 127.0.0.1 and forwards with the administrator's
// credentials (rest.TransportFor of the upstream configuration). Each client keeps its own
// identity by impersonation: the Impersonate-User, Impersonate-Uid, Impersonate-Group and
// Impersonate-Extra-* headers its configuration sends (Config, WriteKubeconfig) pass
// through, and the API server authorises and admits the request as that user, so RBAC and
// admission policies still apply to it. The proxy only holds the credentials.
//
// Faults are drawn from a math/rand source seeded by Faults.Seed, so a run's sequence of
// decisions can be replayed; which request gets which decision still depends on the order
// in which concurrent requests arrive.
package faultproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// Faults say what to inject. The zero value injects nothing. Shares are probabilities in
// [0, 1], drawn independently for each request the filters pick.
type Faults struct {
	// Seed seeds the random source of the decisions; SetFaults restarts it.
	Seed uint64

	// Writes picks the writes (POST, PUT, PATCH, DELETE) the write faults apply to; nil
	// picks every write. Reads are never failed.
	Writes Filter
	// Conflict is the share of picked writes answered 409 Conflict without being
	// forwarded: the API server never sees them.
	Conflict float64
	// Error is the share of picked writes answered 500 Internal Error without being
	// forwarded.
	Error float64
	// ErrorAfter is the share of picked writes forwarded, and answered 500 Internal Error
	// whatever the API server did: the write happened, but the client sees an error (the
	// ambiguous case of a connection lost before the answer). Conflict, Error and
	// ErrorAfter exclude each other; their sum is at most 1.
	ErrorAfter float64
	// Delay is the share of picked writes held for a random time of up to MaxDelay before
	// anything else happens to them.
	Delay    float64
	MaxDelay time.Duration

	// Watches picks the watches (GETs with watch=true) that may be dropped; nil picks every
	// watch.
	Watches Filter
	// DropWatch is the share of picked watches cut, each after a random lifetime of up to
	// MaxWatchLifetime: the connection is closed mid-stream, as a network failure or an API
	// server going away would, and the client sees its watch end with an error.
	DropWatch        float64
	MaxWatchLifetime time.Duration
}

func (f *Faults) validate() error {
	var errs []error
	for _, s := range []struct {
		name  string
		share float64
	}{{"Conflict", f.Conflict}, {"Error", f.Error}, {"ErrorAfter", f.ErrorAfter}, {"Delay", f.Delay}, {"DropWatch", f.DropWatch}} {
		if s.share < 0 || s.share > 1 {
			errs = append(errs, fmt.Errorf("the share %s is %v, not in [0, 1]", s.name, s.share))
		}
	}
	if sum := f.Conflict + f.Error + f.ErrorAfter; sum > 1 {
		errs = append(errs, fmt.Errorf("the shares Conflict, Error and ErrorAfter add up to %v, more than 1", sum))
	}
	if f.Delay > 0 && f.MaxDelay <= 0 {
		errs = append(errs, errors.New("a Delay share needs a positive MaxDelay"))
	}
	if f.DropWatch > 0 && f.MaxWatchLifetime <= 0 {
		errs = append(errs, errors.New("a DropWatch share needs a positive MaxWatchLifetime"))
	}
	return errors.Join(errs...)
}

// Stats count what the proxy did since it started.
type Stats struct {
	// Requests were received; Writes of them were writes the Writes filter picked and
	// Watches were watches the Watches filter picked.
	Requests, Writes, Watches int64
	// Conflicts and Errors were answered without forwarding; ErrorsAfter were forwarded
	// and answered with an error.
	Conflicts, Errors, ErrorsAfter int64
	// Delayed writes, and watches cut (DroppedWatches of the watches were chosen, and ended
	// by the proxy before the client or the server ended them).
	Delayed, DroppedWatches int64
}

type counters struct {
	requests, writes, watches, conflicts, errors, errorsAfter, delayed, droppedWatches atomic.Int64
}

// Proxy is a running fault-injecting proxy.
type Proxy struct {
	upstream *rest.Config
	listener net.Listener
	server   *http.Server
	proxy    *httputil.ReverseProxy
	url      string

	mu     sync.Mutex
	faults Faults
	rnd    *rand.Rand

	stats counters
}

// Start starts a proxy on a free port of 127.0.0.1 forwarding to the API server of
// upstream, with upstream's credentials. upstream should be an administrator allowed to
// impersonate (system:masters is).
func Start(upstream *rest.Config) (*Proxy, error) {
	admin := rest.CopyConfig(upstream)
	// The proxy's own identity is the administrator's; clients bring theirs in headers.
	admin.Impersonate = rest.ImpersonationConfig{}
	target, _, err := rest.DefaultServerUrlFor(admin)
	if err != nil {
		return nil, fmt.Errorf("reading the API server's address: %w", err)
	}
	transport, err := rest.TransportFor(admin)
	if err != nil {
		return nil, fmt.Errorf("creating the administrator's transport: %w", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening on the loopback interface: %w", err)
	}
	p := &Proxy{upstream: admin, listener: l, url: "http://" + l.Addr().String(), rnd: rand.New(rand.NewPCG(0, 0))}
	p.proxy = &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.SetURL(&url.URL{Scheme: target.Scheme, Host: target.Host, Path: target.Path})
			// Credentials are the administrator's alone; a client's own would be used
			// instead of them by a bearer-token transport.
			r.Out.Header.Del("Authorization")
		},
		Transport:      transport,
		FlushInterval:  -1, // watch events go out as they come
		ModifyResponse: p.modifyResponse,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				// The client went away, or the proxy cut a watch before the API server
				// answered: break the connection rather than answer an empty 200.
				abort(w)
				return
			}
			writeStatus(w, apierrors.NewServiceUnavailable(fmt.Sprintf("faultproxy: the API server is unreachable: %v", err)))
		},
		ErrorLog: quiet,
	}
	p.server = &http.Server{Handler: http.HandlerFunc(p.serve), ReadHeaderTimeout: 10 * time.Second, ErrorLog: quiet}
	go func() { _ = p.server.Serve(l) }()
	return p, nil
}

// URL is the proxy's address, http://127.0.0.1:<port>.
func (p *Proxy) URL() string { return p.url }

// Config returns a client configuration through the proxy acting as the impersonated user
// (the administrator with an empty ImpersonationConfig), for clients in the test process.
// It keeps upstream's rate limits and timeout.
func (p *Proxy) Config(impersonate rest.ImpersonationConfig) *rest.Config {
	return &rest.Config{
		Host:        p.url,
		Impersonate: impersonate,
		QPS:         p.upstream.QPS,
		Burst:       p.upstream.Burst,
		Timeout:     p.upstream.Timeout,
		UserAgent:   p.upstream.UserAgent,
	}
}

// WriteKubeconfig writes a kubeconfig through the proxy acting as the impersonated user,
// for processes (--kubeconfig or KUBECONFIG): server http://127.0.0.1:<port>, and as,
// as-uid, as-groups and as-user-extra in its user.
func (p *Proxy) WriteKubeconfig(path string, impersonate rest.ImpersonationConfig) error {
	const name = "faultproxy"
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: p.url}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{
		Impersonate:          impersonate.UserName,
		ImpersonateUID:       impersonate.UID,
		ImpersonateGroups:    impersonate.Groups,
		ImpersonateUserExtra: impersonate.Extra,
	}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	cfg.CurrentContext = name
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("writing the proxy's kubeconfig: %w", err)
	}
	return nil
}

// SetFaults replaces the faults, from the next request on, and reseeds the random source.
// Requests already in flight keep what was decided for them.
func (p *Proxy) SetFaults(f Faults) error {
	if err := f.validate(); err != nil {
		return fmt.Errorf("faultproxy: %w", err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = f
	p.rnd = rand.New(rand.NewPCG(f.Seed, f.Seed^0x9e3779b97f4a7c15))
	return nil
}

// Stats returns what the proxy has done so far.
func (p *Proxy) Stats() Stats {
	s := &p.stats
	return Stats{
		Requests: s.requests.Load(), Writes: s.writes.Load(), Watches: s.watches.Load(),
		Conflicts: s.conflicts.Load(), Errors: s.errors.Load(), ErrorsAfter: s.errorsAfter.Load(),
		Delayed: s.delayed.Load(), DroppedWatches: s.droppedWatches.Load(),
	}
}

// Close stops the proxy and closes every connection, watches included.
func (p *Proxy) Close() error {
	if err := p.server.Close(); err != nil {
		return fmt.Errorf("closing the proxy: %w", err)
	}
	return nil
}

// outcome is what happens to one request.
type outcome int

const (
	forward outcome = iota
	conflict
	internalError
	errorAfter
)

// decision is the fate of one request, drawn when it arrives.
type decision struct {
	outcome  outcome
	delay    time.Duration
	lifetime time.Duration // of a watch to cut; 0 leaves it
}

// decide draws what happens to a request under the current faults.
func (p *Proxy) decide(req *Request) decision {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := &p.faults
	var d decision
	switch {
	case req.Write() && (f.Writes == nil || f.Writes(req)):
		p.stats.writes.Add(1)
		u := p.rnd.Float64()
		switch {
		case u < f.Conflict:
			d.outcome = conflict
		case u < f.Conflict+f.Error:
			d.outcome = internalError
		case u < f.Conflict+f.Error+f.ErrorAfter:
			d.outcome = errorAfter
		}
		if f.Delay > 0 && p.rnd.Float64() < f.Delay {
			d.delay = time.Duration(p.rnd.Int64N(int64(f.MaxDelay)) + 1)
		}
	case req.Verb == "watch" && (f.Watches == nil || f.Watches(req)):
		p.stats.watches.Add(1)
		if f.DropWatch > 0 && p.rnd.Float64() < f.DropWatch {
			d.lifetime = time.Duration(p.rnd.Int64N(int64(f.MaxWatchLifetime)) + 1)
		}
	}
	return d
}

type ctxKey struct{}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	p.stats.requests.Add(1)
	req := parseRequest(r)
	d := p.decide(req)
	if d.delay > 0 {
		p.stats.delayed.Add(1)
		select {
		case <-time.After(d.delay):
		case <-r.Context().Done():
			return
		}
	}
	switch d.outcome {
	case conflict:
		p.stats.conflicts.Add(1)
		writeStatus(w, apierrors.NewConflict(schema.GroupResource{Group: req.Group, Resource: req.Resource}, req.Name,
			errors.New("faultproxy: injected conflict, the request was not forwarded")))
		return
	case internalError:
		p.stats.errors.Add(1)
		writeStatus(w, apierrors.NewInternalError(errors.New("faultproxy: injected error, the request was not forwarded")))
		return
	case errorAfter:
		r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, d))
	}
	if d.lifetime > 0 {
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		cut := time.AfterFunc(d.lifetime, func() {
			p.stats.droppedWatches.Add(1)
			cancel()
		})
		defer cut.Stop()
		r = r.WithContext(ctx)
		// Cancelling the request's context ends the upstream watch; the ReverseProxy then
		// aborts the response to the client (http.ErrAbortHandler, which net/http handles by
		// closing the connection), so the client sees the stream break, not a clean end.
	}
	p.proxy.ServeHTTP(w, r)
}

// modifyResponse turns the answer to a write that was forwarded into an internal error
// when that was decided, after the API server has done the write.
func (p *Proxy) modifyResponse(resp *http.Response) error {
	d, ok := resp.Request.Context().Value(ctxKey{}).(decision)
	if !ok || d.outcome != errorAfter {
		return nil
	}
	p.stats.errorsAfter.Add(1)
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	status := apierrors.NewInternalError(fmt.Errorf("faultproxy: injected error after the API server answered %s: the request took effect", resp.Status)).ErrStatus
	body, err := json.Marshal(statusObject(status))
	if err != nil {
		return fmt.Errorf("encoding the injected error: %w", err)
	}
	resp.StatusCode, resp.Status = http.StatusInternalServerError, "500 Internal Server Error"
	resp.Header = http.Header{"Content-Type": {"application/json"}, "Content-Length": {strconv.Itoa(len(body))}}
	resp.ContentLength = int64(len(body))
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.TransferEncoding = nil
	return nil
}

// quiet drops the proxy's logs: cut watches and injected errors are expected.
var quiet = log.New(io.Discard, "", 0)

// abort closes the client's connection without an answer.
func abort(w http.ResponseWriter) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		return
	}
	if conn, _, err := hj.Hijack(); err == nil {
		_ = conn.Close()
	}
}

// statusObject gives a Status the type meta the API server sends, so that client-go decodes
// it as an API error.
func statusObject(s metav1.Status) metav1.Status {
	s.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	return s
}

// writeStatus answers with an API error as the API server would.
func writeStatus(w http.ResponseWriter, err *apierrors.StatusError) {
	body, merr := json.Marshal(statusObject(err.ErrStatus))
	if merr != nil {
		http.Error(w, err.Error(), int(err.ErrStatus.Code))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(int(err.ErrStatus.Code))
	_, _ = w.Write(body)
}
