{{- define "smsc-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "smsc-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "smsc-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "smsc-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "smsc-operator.labels" -}}
{{ include "smsc-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "smsc-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "smsc-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/*
The operator's permissions, shared by the ClusterRole (all namespaces) and the per-namespace
Roles (watchNamespaces). Each rule says why it exists.
*/}}
{{- define "smsc-operator.rules" -}}
# The resource it reconciles: watched, and its status written with server-side apply.
- apiGroups: ["smsc.io"]
  resources: ["smscclusters"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["smsc.io"]
  resources: ["smscclusters/status"]
  verbs: ["get", "update", "patch"]
# Children carry ownerReferences with blockOwnerDeletion, which the
# OwnerReferencesPermissionEnforcement admission plugin allows only to who may update finalizers.
- apiGroups: ["smsc.io"]
  resources: ["smscclusters/finalizers"]
  verbs: ["update"]
# Children it creates, keeps in shape with server-side apply, watches, and deletes when orphaned:
# the rendered smscd config, the Service ESMEs bind through, and smscd's own ServiceAccount.
- apiGroups: [""]
  resources: ["configmaps", "services", "serviceaccounts"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# The Role and RoleBinding that let smscd take part in the Lease election.
- apiGroups: ["rbac.authorization.k8s.io"]
  resources: ["roles", "rolebindings"]
  verbs: ["get", "list", "watch", "create", "update", "patch", "delete"]
# Pods: watched for readiness and the smsc.io/role label; patched to clear a stale role label
# left by a crashed leader. smscd's Role grants get/patch on pods, and RBAC refuses to let the
# operator grant what it does not hold itself (no escalate/bind here, on purpose).
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["get", "list", "watch", "patch"]
# Leases: read for status.activePod; patch (server-side apply) to create each cluster's smscd
# Lease with its labels and owner; create/update for the operator's own leader election; and
# smscd's Role grants get/update/create on its Lease, which the operator must hold to grant.
- apiGroups: ["coordination.k8s.io"]
  resources: ["leases"]
  verbs: ["get", "list", "watch", "create", "update", "patch"]
# Secrets: only read, to report a referenced Secret or key that is missing (Degraded) instead of
# letting smscd crash-loop on it. Values never leave the Secret (smscd gets them via env).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get"]
# Events explaining decisions (topology refused, checklist unmet, missing Secret).
- apiGroups: ["", "events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end -}}
