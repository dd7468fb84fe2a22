{{/*
The chart's name, or nameOverride.
*/}}
{{- define "hive-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The fullname that prefixes every object of the release: fullnameOverride, or the release
name when it already contains the chart's name (so `helm install hive-operator` does not
give "hive-operator-hive-operator"), or else "<release>-<chart>". Truncated to 63
characters, the limit of a DNS label, with room left by callers that add a suffix.
*/}}
{{- define "hive-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "hive-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of every object of the release, commonLabels among them.
*/}}
{{- define "hive-operator.labels" -}}
helm.sh/chart: {{ include "hive-operator.chart" . }}
{{ include "hive-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: hive-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels that select the manager's pods. They must never change between releases: a
Deployment's selector is immutable.
*/}}
{{- define "hive-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "hive-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The manager's service account.
*/}}
{{- define "hive-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "hive-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The user name the API server gives the manager: the admission policy exempts it, so that
the operator may write any task's status.
*/}}
{{- define "hive-operator.userName" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "hive-operator.serviceAccountName" . }}
{{- end }}

{{/*
The manager's image: a digest pins it exactly, else the tag, else the chart's appVersion.
*/}}
{{- define "hive-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
The metrics Service's name; Prometheus labels what it scrapes through it with job=<name>.
*/}}
{{- define "hive-operator.metricsServiceName" -}}
{{- printf "%s-metrics" (include "hive-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Selects the manager's own series (controller-runtime's, the Go runtime's) among those of
every other controller Prometheus scrapes.
*/}}
{{- define "hive-operator.metricsSelector" -}}
job="{{ include "hive-operator.metricsServiceName" . }}", namespace="{{ .Release.Namespace }}"
{{- end }}

{{/*
The annotations of an object's metadata, as a line "  annotations:" and its entries, for
an object at the top of a document: commonAnnotations, and the object's own (extra),
which win over the common ones. Nothing at all when both are empty.
*/}}
{{- define "hive-operator.annotations" -}}
{{- $all := merge (deepCopy (default (dict) .extra)) (default (dict) .ctx.Values.commonAnnotations) }}
{{- with $all }}
  annotations:
    {{- toYaml . | nindent 4 }}
{{- end }}
{{- end }}

{{/*
The Secret holding the metrics endpoint's certificate: metrics.tls.secretName, or the one
cert-manager issues; empty when the manager serves a self-signed certificate.
*/}}
{{- define "hive-operator.metricsCertSecret" -}}
{{- if .Values.metrics.tls.secretName }}
{{- .Values.metrics.tls.secretName }}
{{- else if .Values.metrics.tls.certManager.enabled }}
{{- printf "%s-metrics-cert" (include "hive-operator.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/*
The gateway's name prefix, "<fullname>-gateway", within a DNS label.
*/}}
{{- define "hive-operator.gatewayName" -}}
{{- printf "%s-gateway" (include "hive-operator.fullname" . | trunc 55 | trimSuffix "-") }}
{{- end }}

{{/*
Labels that select the gateway's pods: apart from the manager's (whose Deployment selects
name and instance), so that neither Deployment claims the other's pods. Never to change.
*/}}
{{- define "hive-operator.gatewaySelectorLabels" -}}
app.kubernetes.io/name: {{ include "hive-operator.name" . | trunc 55 | trimSuffix "-" }}-gateway
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
Labels of the gateway's objects, commonLabels among them.
*/}}
{{- define "hive-operator.gatewayLabels" -}}
helm.sh/chart: {{ include "hive-operator.chart" . }}
{{ include "hive-operator.gatewaySelectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: gateway
app.kubernetes.io/part-of: hive-operator
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The gateway's image: a digest pins it exactly, else the tag, else the chart's appVersion.
*/}}
{{- define "hive-operator.gatewayImage" -}}
{{- $i := .Values.gateway.image }}
{{- if $i.digest }}
{{- printf "%s@%s" $i.repository $i.digest }}
{{- else }}
{{- printf "%s:%s" $i.repository (default .Chart.AppVersion $i.tag) }}
{{- end }}
{{- end }}
