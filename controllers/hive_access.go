package controllers

import (
	"context"
	"fmt"
	"slices"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	swarmv1alpha1 "github.com/aihub-dev/hive-operator/api/v1alpha1"
	"github.com/aihub-dev/hive-operator/internal/agentpod"
)

// +kubebuilder:rbac:groups="",resources=serviceaccounts,verbs=get;list;watch;create
// +kubebuilder:rbac:groups=rbac.authorization.k8s.io,resources=roles;rolebindings,verbs=get;list;watch;create;patch

// AgentRules returns what an agent may do, the rules of the Role the operator gives each
// hive's agents.
func AgentRules() []rbacv1.PolicyRule {
	out := make([]rbacv1.PolicyRule, len(agentRules))
	for i := range agentRules {
		agentRules[i].DeepCopyInto(&out[i])
	}
	return out
}

// agentRules are what an agent may do: read tasks (its own, and the results of those it
// depends on) and write task status. The ValidatingAdmissionPolicy shipped with the
// operator narrows the writes to tasks bound to the agent's own pod.
var agentRules = []rbacv1.PolicyRule{
	{APIGroups: []string{swarmv1alpha1.GroupVersion.Group}, Resources: []string{"tasks"}, Verbs: []string{"get", "list", "watch"}},
	{APIGroups: []string{swarmv1alpha1.GroupVersion.Group}, Resources: []string{"tasks/status"}, Verbs: []string{"get", "patch", "update"}},
}

// ensureAgentAccess gives the hive's agents an identity and the permissions of the agent
// protocol: a ServiceAccount (unless the template names its own), a Role and a RoleBinding,
// all named <hive>-agent and owned by the hive. Objects of those names the hive does not own
// are left alone. The RoleBinding binds the template's service account and that of every
// agent pod still there: agents of an older revision keep their permissions while they
// finish their tasks, after the template names another account.
func (r *HiveReconciler) ensureAgentAccess(ctx context.Context, hive *swarmv1alpha1.Hive, pods []*corev1.Pod) error {
	name := agentpod.AccessName(hive)
	account := agentpod.ServiceAccountName(hive)
	meta := func() metav1.ObjectMeta {
		return metav1.ObjectMeta{
			Name: name, Namespace: hive.Namespace,
			Labels:          map[string]string{swarmv1alpha1.LabelHive: hive.Name},
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(hive, swarmv1alpha1.GroupVersion.WithKind("Hive"))},
		}
	}
	if account == name {
		sa := &corev1.ServiceAccount{}
		if err := r.client.Get(ctx, client.ObjectKey{Namespace: hive.Namespace, Name: name}, sa); apierrors.IsNotFound(err) {
			if err := r.createOwned(ctx, hive, &corev1.ServiceAccount{ObjectMeta: meta()}); err != nil {
				return fmt.Errorf("creating the agents' service account: %w", err)
			}
		} else if err != nil {
			return fmt.Errorf("reading the agents' service account: %w", err)
		}
	}

	role := &rbacv1.Role{}
	if err := r.client.Get(ctx, client.ObjectKey{Namespace: hive.Namespace, Name: name}, role); apierrors.IsNotFound(err) {
		if err := r.createOwned(ctx, hive, &rbacv1.Role{ObjectMeta: meta(), Rules: agentRules}); err != nil {
			return fmt.Errorf("creating the agents' role: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("reading the agents' role: %w", err)
	} else if metav1.IsControlledBy(role, hive) && !equality.Semantic.DeepEqual(role.Rules, agentRules) {
		base := role.DeepCopy()
		role.Rules = agentRules
		if err := r.client.Patch(ctx, role, client.MergeFrom(base)); err != nil {
			return fmt.Errorf("updating the agents' role: %w", err)
		}
	}

	subjects := agentSubjects(hive, account, pods)
	roleRef := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}
	binding := &rbacv1.RoleBinding{}
	if err := r.client.Get(ctx, client.ObjectKey{Namespace: hive.Namespace, Name: name}, binding); apierrors.IsNotFound(err) {
		if err := r.createOwned(ctx, hive, &rbacv1.RoleBinding{ObjectMeta: meta(), Subjects: subjects, RoleRef: roleRef}); err != nil {
			return fmt.Errorf("creating the agents' role binding: %w", err)
		}
	} else if err != nil {
		return fmt.Errorf("reading the agents' role binding: %w", err)
	} else if metav1.IsControlledBy(binding, hive) && !equality.Semantic.DeepEqual(binding.Subjects, subjects) {
		log.FromContext(ctx).V(2).Info("updating the agents' role binding", "hive", klog.KObj(hive), "subjects", subjects)
		base := binding.DeepCopy()
		binding.Subjects = subjects
		if err := r.client.Patch(ctx, binding, client.MergeFrom(base)); err != nil {
			return fmt.Errorf("updating the agents' role binding: %w", err)
		}
	}
	return nil
}

// agentSubjects returns the service accounts the agents' RoleBinding binds: the template's
// and those of the hive's pods, sorted.
func agentSubjects(hive *swarmv1alpha1.Hive, account string, pods []*corev1.Pod) []rbacv1.Subject {
	names := []string{account}
	for _, p := range pods {
		sa := p.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		names = append(names, sa)
	}
	slices.Sort(names)
	names = slices.Compact(names)
	subjects := make([]rbacv1.Subject, 0, len(names))
	for _, n := range names {
		subjects = append(subjects, rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: n, Namespace: hive.Namespace})
	}
	return subjects
}
