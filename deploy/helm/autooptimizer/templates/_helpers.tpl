{{- define "autoopt.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "autoopt.fullname" -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "autoopt.labels" -}}
app.kubernetes.io/name: {{ include "autoopt.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
autooptimizer.io/env: {{ .Values.env }}
{{- end -}}

{{- define "autoopt.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}
