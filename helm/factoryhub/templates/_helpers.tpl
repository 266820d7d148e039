{{/*
Names and labels.
*/}}
{{- define "factoryhub.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "factoryhub.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "factoryhub.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "factoryhub.labels" -}}
helm.sh/chart: {{ include "factoryhub.chart" . }}
app.kubernetes.io/name: {{ include "factoryhub.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Selector labels of one component: (dict "root" $ "component" "hub") */}}
{{- define "factoryhub.selectorLabels" -}}
app.kubernetes.io/name: {{ include "factoryhub.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "factoryhub.componentLabels" -}}
{{ include "factoryhub.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "factoryhub.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "factoryhub.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "factoryhub.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{/*
Fixed ports. The hub API port comes from site.hub.api_url (the chart's default 8081); the
services' ports from site.reports.port / site.courses.port (the site schema's defaults).
*/}}
{{- define "factoryhub.proxyPort" -}}8000{{- end }}
{{- define "factoryhub.proxyApiPort" -}}8001{{- end }}

{{/*
The site file as the hub reads it: .Values.site with the keys that wire the pods together
filled in where the user left them unset (the user's values win), as YAML. Also checks what
the chart cannot run.
*/}}
{{- define "factoryhub.site" -}}
{{- $fullname := include "factoryhub.fullname" . }}
{{- $site := deepCopy (.Values.site | default dict) }}
{{- $hub := dict
      "api_url" "http://0.0.0.0:8081"
      "proxy_api_url" (printf "http://%s-proxy-api:%s" $fullname (include "factoryhub.proxyApiPort" .))
      "services_host" (printf "%s-hub" $fullname) }}
{{- if .Values.ingress.enabled }}
{{- $_ := set $hub "public_url" (printf "%s://%s" (ternary "https" "http" .Values.ingress.tls.enabled) .Values.ingress.host) }}
{{- end }}
{{- $wiring := dict
      "hub" $hub
      "slurm" (dict "rest" (dict "key_file" "/etc/factoryhub/slurm-jwt/jwt_hs256.key"))
      "courses" (dict "materials_cache" (printf "%s/course-materials" (($site.hub | default dict).state_dir | default "/var/lib/factoryhub/hub"))) }}
{{- $oidc := (($site.auth | default dict).oidc | default dict) }}
{{- if not (or (hasKey $oidc "client_secret_file") (hasKey $oidc "client_secret_env")) }}
{{- $_ := set $wiring "auth" (dict "oidc" (dict "client_secret_file" "/etc/factoryhub/oidc/client-secret")) }}
{{- end }}
{{- $site = merge $site $wiring }}
{{- $_ := set $site.hub "external_proxy" true }}
{{- $access := (($site.slurm | default dict).access | default "local") }}
{{- if ne $access "rest" }}
{{- fail (printf "site.slurm.access is %q: the chart runs the hub in a pod, which reaches Slurm through slurmrestd only: set site.slurm.access: rest and site.slurm.rest.url (\"local\" is for a hub on a Slurm submit host, e.g. make up)" $access) }}
{{- end }}
{{- if ne (($site.auth | default dict).type | default "") "oidc" }}
{{- fail (printf "site.auth.type is %q: the chart signs people in with OIDC only: set site.auth.type: oidc and site.auth.oidc (\"local\" PAM sign-in is for a local factory)" (($site.auth | default dict).type | default "")) }}
{{- end }}
{{- toYaml $site }}
{{- end }}

{{/* The site as a dict (for templates that need its values). */}}
{{- define "factoryhub.siteDict" -}}
{{- include "factoryhub.site" . | fromYaml | toJson }}
{{- end }}

{{/* The port in an http(s) URL (80/443 when it names none). */}}
{{- define "factoryhub.urlPort" -}}
{{- $u := urlParse . }}
{{- $parts := splitList ":" $u.host }}
{{- if gt (len $parts) 1 }}{{ last $parts }}{{ else if eq $u.scheme "https" }}443{{ else }}80{{ end }}
{{- end }}

{{/* "pvc" (chart-made or existing claim) or "emptyDir". */}}
{{- define "factoryhub.stateVolume" -}}
{{- if or .Values.persistence.existingClaim .Values.persistence.enabled }}pvc{{ else }}emptyDir{{ end }}
{{- end }}

{{- define "factoryhub.claimName" -}}
{{- .Values.persistence.existingClaim | default (printf "%s-hub" (include "factoryhub.fullname" .)) }}
{{- end }}

{{/* Names and keys of the Secrets the pods read. */}}
{{- define "factoryhub.proxyTokenSecret" -}}
{{- .Values.proxy.authToken.existingSecret | default (printf "%s-proxy-token" (include "factoryhub.fullname" .)) }}
{{- end }}
{{- define "factoryhub.cookieSecret" -}}
{{- .Values.cookieSecret.existingSecret | default (printf "%s-cookie-secret" (include "factoryhub.fullname" .)) }}
{{- end }}
{{- define "factoryhub.oidcSecret" -}}
{{- .Values.oidc.clientSecret.existingSecret | default (printf "%s-oidc-client" (include "factoryhub.fullname" .)) }}
{{- end }}
{{- define "factoryhub.jwtSecret" -}}
{{- .Values.slurm.jwtKey.existingSecret | default (printf "%s-slurm-jwt" (include "factoryhub.fullname" .)) }}
{{- end }}
{{- define "factoryhub.dbSecret" -}}
{{- .Values.database.postgresql.existingSecret | default (printf "%s-db" (include "factoryhub.fullname" .)) }}
{{- end }}

{{/*
A Secret's value that must stay the same across upgrades: the one in the cluster when there is
one (lookup; empty under `helm template`), else the given default.
(dict "root" $ "name" NAME "key" KEY "default" BASE64)
*/}}
{{- define "factoryhub.keptSecretValue" -}}
{{- $found := lookup "v1" "Secret" .root.Release.Namespace .name }}
{{- if and $found $found.data (hasKey $found.data .key) }}
{{- index $found.data .key }}
{{- else }}
{{- .default }}
{{- end }}
{{- end }}

{{/* Pod- and container-level security contexts shared by the hub and the proxy. */}}
{{- define "factoryhub.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurityContext.runAsUser }}
runAsGroup: {{ .Values.podSecurityContext.runAsGroup }}
fsGroup: {{ .Values.podSecurityContext.fsGroup }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{- define "factoryhub.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurityContext.runAsUser }}
runAsGroup: {{ .Values.podSecurityContext.runAsGroup }}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
privileged: false
capabilities:
  drop:
    - ALL
seccompProfile:
  type: RuntimeDefault
{{- end }}

{{/*
The hub's managed services that listen on a port, from the site dict: reports and courses are
on unless enabled is false; their ports default to the site schema's defaults (a test checks
these numbers against hub/site/schema.json).
*/}}
{{- define "factoryhub.reportsEnabled" -}}
{{- $r := .reports | default dict }}
{{- if or (not (hasKey $r "enabled")) $r.enabled }}true{{ end }}
{{- end }}
{{- define "factoryhub.reportsPort" -}}
{{- $r := .reports | default dict }}
{{- $r.port | default 10101 | int }}
{{- end }}
{{- define "factoryhub.coursesEnabled" -}}
{{- $c := .courses | default dict }}
{{- if or (not (hasKey $c "enabled")) $c.enabled }}true{{ end }}
{{- end }}
{{- define "factoryhub.coursesPort" -}}
{{- $c := .courses | default dict }}
{{- $c.port | default 10102 | int }}
{{- end }}
