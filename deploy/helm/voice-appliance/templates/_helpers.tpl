{{/* Names, labels and the pieces every workload shares. */}}

{{- define "va.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* "va.labels" (dict "ctx" . "component" "agent"): the recommended labels. */}}
{{- define "va.labels" -}}
{{ include "va.selector" . }}
app.kubernetes.io/version: {{ .ctx.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .ctx.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .ctx.Chart.Name .ctx.Chart.Version }}
{{- end -}}

{{- define "va.selector" -}}
app.kubernetes.io/name: {{ .ctx.Chart.Name }}
app.kubernetes.io/instance: {{ .ctx.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "va.secret" -}}
{{- required "existingSecret: the name of a Secret with LIVEKIT_API_KEY, LIVEKIT_API_SECRET, REDIS_PASSWORD ... (values.yaml)" .Values.existingSecret -}}
{{- end -}}

{{/* "va.secretEnv" (dict "ctx" . "name" "LIVEKIT_API_KEY" "optional" false): an env entry from the Secret. */}}
{{- define "va.secretEnv" -}}
- name: {{ .name }}
  valueFrom:
    secretKeyRef:
      name: {{ include "va.secret" .ctx }}
      key: {{ .name }}
      {{- if .optional }}
      optional: true
      {{- end }}
{{- end -}}

{{/* An image built from this repository: "va.image" (dict "ctx" . "name" "agent"). */}}
{{- define "va.image" -}}
{{- printf "%svoice-appliance/%s:%s" .ctx.Values.image.registry .name (.ctx.Values.image.tag | default .ctx.Chart.AppVersion) -}}
{{- end -}}

{{- define "va.redisAddress" -}}
{{- if .Values.redis.enabled -}}
{{- printf "%s-redis:6379" (include "va.fullname" .) -}}
{{- else -}}
{{- required "redis.external.address (host:port) when redis.enabled is false" .Values.redis.external.address -}}
{{- end -}}
{{- end -}}

{{/* REDIS_PASSWORD, then REDIS_URL built from it (Kubernetes expands $(VAR) from earlier entries). */}}
{{- define "va.redisEnv" -}}
{{ include "va.secretEnv" (dict "ctx" . "name" "REDIS_PASSWORD") }}
- name: REDIS_URL
  value: {{ printf "redis://:$(REDIS_PASSWORD)@%s/0" (include "va.redisAddress" .) | quote }}
{{- end -}}

{{- define "va.livekitUrl" -}}
{{- printf "ws://%s-livekit:%v" (include "va.fullname" .) .Values.livekit.config.port -}}
{{- end -}}

{{/* Pod-level hardening: non-root, the runtime's default seccomp profile. */}}
{{- define "va.podSecurity" -}}
runAsNonRoot: true
runAsUser: {{ .uid }}
runAsGroup: {{ .uid }}
fsGroup: {{ .uid }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "va.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* Extra environment from a values map (agent.env, tokenServer.env). */}}
{{- define "va.extraEnv" -}}
{{- range $name, $value := . }}
- name: {{ $name }}
  value: {{ $value | toString | quote }}
{{- end }}
{{- end -}}
