{{/* Names, labels, images and the RBAC rules shared by the templates. */}}

{{- define "retrain-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "retrain-operator.fullname" -}}
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

{{- define "retrain-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "retrain-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "retrain-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "retrain-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: retrain-operator
{{- end }}

{{- define "retrain-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "retrain-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, or repository@digest when a digest is given. */}}
{{- define "retrain-operator.imageRef" -}}
{{- if .digest }}
{{- printf "%s@%s" .repository .digest }}
{{- else }}
{{- printf "%s:%s" .repository .tag }}
{{- end }}
{{- end }}

{{- define "retrain-operator.image" -}}
{{- include "retrain-operator.imageRef" (dict "repository" .Values.image.repository "tag" (default .Chart.AppVersion .Values.image.tag) "digest" .Values.image.digest) }}
{{- end }}

{{- define "retrain-operator.trainerImage" -}}
{{- $t := .Values.trainer.image }}
{{- $repository := default .Values.image.repository $t.repository }}
{{- $tag := default (default .Chart.AppVersion .Values.image.tag) $t.tag }}
{{- $digest := $t.digest }}
{{- if and (not $digest) (not $t.repository) (not $t.tag) }}
{{- $digest = .Values.image.digest }}
{{- end }}
{{- include "retrain-operator.imageRef" (dict "repository" $repository "tag" $tag "digest" $digest) }}
{{- end }}

{{/* Namespaces that get a training ServiceAccount. */}}
{{- define "retrain-operator.trainingNamespaces" -}}
{{- $namespaces := .Values.training.serviceAccount.namespaces | default .Values.watchNamespaces }}
{{- toJson (uniq $namespaces) }}
{{- end }}

{{/*
Rules on cluster-scoped resources. Needed in both modes: MetricsEndpoints and ModelStores are
cluster-scoped, and kopf observes CRDs so that it starts watching ours even when they are established
after it starts.
*/}}
{{- define "retrain-operator.clusterRules" -}}
- apiGroups: [retrain.dev]
  resources: [metricsendpoints]
  verbs: [get, list, watch]
- apiGroups: [retrain.dev]
  resources: [modelstores]
  verbs: [get, list, watch]
- apiGroups: [apiextensions.k8s.io]
  resources: [customresourcedefinitions]
  verbs: [list, watch]
{{- end }}

{{/* Rules in every namespace whose policies the operator handles. */}}
{{- define "retrain-operator.namespacedRules" -}}
- apiGroups: [retrain.dev]
  resources: [retrainpolicies]
  verbs: [list, watch]
- apiGroups: [retrain.dev]
  resources: [retrainpolicies/status]
  verbs: [patch]
- apiGroups: [retrain.dev]
  resources: [retrainpolicies/finalizers]
  verbs: [update]
- apiGroups: [retrain.dev]
  resources: [retrainbudgets]
  verbs: [get, list, watch]
- apiGroups: [retrain.dev]
  resources: [retrainbudgets/status]
  verbs: [patch]
- apiGroups: [batch]
  resources: [jobs]
  verbs: [get, list, watch, create, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [list]
- apiGroups: [""]
  resources: [events]
  verbs: [create]
{{- end }}

{{/* Fail early on values that cannot work. */}}
{{- define "retrain-operator.validate" -}}
{{- if and (gt (int .Values.replicas) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicas > 1 needs leaderElection.enabled=true: without leader election every pod would reconcile every policy" }}
{{- end }}
{{- if .Values.leaderElection.enabled }}
{{- $lease := .Values.leaderElection.leaseName | toString }}
{{- if not (and (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$" $lease) (le (len $lease) 253)) }}
{{- fail (printf "leaderElection.leaseName %q is not a valid object name (lowercase letters, digits, '-' and '.')" $lease) }}
{{- end }}
{{- $seconds := .Values.leaderElection.leaseSeconds }}
{{- if or (ne (toString $seconds) (toString (int $seconds))) (lt (int $seconds) 3) }}
{{- fail (printf "leaderElection.leaseSeconds must be a whole number of seconds, at least 3 (got %v)" $seconds) }}
{{- end }}
{{- end }}
{{- if lt (int .Values.replicas) 1 }}
{{- fail "replicas must be at least 1" }}
{{- end }}
{{- if eq (int .Values.metrics.port) (int .Values.health.port) }}
{{- fail "metrics.port and health.port must differ" }}
{{- end }}
{{- end }}
