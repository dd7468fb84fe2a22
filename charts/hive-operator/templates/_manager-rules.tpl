{{/*
The manager's permissions: the rules of config/rbac/role.yaml, which controller-gen
generates from the controllers' kubebuilder markers. Keep them equal; the chart's test
fails when they differ. No secrets and no wildcards. Every resource is namespaced, so the
rules work as well in a Role of each watched namespace as in a ClusterRole.
*/}}
{{- define "hive-operator.managerRules" -}}
- apiGroups: [""]
  resources: [pods]
  verbs: [create, delete, get, list, patch, watch]
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [create, get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [create, delete, get, list, patch, watch]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [rolebindings, roles]
  verbs: [create, get, list, patch, watch]
- apiGroups: [swarm.aihub.dev]
  resources: [hives]
  verbs: [get, list, watch]
- apiGroups: [swarm.aihub.dev]
  resources: [hives/finalizers]
  verbs: [update]
- apiGroups: [swarm.aihub.dev]
  resources: [hives/status, tasks/status]
  verbs: [get, patch, update]
- apiGroups: [swarm.aihub.dev]
  resources: [tasks]
  verbs: [delete, get, list, watch]
{{- end }}
