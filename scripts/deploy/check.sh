#!/usr/bin/env bash
# Offline checks of everything in deploy/ (there is no Docker engine and no
# cluster here): hadolint on every Dockerfile, compose.yaml against the
# compose specification's JSON schema, both kustomize overlays rendered with
# `kubectl kustomize` and validated with `kubernetes-validate --strict`
# against the Kubernetes 1.30 schemas (rendered from a copy with throw-away
# secrets.env and site.env), then check_manifests.py on the result; and the
# refusals: prod without site.env, a placeholder origin, a Secret in the
# base, a Secret whose name does not change with its values. Tools:
# scripts/deploy/tools.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

. scripts/deploy/tools.sh
# The compose specification's schema, as shipped inside docker-compose 1.29.2 on PyPI.
schema=$venv/compose_spec.json
if [ ! -s "$schema" ]; then
  tmp=$(mktemp -d)
  "$venv/bin/pip" download -q --disable-pip-version-check --no-deps -d "$tmp" docker-compose==1.29.2
  "$venv/bin/python" -c "import sys, zipfile; open(sys.argv[2], 'wb').write(zipfile.ZipFile(sys.argv[1]).read('compose/config/compose_spec.json'))" "$tmp"/docker_compose-1.29.2-*.whl "$schema"
  rm -rf "$tmp"
fi

echo "== hadolint"
"$venv/bin/hadolint" deploy/docker/*.Dockerfile && echo "Dockerfiles: no findings"
echo "== compose.yaml against the compose specification"
"$venv/bin/check-jsonschema" --schemafile "$schema" deploy/compose.yaml
# main-service trusts the X-Forwarded-For the gateway appends: reachable
# only through the gateway, never on a published port.
"$venv/bin/python" - <<'PY'
import sys, yaml
services = yaml.safe_load(open("deploy/compose.yaml"))["services"]
main = services["main-service"]
problems = []
if main.get("ports"):
    problems.append("main-service publishes a port: clients could forge X-Forwarded-For")
if str(main.get("environment", {}).get("FORWARDED_HOPS")) != "1":
    problems.append("main-service FORWARDED_HOPS is not 1 (the gateway)")
if problems:
    sys.exit("FAIL compose: " + "; ".join(problems))
print("compose: main-service behind the gateway only")
PY
echo "== kustomize overlays, kubernetes-validate --strict (1.30)"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# The overlays read git-ignored files (secrets.env, site.env): render a copy
# with throw-away values, as an operator's would be.
cp -r deploy/k8s "$out/k8s"
rm -f "$out"/k8s/overlays/*/secrets.env "$out"/k8s/overlays/*/site.env
site() { # site OVERLAY: throw-away secrets for OVERLAY
  printf 'JWT_SECRET=%s\nDATABASE_URL=postgres://dwp:%s@postgres:5432/dwp_main\nREDIS_PASSWORD=%s\n' \
    "$(head -c 32 /dev/urandom | base64)" "$RANDOM$RANDOM" "$RANDOM$RANDOM" >"$out/k8s/overlays/$1/secrets.env"
}
site dev
site prod
if kubectl kustomize "$out/k8s/overlays/prod" >/dev/null 2>&1; then
  echo "FAIL prod renders without its site.env (CORS origins)"; exit 1
fi
echo "prod without site.env: refused"
echo 'CORS_ALLOWED_ORIGINS=https://dwp.corp.example.com' >"$out/k8s/overlays/prod/site.env"
kubectl kustomize "$out/k8s/overlays/prod" >"$out/placeholder.yaml"
if "$venv/bin/python" scripts/deploy/check_manifests.py --site "$out/placeholder.yaml" >/dev/null; then
  echo "FAIL a placeholder origin passes the site check"; exit 1
fi
echo "prod with a placeholder origin: refused"
echo 'CORS_ALLOWED_ORIGINS=https://dwp.lint-check.internal' >"$out/k8s/overlays/prod/site.env"
for overlay in dev prod; do
  kubectl kustomize "$out/k8s/overlays/$overlay" >"$out/$overlay.yaml"
  "$venv/bin/kubernetes-validate" --strict -k 1.30.0 --quiet "$out/$overlay.yaml"
  echo "$overlay: $(grep -c '^kind:' "$out/$overlay.yaml") objects valid"
done
echo "== applying an overlay never replaces a Secret that exists"
if kubectl kustomize deploy/k8s/base | grep -q '^kind: Secret'; then
  echo "FAIL the base holds a Secret"; exit 1
fi
first=$(awk '/^kind: Secret/ {s=1} s && /^  name:/ {print $2; exit}' "$out/prod.yaml")
site prod
second=$(kubectl kustomize "$out/k8s/overlays/prod" | awk '/^kind: Secret/ {s=1} s && /^  name:/ {print $2; exit}')
if [ -z "$first" ] || [ "$first" = "$second" ] || [ "$first" = dwp-secrets ]; then
  echo "FAIL new secret values must give a new Secret name ($first, $second)"; exit 1
fi
echo "base: no Secret; new values, new Secret ($first -> $second)"
echo "== what this system needs of the manifests"
"$venv/bin/python" scripts/deploy/check_manifests.py "$out/dev.yaml"
"$venv/bin/python" scripts/deploy/check_manifests.py --site "$out/prod.yaml"
