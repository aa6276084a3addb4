{{/* Chart name. */}}
{{- define "yolo-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: <release>-<chart>, or <release> when it already contains the chart name. */}}
{{- define "yolo-operator.fullname" -}}
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

{{- define "yolo-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Common labels. */}}
{{- define "yolo-operator.labels" -}}
helm.sh/chart: {{ include "yolo-operator.chart" . }}
{{ include "yolo-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: yolo-operator
{{- end }}

{{/* Selector labels (immutable on a Deployment: never add to them). */}}
{{- define "yolo-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "yolo-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The operator's ServiceAccount. */}}
{{- define "yolo-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "yolo-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "yolo-operator.image" -}}
{{- $tag := default .Chart.AppVersion .Values.operator.image.tag }}
{{- if hasPrefix "sha256:" $tag }}
{{- printf "%s@%s" .Values.operator.image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .Values.operator.image.repository $tag }}
{{- end }}
{{- end }}

{{- define "yolo-operator.trainerImage" -}}
{{- $tag := default .Chart.AppVersion .Values.trainer.image.tag }}
{{- if hasPrefix "sha256:" $tag }}
{{- printf "%s@%s" .Values.trainer.image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .Values.trainer.image.repository $tag }}
{{- end }}
{{- end }}

{{/*
RBAC rules for the namespaces the operator reconciles in: a ClusterRole in cluster-wide mode, a Role in each
watched namespace otherwise. Each rule names the code that needs it (operator/src/yolo_operator/controller/act.py
and kopf). No wildcards and no access to Secrets: the trainer pod reads the S3 Secret through secretKeyRef,
the operator never does.
*/}}
{{- define "yolo-operator.rules" -}}
# TrainingJobs: kopf lists and watches them; Controller.get_trainingjob reads one. patch: kopf's handler
# progress annotations of the operator before the reconciler (it has no create/update handlers, so kopf no
# longer writes them); test_security's OPERATOR_NEEDS still lists it.
- apiGroups: ["yolo-operator.io"]
  resources: ["trainingjobs"]
  verbs: ["get", "list", "watch", "patch"]
# TrainingJob status: Controller.write_status (merge patch of phase, conditions, jobName, ...). get and patch
# are also what the per-job Role grants the trainer: RBAC escalation prevention lets the operator create
# that Role only because it holds these verbs itself.
- apiGroups: ["yolo-operator.io"]
  resources: ["trainingjobs/status"]
  verbs: ["get", "patch", "update"]
# Owner references with blockOwnerDeletion on the Job, ServiceAccount, Role and RoleBinding: clusters that
# enable the OwnerReferencesPermissionEnforcement admission plugin (OpenShift does) require this.
- apiGroups: ["yolo-operator.io"]
  resources: ["trainingjobs/finalizers"]
  verbs: ["update"]
# The trainer Job: Controller.create_if_absent creates it, observe reads one the index lacks, act patches
# suspend / activeDeadlineSeconds / ttlSecondsAfterFinished; kopf lists and watches the labelled Jobs.
# No delete: the garbage collector removes a Job through its owner reference.
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["create", "get", "list", "watch", "patch"]
# Headless Services of multi-node TrainingJobs (builders.build_service): created before their Indexed Job and
# again when deleted; kopf watches the labelled ones. No delete: the garbage collector removes them.
- apiGroups: [""]
  resources: ["services"]
  verbs: ["create", "get", "list", "watch"]
# Trainer pods: Controller.observe lists them when a failed Job's pods have not said why yet; kopf watches the labelled pods.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch"]
# Kueue Workloads (spec.queueName): kopf watches them to show Kueue's reason, admission and preemptions in the
# TrainingJob's status; patch sets spec.active from the TrainingJob's spec.suspend (Kueue's way to suspend an
# admitted workload). Without Kueue's CRD the watch is idle.
- apiGroups: ["kueue.x-k8s.io"]
  resources: ["workloads"]
  verbs: ["get", "list", "watch", "patch"]
# The CA bundle's ConfigMap (spec.s3.caBundle): read only while a trainer pod waits in ContainerCreating, to
# report a missing one (Controller.missing_ca_bundle). Never Secrets.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get"]
# Per-job ServiceAccount / Role / RoleBinding (builders.build_service_account, build_role,
# build_role_binding): created once; read-only verbs for inspection and idempotent re-creation.
- apiGroups: [""]
  resources: ["serviceaccounts"]
  verbs: ["create", "get", "list", "watch"]
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["create", "get", "list", "watch"]
# Events on TrainingJobs (Controller.post_event, and kopf's own). list/watch: the Job controller's FailedCreate
# Events of the operator's Jobs (observed.refusal_index), the only record of a pod the API server refused.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch", "list", "watch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}

{{/* Cluster-scoped reads kopf needs in both modes. */}}
{{- define "yolo-operator.clusterRules" -}}
# kopf discovers the TrainingJob resource and notices CRDs being added or removed.
- apiGroups: ["apiextensions.k8s.io"]
  resources: ["customresourcedefinitions"]
  verbs: ["get", "list", "watch"]
{{- end }}

{{/* The console plugin's name: package.json's consolePlugin.name, which the console also uses in the
plugin's URL (/api/plugins/<name>/, baked into the bundle); one per cluster, like the ConsolePlugin. */}}
{{- define "yolo-operator.consolePluginName" -}}
yolo-operator-console-plugin
{{- end }}

{{- define "yolo-operator.consolePluginImage" -}}
{{- $tag := default .Chart.AppVersion .Values.consolePlugin.image.tag }}
{{- if hasPrefix "sha256:" $tag }}
{{- printf "%s@%s" .Values.consolePlugin.image.repository $tag }}
{{- else }}
{{- printf "%s:%s" .Values.consolePlugin.image.repository $tag }}
{{- end }}
{{- end }}
