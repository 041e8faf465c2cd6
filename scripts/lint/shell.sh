#!/usr/bin/env bash
# Lints every shell script of the project (scripts/ and .ci/run) with
# ShellCheck, sourced helpers followed (-x); installs it when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
command -v shellcheck >/dev/null 2>&1 || apt_install shellcheck
mapfile -t files < <(find scripts -name '*.sh' | sort)
shellcheck -x "${files[@]}" .ci/run
# Built binaries are found where cargo puts them (target_dir in lib.sh:
# CARGO_TARGET_DIR, build.target-dir), never at a fixed ./target path.
# shellcheck disable=SC2016 # the pattern holds a literal $
if grep -nE '(^|[^$A-Za-z_{"])target/(release|debug)/' "${files[@]}" Makefile; then
  echo "FAIL a script names target/release or target/debug: use \"\$TARGET\" from target_dir (scripts/lib.sh)"
  exit 1
fi
echo "shellcheck: ${#files[@]} scripts and .ci/run clean ($(shellcheck --version | awk '/^version:/ {print $2}'))"
