{{/* Names and labels shared by every template. */}}

{{- define "payplane.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "payplane.operatorName" -}}
{{- printf "%s-operator" (include "payplane.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "payplane.serviceAccountName" -}}
{{- default (include "payplane.operatorName" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "payplane.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "payplane.labels" -}}
{{ include "payplane.selectorLabels" . }}
app.kubernetes.io/part-of: payplane
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "payplane.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "payplane.socketDir" -}}
{{- dir .Values.spire.serverSocket -}}
{{- end -}}
