{{/* Labels of every object; selector labels are name + component only (as in the kustomize base). */}}
{{- define "oo.labels" -}}
app.kubernetes.io/name: ollama-optimizer
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: ollama-optimizer
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end }}

{{- define "oo.selector" -}}
app.kubernetes.io/name: ollama-optimizer
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "oo.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "oo.secretName" -}}
{{ .Values.existingSecret | default "ollama-optimizer-secrets" }}
{{- end }}

{{- define "oo.tlsDir" -}}/etc/ollama-optimizer/tls{{- end }}

{{/* Pod-level settings shared by every workload of ours. */}}
{{- define "oo.podSpec" -}}
serviceAccountName: ollama-optimizer
automountServiceAccountToken: false
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
securityContext:
  runAsNonRoot: true
  runAsUser: 10001
  runAsGroup: 10001
  fsGroup: 10001
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{/* Container fields shared by every container of ours: image, env, hardening, /tmp and TLS mounts. */}}
{{- define "oo.container" -}}
image: {{ include "oo.image" .root }}
imagePullPolicy: {{ .root.Values.image.pullPolicy }}
args: [{{ .component | quote }}]
envFrom:
  - configMapRef:
      name: ollama-optimizer-config
  {{- if not .tokenOnly }}
  - secretRef:
      name: {{ include "oo.secretName" .root }}
  {{- end }}
{{- if .tokenOnly }}
env:  # of the Secret only its token
  - name: OPTIMIZER_AUTH_TOKEN
    valueFrom:
      secretKeyRef:
        name: {{ include "oo.secretName" .root }}
        key: OPTIMIZER_AUTH_TOKEN
{{- end }}
resources:
  {{- toYaml .resources | nindent 2 }}
securityContext:
  allowPrivilegeEscalation: false
  readOnlyRootFilesystem: true
  runAsNonRoot: true
  capabilities:
    drop: ["ALL"]
  seccompProfile:
    type: RuntimeDefault
volumeMounts:
  - name: tmp
    mountPath: /tmp
  {{- if .root.Values.tls.enabled }}
  - name: tls
    mountPath: {{ include "oo.tlsDir" . }}
    readOnly: true
  {{- end }}
{{- end }}

{{- define "oo.volumes" -}}
volumes:
  - name: tmp
    emptyDir:
      medium: Memory
      sizeLimit: {{ .tmpSize }}
  {{- if .root.Values.tls.enabled }}
  - name: tls
    secret:
      secretName: {{ required "tls.secretName is required when tls.enabled" .root.Values.tls.secretName }}
  {{- end }}
{{- end }}

{{/* The gRPC probes of matcher and tuner: native gRPC probes, or `ollama-optimizer health` with TLS. */}}
{{- define "oo.grpcProbe" -}}
{{- if .root.Values.tls.enabled }}
exec:
  command: ["ollama-optimizer", "health", "localhost:{{ .port }}"{{ if .service }}, "--service", {{ .service | quote }}{{ end }}]
{{- else }}
grpc:
  port: {{ .port }}
  {{- with .service }}
  service: {{ . }}
  {{- end }}
{{- end }}
{{- end }}

{{- define "oo.grpcProbes" -}}
startupProbe:
  {{- include "oo.grpcProbe" (dict "root" .root "port" .port) | nindent 2 }}
  periodSeconds: 2
  failureThreshold: 60
readinessProbe:
  {{- include "oo.grpcProbe" (dict "root" .root "port" .port "service" .service) | nindent 2 }}
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 2
livenessProbe:  # "liveness": the process answers; "" is NOT_SERVING while the database is down
  {{- include "oo.grpcProbe" (dict "root" .root "port" .port "service" "liveness") | nindent 2 }}
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
{{- end }}

{{- define "oo.metricsAnnotations" -}}
prometheus.io/scrape: "true"
prometheus.io/port: {{ . | quote }}
prometheus.io/path: /metrics
{{- end }}
