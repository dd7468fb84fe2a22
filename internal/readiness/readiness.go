// Package readiness holds the readiness check the operator and the gateway share: a replica
// is ready once its caches have synced.
package readiness

import (
	"context"
	"errors"
	"net/http"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
)

// CachesSynced is a /readyz check that passes once c has synced: a replica that has not
// seen the cluster yet should receive no traffic nor count as available in a rollout.
func CachesSynced(c cache.Cache) healthz.Checker {
	return func(req *http.Request) error {
		ctx, cancel := context.WithTimeout(req.Context(), 100*time.Millisecond)
		defer cancel()
		if !c.WaitForCacheSync(ctx) {
			return errors.New("caches have not synced yet")
		}
		return nil
	}
}
