#!/usr/bin/env bash
# Lints every shell script of the project (scripts/ and .ci/run) with
# ShellCheck, sourced helpers followed (-x); installs it when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
command -v shellcheck >/dev/null 2>&1 || apt_install shellcheck
mapfile -t files < <(find scripts -name '*.sh' | sort)
shellcheck -x "${files[@]}" .ci/run
echo "shellcheck: ${#files[@]} scripts and .ci/run clean ($(shellcheck --version | awk '/^version:/ {print $2}'))"
