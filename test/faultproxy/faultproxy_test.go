package faultproxy

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// upstream is a fake API server: it answers every request with the ConfigMap of its path,
// streams watches until the client goes away, and records what it received.
type upstream struct {
	*httptest.Server
	mu      sync.Mutex
	headers []http.Header
	paths   []string
	hits    atomic.Int64
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{}
	u.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u.hits.Add(1)
		u.mu.Lock()
		u.headers = append(u.headers, r.Header.Clone())
		u.paths = append(u.paths, r.Method+" "+r.URL.Path)
		u.mu.Unlock()
		cm := corev1.ConfigMap{TypeMeta: metav1.TypeMeta{Kind: "ConfigMap", APIVersion: "v1"},
			ObjectMeta: metav1.ObjectMeta{Name: filepath.Base(r.URL.Path), Namespace: "default", ResourceVersion: "1"}}
		w.Header().Set("Content-Type", "application/json")
		if r.URL.Query().Get("watch") == "true" {
			flusher, _ := w.(http.Flusher)
			for i := 0; ; i++ {
				ev := map[string]any{"type": "ADDED", "object": cm}
				if err := json.NewEncoder(w).Encode(ev); err != nil {
					return
				}
				flusher.Flush()
				select {
				case <-r.Context().Done():
					return
				case <-time.After(20 * time.Millisecond):
				}
			}
		}
		if r.Method == http.MethodPost {
			w.WriteHeader(http.StatusCreated)
		}
		_ = json.NewEncoder(w).Encode(cm)
	}))
	t.Cleanup(u.Close)
	return u
}

func (u *upstream) last() http.Header {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.headers[len(u.headers)-1]
}

