package faultproxy

import (
	"net/http"
	"slices"
	"strings"
)

// Request is what the filters see of a request: its verb and the object it addresses,
// parsed from the path as the API server does (k8s.io/apiserver's RequestInfoFactory).
type Request struct {
	// Method is the HTTP method.
	Method string
	// Verb is the API verb: get, list, watch, create, update, patch, delete or
	// deletecollection; empty for requests outside a resource (discovery, /version).
	Verb string
	// Group and Version of the API ("" and "v1" for the core group).
	Group, Version string
	// Namespace, Resource, Name and Subresource of the object ("status", "scale"...).
	Namespace, Resource, Name, Subresource string
	// User is the impersonated user (the Impersonate-User header); empty when the client
	// does not impersonate.
	User string
	// Path is the URL path.
	Path string
}

// Write reports whether the request changes something (POST, PUT, PATCH or DELETE).
func (r *Request) Write() bool {
	switch r.Method {
	case http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete:
		return true
	}
	return false
}

// namespaceSubresources are the subresources of a namespace, which the path
// /api/v1/namespaces/{name}/{subresource} names instead of a resource in the namespace.
var namespaceSubresources = []string{"status", "finalize"} //nolint:misspell // the API's name

// parseRequest reads the verb and the object of a request.
func parseRequest(r *http.Request) *Request {
	req := &Request{Method: r.Method, Path: r.URL.Path, User: r.Header.Get("Impersonate-User")}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		req.Version, parts = parts[1], parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		req.Group, req.Version, parts = parts[1], parts[2], parts[3:]
	default:
		return req
	}
	if len(parts) == 0 {
		return req // discovery of a group version
	}
	if parts[0] == "namespaces" && len(parts) > 1 {
		req.Namespace = parts[1]
		if len(parts) > 2 && !slices.Contains(namespaceSubresources, parts[2]) {
			parts = parts[2:]
		}
	}
	req.Resource = parts[0]
	if len(parts) > 1 {
		req.Name = parts[1]
	}
	if len(parts) > 2 {
		req.Subresource = parts[2]
	}
	if req.Resource == "namespaces" && req.Namespace != "" {
		// /api/v1/namespaces/{name}[/status]: the namespace object itself.
		req.Name, req.Namespace = req.Namespace, ""
		if len(parts) > 2 {
			req.Subresource = parts[2]
		}
	}
	watch := r.URL.Query().Get("watch")
	switch r.Method {
	case http.MethodGet:
		switch {
		case watch == "true" || watch == "1":
			req.Verb = "watch"
		case req.Name != "":
			req.Verb = "get"
		default:
			req.Verb = "list"
		}
	case http.MethodPost:
		req.Verb = "create"
	case http.MethodPut:
		req.Verb = "update"
	case http.MethodPatch:
		req.Verb = "patch"
	case http.MethodDelete:
		if req.Name != "" {
			req.Verb = "delete"
		} else {
			req.Verb = "deletecollection"
		}
	}
	return req
}

// Filter picks requests a fault applies to.
type Filter func(*Request) bool

// Resources picks requests to any of the resources, written as RBAC writes them:
// "tasks" is the resource itself, "tasks/status" its status subresource, "tasks/*" the
// resource and all its subresources, "*" anything.
func Resources(resources ...string) Filter {
	return func(r *Request) bool {
		if r.Resource == "" {
			return false
		}
		for _, res := range resources {
			name, sub, hasSub := strings.Cut(res, "/")
			if name != "*" && name != r.Resource {
				continue
			}
			switch {
			case name == "*" && !hasSub, sub == "*", hasSub && sub == r.Subresource, !hasSub && r.Subresource == "":
				return true
			}
		}
		return false
	}
}

// Verbs picks requests with any of the API verbs (create, update, patch, delete, get, list,
// watch, deletecollection).
func Verbs(verbs ...string) Filter {
	return func(r *Request) bool { return slices.Contains(verbs, r.Verb) }
}

// Namespaces picks requests in any of the namespaces.
func Namespaces(namespaces ...string) Filter {
	return func(r *Request) bool { return r.Namespace != "" && slices.Contains(namespaces, r.Namespace) }
}

// Users picks requests impersonating any of the users.
func Users(users ...string) Filter {
	return func(r *Request) bool { return slices.Contains(users, r.User) }
}

// UserPrefix picks requests impersonating a user whose name starts with prefix, e.g.
// "system:serviceaccount:default:" for a namespace's service accounts.
func UserPrefix(prefix string) Filter {
	return func(r *Request) bool { return r.User != "" && strings.HasPrefix(r.User, prefix) }
}

// Not picks the requests f does not.
func Not(f Filter) Filter { return func(r *Request) bool { return !f(r) } }

// All picks the requests every filter picks (all requests with none).
func All(filters ...Filter) Filter {
	return func(r *Request) bool {
		for _, f := range filters {
			if !f(r) {
				return false
			}
		}
		return true
	}
}

// Any picks the requests one of the filters picks (none with none).
func Any(filters ...Filter) Filter {
	return func(r *Request) bool {
		for _, f := range filters {
			if f(r) {
				return true
			}
		}
		return false
	}
}

// NotLeases leaves out the coordination Leases of leader election and node heartbeats, so
// that faults do not depose leaders unless a test wants that.
var NotLeases = Not(Resources("leases/*"))
