{{/*
"true" when templates/crd.yaml should render the CRD: it is absent, or this release manages it. A CRD created
by something else (kubectl apply of manifests/, another release) is left alone rather than failing the
install with helm's ownership error. `helm template` cannot look anything up, so it always renders it.
*/}}
{{- define "yolo-operator.crdManaged" -}}
{{- $existing := lookup "apiextensions.k8s.io/v1" "CustomResourceDefinition" "" "trainingjobs.yolo-operator.io" }}
{{- if not $existing }}true
{{- else }}
{{- $annotations := dig "metadata" "annotations" dict $existing }}
{{- if and (eq (get $annotations "meta.helm.sh/release-name") .Release.Name) (eq (get $annotations "meta.helm.sh/release-namespace") .Release.Namespace) }}true{{ end }}
{{- end }}
{{- end }}