func start(t *testing.T, u *upstream) *Proxy {
	t.Helper()
	p, err := Start(&rest.Config{Host: u.URL, BearerToken: "admin-token", QPS: 100, Burst: 200})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func clientset(t *testing.T, cfg *rest.Config) kubernetes.Interface {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func newConfigMap(name string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default"}}
}

func TestForwardsWithTheAdminsCredentialsAndTheClientsIdentity(t *testing.T) {
	u := newUpstream(t)
	p := start(t, u)
	cfg := p.Config(rest.ImpersonationConfig{UserName: "alice", UID: "u-1", Groups: []string{"devs", "ops"}, Extra: map[string][]string{"pod-name": {"agent-1"}}})
	cfg.BearerToken = "clients-own-token" // must not reach the API server
	cs := clientset(t, cfg)
	cm, err := cs.CoreV1().ConfigMaps("default").Get(t.Context(), "x", metav1.GetOptions{})
	if err != nil || cm.Name != "x" {
		t.Fatalf("get through the proxy: %v, %v", cm, err)
	}
	h := u.last()
	if got := h.Get("Authorization"); got != "Bearer admin-token" {
		t.Errorf("Authorization = %q, want the administrator's", got)
	}
	if h.Get("Impersonate-User") != "alice" || h.Get("Impersonate-Uid") != "u-1" ||
		strings.Join(h.Values("Impersonate-Group"), ",") != "devs,ops" || h.Get("Impersonate-Extra-Pod-Name") != "agent-1" {
		t.Errorf("impersonation headers not passed through: %v", h)
	}
	if s := p.Stats(); s.Requests != 1 || s.Conflicts+s.Errors+s.ErrorsAfter+s.Delayed != 0 {
		t.Errorf("stats = %+v", s)
	}
}

func TestWriteFaults(t *testing.T) {
	tests := []struct {
		name      string
		faults    Faults
		forwarded bool
		check     func(error) bool
		stat      func(Stats) int64
	}{
		{"conflict", Faults{Conflict: 1}, false, apierrors.IsConflict, func(s Stats) int64 { return s.Conflicts }},
		{"error", Faults{Error: 1}, false, apierrors.IsInternalError, func(s Stats) int64 { return s.Errors }},
		{"error after the write", Faults{ErrorAfter: 1}, true, apierrors.IsInternalError, func(s Stats) int64 { return s.ErrorsAfter }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := newUpstream(t)
			p := start(t, u)
			if err := p.SetFaults(tt.faults); err != nil {
				t.Fatal(err)
			}
			cs := clientset(t, p.Config(rest.ImpersonationConfig{}))
			_, err := cs.CoreV1().ConfigMaps("default").Create(t.Context(), newConfigMap("x"), metav1.CreateOptions{})
			if !tt.check(err) {
				t.Fatalf("create: %v (%T)", err, err)
			}
			if forwarded := u.hits.Load() == 1; forwarded != tt.forwarded {
				t.Errorf("forwarded = %v, want %v", forwarded, tt.forwarded)
			}
			if _, err := cs.CoreV1().ConfigMaps("default").Get(t.Context(), "x", metav1.GetOptions{}); err != nil {
				t.Errorf("a read failed: %v", err)
			}
			if s := p.Stats(); tt.stat(s) != 1 || s.Writes != 1 || s.Requests != 2 {
				t.Errorf("stats = %+v", s)
			}
		})
	}
}

func TestDelay(t *testing.T) {
	u := newUpstream(t)
	p := start(t, u)
	if err := p.SetFaults(Faults{Delay: 1, MaxDelay: 300 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	cs := clientset(t, p.Config(rest.ImpersonationConfig{}))
	begin := time.Now()
	for i := range 5 {
		if _, err := cs.CoreV1().ConfigMaps("default").Create(t.Context(), newConfigMap(fmt.Sprint(i)), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(begin)
	if s := p.Stats(); s.Delayed != 5 {
		t.Errorf("stats = %+v", s)
	}
	if took > 5*300*time.Millisecond+time.Second {
		t.Errorf("5 writes delayed up to 300 ms took %s", took)
	}
}

func TestFiltersPickTheFaultedWrites(t *testing.T) {
	u := newUpstream(t)
	p := start(t, u)
	if err := p.SetFaults(Faults{Conflict: 1, Writes: All(Resources("configmaps/status"), NotLeases)}); err != nil {
		t.Fatal(err)
	}
	cs := clientset(t, p.Config(rest.ImpersonationConfig{}))
	cms := cs.CoreV1().ConfigMaps("default")
	if _, err := cms.Update(t.Context(), newConfigMap("plain"), metav1.UpdateOptions{}); err != nil {
		t.Errorf("an update of the main resource was faulted: %v", err)
	}
	// ConfigMaps have no status subresource, but the proxy only reads the path.
	err := cs.CoreV1().RESTClient().Put().Namespace("default").Resource("configmaps").Name("s").SubResource("status").
		Body(newConfigMap("s")).Do(t.Context()).Error()
	if !apierrors.IsConflict(err) {
		t.Errorf("status update: %v, want a conflict", err)
	}
}

func TestSameSeedSameDecisions(t *testing.T) {
	run := func(seed uint64) string {
		u := newUpstream(t)
		p := start(t, u)
		if err := p.SetFaults(Faults{Seed: seed, Conflict: 0.3, Error: 0.2}); err != nil {
			t.Fatal(err)
		}
		cs := clientset(t, p.Config(rest.ImpersonationConfig{}))
		var b strings.Builder
		for i := range 40 {
			_, err := cs.CoreV1().ConfigMaps("default").Create(t.Context(), newConfigMap(fmt.Sprint(i)), metav1.CreateOptions{})
			switch {
			case err == nil:
				b.WriteByte('.')
			case apierrors.IsConflict(err):
				b.WriteByte('c')
			case apierrors.IsInternalError(err):
				b.WriteByte('e')
			default:
				t.Fatalf("unexpected error %v", err)
			}
		}
		return b.String()
	}
	a, b, c := run(7), run(7), run(8)
	if a != b {
		t.Errorf("seed 7 gave %s then %s", a, b)
	}
	if a == c {
		t.Errorf("seeds 7 and 8 gave the same decisions %s", a)
	}
	if !strings.Contains(a, "c") || !strings.Contains(a, "e") || !strings.Contains(a, ".") {
		t.Errorf("decisions %s lack an outcome", a)
	}
}

func TestDropWatch(t *testing.T) {
	u := newUpstream(t)
	p := start(t, u)
	if err := p.SetFaults(Faults{DropWatch: 1, MaxWatchLifetime: 200 * time.Millisecond, Watches: Resources("configmaps")}); err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, p.URL()+"/api/v1/namespaces/default/configmaps?watch=true", nil)
	if err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := 0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		events++
	}
	_, rerr := io.Copy(io.Discard, resp.Body)
	if sc.Err() == nil && rerr == nil {
		t.Errorf("the watch ended cleanly after %d events; want a broken stream", events)
	}
	if took := time.Since(begin); took > 2*time.Second || events == 0 {
		t.Errorf("the watch lasted %s with %d events; want a cut within 200 ms", took, events)
	}
	if s := p.Stats(); s.DroppedWatches != 1 || s.Watches != 1 {
		t.Errorf("stats = %+v", s)
	}

	// Other watches are left alone.
	ctx, cancel := context.WithTimeout(t.Context(), 600*time.Millisecond)
	defer cancel()
	w, err := clientset(t, p.Config(rest.ImpersonationConfig{})).CoreV1().Secrets("default").Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for range w.ResultChan() {
	}
	if s := p.Stats(); s.DroppedWatches != 1 {
		t.Errorf("a watch of secrets was dropped: %+v", s)
	}
}

func TestSetFaultsValidates(t *testing.T) {
	p := start(t, newUpstream(t))
	for _, f := range []Faults{
		{Conflict: -0.1}, {Error: 1.5}, {Conflict: 0.6, ErrorAfter: 0.6},
		{Delay: 0.5}, {DropWatch: 0.5},
	} {
		if err := p.SetFaults(f); err == nil {
			t.Errorf("SetFaults(%+v) accepted", f)
		}
	}
}

func TestWriteKubeconfig(t *testing.T) {
	p := start(t, newUpstream(t))
	path := filepath.Join(t.TempDir(), "kubeconfig")
	imp := rest.ImpersonationConfig{UserName: "system:serviceaccount:default:agent", Groups: []string{"system:serviceaccounts"},
		Extra: map[string][]string{"authentication.kubernetes.io/pod-name": {"agent-1"}}}
	if err := p.WriteKubeconfig(path, imp); err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != p.URL() || cfg.Impersonate.UserName != imp.UserName || cfg.Impersonate.Groups[0] != "system:serviceaccounts" ||
		cfg.Impersonate.Extra["authentication.kubernetes.io/pod-name"][0] != "agent-1" {
		t.Errorf("loaded config = %+v", cfg)
	}
}

func TestParseRequest(t *testing.T) {
	tests := []struct {
		method, url string
		want        Request
	}{
		{"GET", "/api/v1/namespaces/ns/pods/p", Request{Verb: "get", Version: "v1", Namespace: "ns", Resource: "pods", Name: "p"}},
		{"GET", "/api/v1/namespaces/ns/pods?watch=true", Request{Verb: "watch", Version: "v1", Namespace: "ns", Resource: "pods"}},
		{"GET", "/api/v1/pods", Request{Verb: "list", Version: "v1", Resource: "pods"}},
		{"PATCH", "/apis/swarm.aihub.dev/v1alpha1/namespaces/ns/tasks/t/status", Request{Verb: "patch", Group: "swarm.aihub.dev", Version: "v1alpha1", Namespace: "ns", Resource: "tasks", Name: "t", Subresource: "status"}},
		{"PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/l", Request{Verb: "update", Group: "coordination.k8s.io", Version: "v1", Namespace: "kube-system", Resource: "leases", Name: "l"}},
		{"POST", "/api/v1/namespaces/ns/pods", Request{Verb: "create", Version: "v1", Namespace: "ns", Resource: "pods"}},
		{"DELETE", "/api/v1/namespaces/ns/pods", Request{Verb: "deletecollection", Version: "v1", Namespace: "ns", Resource: "pods"}},
		{"DELETE", "/api/v1/namespaces/ns", Request{Verb: "delete", Version: "v1", Resource: "namespaces", Name: "ns"}},
		{"PUT", "/api/v1/namespaces/ns/finalize", Request{Verb: "update", Version: "v1", Resource: "namespaces", Name: "ns", Subresource: "finalize"}}, //nolint:misspell // the API's name
		{"POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", Request{Verb: "create", Group: "authentication.k8s.io", Version: "v1", Resource: "selfsubjectreviews"}},
		{"GET", "/apis/apps/v1", Request{Group: "apps", Version: "v1"}},
		{"GET", "/version", Request{}},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(tt.method, tt.url, nil)
		r.Header.Set("Impersonate-User", "u")
		got := parseRequest(r)
		tt.want.Method, tt.want.Path, tt.want.User = tt.method, r.URL.Path, "u"
		if *got != tt.want {
			t.Errorf("%s %s = %+v, want %+v", tt.method, tt.url, *got, tt.want)
		}
	}
}

func TestFilters(t *testing.T) {
	status := &Request{Method: "PATCH", Verb: "patch", Resource: "tasks", Subresource: "status", Namespace: "a", User: "system:serviceaccount:a:agent"}
	main := &Request{Method: "PUT", Verb: "update", Resource: "tasks", Namespace: "b"}
	lease := &Request{Method: "PUT", Verb: "update", Group: "coordination.k8s.io", Resource: "leases", Namespace: "b"}
	tests := []struct {
		name   string
		f      Filter
		picked []*Request
	}{
		{"tasks", Resources("tasks"), []*Request{main}},
		{"tasks/status", Resources("tasks/status"), []*Request{status}},
		{"tasks/*", Resources("tasks/*"), []*Request{status, main}},
		{"*", Resources("*"), []*Request{status, main, lease}},
		{"*/status", Resources("*/status"), []*Request{status}},
		{"not leases", NotLeases, []*Request{status, main}},
		{"verbs", Verbs("patch"), []*Request{status}},
		{"namespaces", Namespaces("b"), []*Request{main, lease}},
		{"users", Users("system:serviceaccount:a:agent"), []*Request{status}},
		{"user prefix", UserPrefix("system:serviceaccount:a:"), []*Request{status}},
		{"all", All(Namespaces("b"), NotLeases), []*Request{main}},
		{"any", Any(Resources("leases"), Verbs("patch")), []*Request{status, lease}},
		{"all of none", All(), []*Request{status, main, lease}},
		{"any of none", Any(), nil},
	}
	for _, tt := range tests {
		var got []*Request
		for _, r := range []*Request{status, main, lease} {
			if tt.f(r) {
				got = append(got, r)
			}
		}
		if fmt.Sprint(got) != fmt.Sprint(tt.picked) {
			t.Errorf("%s picked %v, want %v", tt.name, got, tt.picked)
		}
	}
}
