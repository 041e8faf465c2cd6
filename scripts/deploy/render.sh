#!/usr/bin/env bash
# Renders a kustomize overlay for a real site and refuses it when it is not
# fit to apply: placeholder CORS origins, empty or placeholder secrets, or
# any of scripts/deploy/check_manifests.py's checks. Usage:
#   bash scripts/deploy/render.sh prod > dwp.yaml && kubectl apply -f dwp.yaml
# (the overlay's git-ignored secrets.env and site.env must exist: docs/DEPLOY.md).
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
overlay=${1:?usage: render.sh OVERLAY (prod or dev)}
. scripts/deploy/tools.sh >&2
out=$(mktemp)
trap 'rm -f "$out"' EXIT
kubectl kustomize "deploy/k8s/overlays/$overlay" >"$out"
"$venv/bin/python" scripts/deploy/check_manifests.py --site "$out" >&2
cat "$out"
