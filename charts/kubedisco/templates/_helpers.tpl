{{/*
The chart's name, the release's full name (truncated to 63 characters, the
limit of a DNS label), and the standard labels.
*/}}
{{- define "kubedisco.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kubedisco.fullname" -}}
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

{{- define "kubedisco.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "kubedisco.selectorLabels" -}}
app.kubernetes.io/name: {{ include "kubedisco.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "kubedisco.labels" -}}
helm.sh/chart: {{ include "kubedisco.chart" . }}
{{ include "kubedisco.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: discovery-agent
app.kubernetes.io/part-of: kubedisco
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "kubedisco.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "kubedisco.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "kubedisco.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag }}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* host:port, with brackets around an IPv6 host. */}}
{{- define "kubedisco.hostPort" -}}
{{- $host := index . 0 }}{{- $port := index . 1 }}
{{- if contains ":" $host }}[{{ $host }}]:{{ $port }}{{ else }}{{ $host }}:{{ $port }}{{ end }}
{{- end }}

{{/* The address the agent listens on: listen.ip (DaemonSet) or 127.0.0.1 (sidecar). */}}
{{- define "kubedisco.listenIP" -}}
{{- if eq .Values.mode "sidecar" }}127.0.0.1{{ else }}{{ .Values.listen.ip }}{{ end }}
{{- end }}

{{- define "kubedisco.httpHost" -}}
{{- if eq .Values.mode "sidecar" }}127.0.0.1{{ else }}{{ default .Values.listen.ip .Values.listen.httpHost }}{{ end }}
{{- end }}

{{/* The URL apps (and `kubedisco dump`) use for the HTTP API. */}}
{{- define "kubedisco.httpURL" -}}
http://{{ include "kubedisco.hostPort" (list (include "kubedisco.listenIP" .) .Values.listen.httpPort) }}
{{- end }}

{{/*
Upstreams for names outside the zone. Empty in DaemonSet mode unless set:
the agent then reads its resolv.conf, which `dnsPolicy: Default` makes the
node's own, so outside names never touch the cluster DNS (as NodeLocal
DNSCache does). A sidecar forwards to the cluster DNS.
*/}}
{{- define "kubedisco.upstreams" -}}
{{- if .Values.upstream }}
{{- join "," .Values.upstream }}
{{- else if ne .Values.mode "daemonset" }}
{{- include "kubedisco.hostPort" (list .Values.clusterDNS 53) }}
{{- end }}
{{- end }}

{{/* Whether the agent reads its Node (for the zone), so needs get on Nodes. */}}
{{/*
The gRPC xDS bootstrap of an app (what `kubedisco xds-bootstrap` prints):
the agent as its xDS server, plaintext (node-local or in the pod).
*/}}
{{- define "kubedisco.xdsBootstrap" -}}
{"xds_servers":[{"server_uri":"{{ include "kubedisco.hostPort" (list (include "kubedisco.listenIP" .) .Values.xds.port) }}","channel_creds":[{"type":"insecure"}],"server_features":["xds_v3"]}],"node":{"id":"{{ default .Release.Namespace .Values.sidecar.appNamespace }}/app"}}
{{- end }}

{{- define "kubedisco.readsNode" -}}
{{- if and .Values.topology.zoneFromNode (not .Values.topology.zone) }}true{{ end }}
{{- end }}

{{/*
The agent's arguments, shared by the DaemonSet and the sidecar. NODE_NAME
comes from the downward API.
*/}}
{{- define "kubedisco.args" -}}
- agent
{{- if eq .Values.mode "daemonset" }}
- --link-local-ip={{ .Values.listen.ip }}
- --link-local-interface={{ .Values.listen.interface }}
{{- end }}
- --dns-addr={{ include "kubedisco.hostPort" (list (include "kubedisco.listenIP" .) .Values.listen.dnsPort) }}
- --http-addr={{ include "kubedisco.hostPort" (list (include "kubedisco.httpHost" .) .Values.listen.httpPort) }}
{{- if .Values.xds.enabled }}
- --xds-addr={{ include "kubedisco.hostPort" (list (include "kubedisco.listenIP" .) .Values.xds.port) }}
{{- end }}
- --cluster-domain={{ .Values.clusterDomain }}
- --ttl={{ .Values.ttl }}
{{- with include "kubedisco.upstreams" . }}
- --upstream={{ . }}
{{- end }}
{{- if .Values.forward }}
- --forward={{ range $i, $domain := keys .Values.forward | sortAlpha }}{{ range $j, $to := index $.Values.forward $domain }}{{ if or $i $j }},{{ end }}{{ $domain }}={{ $to }}{{ end }}{{ end }}
{{- end }}
- --cache-size={{ .Values.cache.size }}
- --cache-max-ttl={{ .Values.cache.maxTTL }}
- --cache-max-negative-ttl={{ .Values.cache.maxNegativeTTL }}
- --serve-stale={{ .Values.cache.serveStale }}
- --stale-client-timeout={{ .Values.cache.staleClientTimeout }}
- --node-name=$(NODE_NAME)
{{- with .Values.topology.zone }}
- --zone={{ . }}
{{- end }}
{{- if not .Values.topology.zoneFromNode }}
- --zone-from-node=false
{{- end }}
- --default-topology={{ .Values.topology.default }}
- --panic-threshold={{ .Values.topology.panicThreshold }}
{{- with .Values.namespaces }}
- --namespaces={{ join "," . }}
{{- end }}
{{- if .Values.weights.fromPodLabels }}
- --pod-weights
{{- end }}
{{- if .Values.snapshot.enabled }}
- --snapshot-path={{ include "kubedisco.snapshotDir" . }}/{{ .Release.Namespace }}.{{ include "kubedisco.fullname" . }}.snapshot
- --snapshot-interval={{ .Values.snapshot.interval }}
- --snapshot-max-age={{ .Values.snapshot.maxAge }}
{{- end }}
- --log-format={{ .Values.logFormat }}
- --log-level={{ .Values.logLevel }}
{{- with .Values.extraArgs }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Warm start: where the agent's container keeps its snapshot (a hostPath in
DaemonSet mode, an emptyDir in the sidecar), and the volume's name.
*/}}
{{- define "kubedisco.snapshotDir" -}}
/var/lib/kubedisco
{{- end }}

{{- define "kubedisco.snapshotVolume" -}}
{{- if eq .Values.mode "sidecar" }}{{ .Values.sidecar.containerName }}-snapshot{{ else }}snapshot{{ end }}
{{- end }}

{{- define "kubedisco.snapshotMounts" -}}
- name: {{ include "kubedisco.snapshotVolume" . }}
  mountPath: {{ include "kubedisco.snapshotDir" . }}
{{- end }}

{{- define "kubedisco.env" -}}
- name: NODE_NAME
  valueFrom:
    fieldRef:
      fieldPath: spec.nodeName
# `kubectl exec ... -- kubedisco dump` finds the agent without flags.
- name: KUBEDISCO_ADDR
  value: {{ include "kubedisco.httpURL" . | quote }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
The namespaces RBAC is granted in: none (cluster-wide) or `namespaces`.
Checks the combinations that cannot work.
*/}}
{{- define "kubedisco.validate" -}}
{{- if and (ne .Values.mode "daemonset") (or .Values.serviceMonitor.enabled .Values.podMonitor.enabled .Values.networkPolicy.enabled) }}
{{- fail "serviceMonitor, podMonitor and networkPolicy are for mode: daemonset (in sidecar mode the agent runs inside the app's pods)" }}
{{- end }}
{{- if and (eq .Values.mode "daemonset") (or .Values.serviceMonitor.enabled .Values.podMonitor.enabled) (not (has .Values.listen.httpHost (list "0.0.0.0" "::"))) }}
{{- fail "serviceMonitor/podMonitor: Prometheus cannot reach the node-local address; set listen.httpHost: 0.0.0.0 so /metrics is served on the node's addresses too" }}
{{- end }}
{{- end }}

{{/* The agent's namespaced rules (see rbac.yaml). */}}
{{- define "kubedisco.rules" }}
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["get", "list", "watch"]
{{- if .Values.weights.fromPodLabels }}
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
{{- end }}
{{- end }}

{{/* Nodes: get, for the zone of the agent's own Node. */}}
{{- define "kubedisco.nodeRule" }}
- apiGroups: [""]
  resources: ["nodes"]
  verbs: ["get"]
{{- end }}

{{/*
Sidecar mode: the pod-spec fields that run the agent as a native sidecar
(an init container with restartPolicy: Always) on 127.0.0.1 and make the app
resolve through it. A strategic-merge patch for a workload's pod template.
*/}}
{{- define "kubedisco.sidecarPodSpec" -}}
{{- if has .Values.sidecar.appNamespace (list "" .Release.Namespace) }}
# Pods can only run as an account of their own namespace: apps elsewhere keep
# theirs, bound to the agent's role with rbac.extraSubjects.
serviceAccountName: {{ include "kubedisco.serviceAccountName" . }}
{{- end }}
# Resolve through the sidecar from the app's first instant, with the search
# list and options of a normal pod (dnsPolicy: ClusterFirst).
dnsPolicy: None
dnsConfig:
  nameservers:
    - 127.0.0.1
  searches:
    - {{ default .Release.Namespace .Values.sidecar.appNamespace }}.svc.{{ .Values.clusterDomain }}
    - svc.{{ .Values.clusterDomain }}
    - {{ .Values.clusterDomain }}
  options:
    - name: ndots
      value: "5"
{{- if lt (int .Values.listen.dnsPort) 1024 }}
securityContext:
  # Port {{ .Values.listen.dnsPort }} without root or capabilities (a "safe" sysctl, allowed by default).
  sysctls:
    - name: net.ipv4.ip_unprivileged_port_start
      value: {{ .Values.listen.dnsPort | quote }}
{{- end }}
{{- if .Values.snapshot.enabled }}
volumes:
  # Outlives a restart of the agent's container, not the pod.
  - name: {{ include "kubedisco.snapshotVolume" . }}
    emptyDir: {}
{{- end }}
initContainers:
  - name: {{ .Values.sidecar.containerName }}
    image: {{ include "kubedisco.image" . | quote }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    # A native sidecar: started before the app, kept running beside it,
    # stopped after it.
    restartPolicy: Always
    args:
      {{- include "kubedisco.args" . | nindent 6 }}
    env:
      {{- include "kubedisco.env" . | nindent 6 }}
    {{- if .Values.snapshot.enabled }}
    volumeMounts:
      {{- include "kubedisco.snapshotMounts" . | nindent 6 }}
    {{- end }}
    # The app starts once the agent is ready: synced, so its first DNS
    # answer is a real one. Kubelet probes cannot reach 127.0.0.1 inside
    # the pod, hence exec.
    startupProbe:
      exec:
        command: ["kubedisco", "health", "--ready", "--timeout", "1s"]
      {{- toYaml .Values.sidecar.startupProbe | nindent 6 }}
    resources:
      {{- toYaml .Values.resources | nindent 6 }}
    securityContext:
      runAsNonRoot: true
      runAsUser: 65532
      runAsGroup: 65532
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities:
        drop: ["ALL"]
      seccompProfile:
        type: RuntimeDefault
{{- if .Values.xds.enabled }}
containers:
  # The app: gRPC's xDS client finds the sidecar through this, so the app
  # needs only an xds:/// target.
  - name: app
    env:
      - name: GRPC_XDS_BOOTSTRAP_CONFIG
        value: {{ include "kubedisco.xdsBootstrap" . | quote }}
{{- end }}
{{- end }}

{{/*
DaemonSet mode: the pod-spec fields of an app that resolves through the
node's agent first, the cluster DNS second, with a normal pod's search list.
*/}}
{{- define "kubedisco.appPodSpec" -}}
dnsPolicy: None
dnsConfig:
  nameservers:
    - {{ .Values.listen.ip }}
    - {{ .Values.clusterDNS }}
  searches:
    - <app namespace>.svc.{{ .Values.clusterDomain }}
    - svc.{{ .Values.clusterDomain }}
    - {{ .Values.clusterDomain }}
  options:
    - name: ndots
      value: "5"
containers:
  - name: app
    env:
      - name: KUBEDISCO_ADDR
        value: {{ include "kubedisco.httpURL" . | quote }}
      {{- if .Values.xds.enabled }}
      - name: GRPC_XDS_BOOTSTRAP_CONFIG
        value: {{ include "kubedisco.xdsBootstrap" . | quote }}
      {{- end }}
{{- end }}
