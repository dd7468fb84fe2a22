package faultproxy

import (
	"fmt"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/aihub-dev/hive-operator/test/testenv"
)

var env *testenv.Env

func TestMain(m *testing.M) { os.Exit(testenv.Run(m, &env)) }

// TestThroughAPIServer shows, on a real API server, that client-go sees the injected faults
// as API errors, that an informer re-establishes its dropped watches, and that each client
// keeps its own identity.
func TestThroughAPIServer(t *testing.T) {
	testenv.Require(t, env)
	ctx := testenv.Context(t, 2*time.Minute)
	p, err := Start(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	admin := clientset(t, p.Config(rest.ImpersonationConfig{}))
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "faultproxy"}}
	if _, err := admin.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	direct := clientset(t, env.Config).CoreV1().ConfigMaps("faultproxy")
	cms := admin.CoreV1().ConfigMaps("faultproxy")
	cm := func(name string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "faultproxy"}}
	}

	t.Run("impersonation reaches the API server, and RBAC applies to the client", func(t *testing.T) {
		jane := clientset(t, p.Config(rest.ImpersonationConfig{UserName: "jane", Groups: []string{"devs"},
			Extra: map[string][]string{"authentication.kubernetes.io/pod-name": {"agent-1"}}}))
		review, err := jane.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		u := review.Status.UserInfo
		if u.Username != "jane" || !slices.Contains(u.Groups, "devs") || slices.Contains(u.Groups, "system:masters") ||
			!slices.Equal(u.Extra["authentication.kubernetes.io/pod-name"], authenticationv1.ExtraValue{"agent-1"}) {
			t.Errorf("the API server sees %+v", u)
		}
		if _, err := jane.CoreV1().ConfigMaps("faultproxy").Create(ctx, cm("jane"), metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("jane, with no role, created a config map: %v", err)
		}
	})

	t.Run("client-go sees a conflict, and the write did not happen", func(t *testing.T) {
		if err := p.SetFaults(Faults{Conflict: 1, Writes: Resources("configmaps")}); err != nil {
			t.Fatal(err)
		}
		_, err := cms.Create(ctx, cm("refused"), metav1.CreateOptions{})
		if !apierrors.IsConflict(err) {
			t.Fatalf("create: %v, want a conflict", err)
		}
		if _, err := direct.Get(ctx, "refused", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("the refused config map exists: %v", err)
		}
	})

	t.Run("an error after the write: the write happened", func(t *testing.T) {
		if err := p.SetFaults(Faults{ErrorAfter: 1, Writes: Resources("configmaps")}); err != nil {
			t.Fatal(err)
		}
		if _, err := cms.Create(ctx, cm("ambiguous"), metav1.CreateOptions{}); !apierrors.IsInternalError(err) {
			t.Fatalf("create: %v, want an internal error", err)
		}
		if _, err := direct.Get(ctx, "ambiguous", metav1.GetOptions{}); err != nil {
			t.Errorf("the config map answered with an error was not created: %v", err)
		}
	})

	t.Run("an informer re-establishes dropped watches", func(t *testing.T) {
		if err := p.SetFaults(Faults{Seed: 1, DropWatch: 1, MaxWatchLifetime: 300 * time.Millisecond, Watches: Resources("configmaps")}); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		seen := map[string]bool{}
		factory := informers.NewSharedInformerFactoryWithOptions(admin, 0, informers.WithNamespace("faultproxy"))
		informer := factory.Core().V1().ConfigMaps().Informer()
		if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: func(obj any) {
			if c, ok := obj.(*corev1.ConfigMap); ok {
				mu.Lock()
				seen[c.Name] = true
				mu.Unlock()
			}
		}}); err != nil {
			t.Fatal(err)
		}
		stop := make(chan struct{})
		defer close(stop)
		factory.Start(stop)
		const n = 6
		for i := range n {
			if _, err := direct.Create(ctx, cm(fmt.Sprintf("w-%d", i)), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(400 * time.Millisecond)
		}
		testenv.Eventually(t, 60*time.Second, 100*time.Millisecond, func() error {
			mu.Lock()
			defer mu.Unlock()
			for i := range n {
				if !seen[fmt.Sprintf("w-%d", i)] {
					return fmt.Errorf("the informer has not seen w-%d; stats %+v", i, p.Stats())
				}
			}
			return nil
		})
		if s := p.Stats(); s.DroppedWatches < 2 {
			t.Errorf("only %d watches dropped: %+v", s.DroppedWatches, s)
		}
		t.Logf("stats: %+v", p.Stats())
	})
}
