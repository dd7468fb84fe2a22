// Package restmapping keeps the REST mappings the manager has found. controller-runtime
// asks its REST mapper whether a kind is namespaced on every cache read when the cache
// serves a list of namespaces, and the dynamic mapper answers by asking each API group in
// turn, building an error for every group that lacks the kind: at startup with 50,000 queued
// tasks that was a third of what the operator allocated. A kind's mapping does not change
// while its resource exists, so the first answer is kept; failures are not, so a kind that
// appears later is found.
package restmapping

import (
	"net/http"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// Cached returns a mapper that answers RESTMapping from the mappings delegate returned
// before, and everything else from delegate.
func Cached(delegate meta.RESTMapper) meta.RESTMapper {
	return &cached{RESTMapper: delegate}
}

// Provider is a manager's MapperProvider: controller-runtime's dynamic mapper, cached.
func Provider(c *rest.Config, httpClient *http.Client) (meta.RESTMapper, error) {
	m, err := apiutil.NewDynamicRESTMapper(c, httpClient)
	if err != nil {
		return nil, err //nolint:wrapcheck // the manager says what it was building
	}
	return Cached(m), nil
}

type key struct {
	gk       schema.GroupKind
	versions string
}

type cached struct {
	meta.RESTMapper
	mappings sync.Map // key → *meta.RESTMapping
}

func (c *cached) RESTMapping(gk schema.GroupKind, versions ...string) (*meta.RESTMapping, error) {
	k := key{gk, strings.Join(versions, ",")}
	if m, ok := c.mappings.Load(k); ok {
		return m.(*meta.RESTMapping), nil
	}
	m, err := c.RESTMapper.RESTMapping(gk, versions...)
	if err != nil {
		return nil, err //nolint:wrapcheck // callers test it with meta.IsNoMatchError
	}
	c.mappings.Store(k, m)
	return m, nil
}
