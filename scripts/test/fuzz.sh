#!/usr/bin/env bash
# cargo fuzz (libFuzzer + AddressSanitizer) on the parsers of untrusted
# input: the SSE parser, route matching, the header rules and the upstream
# side's HTTP/1.1 heads and chunked bodies (fuzz/).
# FUZZ_SECONDS per target (60). cargo-fuzz is installed from crates.io when
# missing; a nightly toolchain is used when rustup has one, otherwise the
# installed stable compiler with RUSTC_BOOTSTRAP=1 (the sanitizer flags are
# nightly-only options). A crash leaves its input in fuzz/artifacts/.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

require_rust
command -v cargo-fuzz >/dev/null 2>&1 || cargo install --locked cargo-fuzz
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi
for target in ${FUZZ_TARGETS:-sse_parser routes headers upstream_h1}; do
  echo "== cargo fuzz run $target for ${FUZZ_SECONDS:-60} s"
  cargo "${toolchain[@]}" fuzz run "$target" -- -max_total_time="${FUZZ_SECONDS:-60}" 2>&1 | grep -E '^Done|ERROR|panicked|SUMMARY' || true
  # libFuzzer exits non-zero on a finding; grep ate the status, so check the artifacts.
  if compgen -G "fuzz/artifacts/$target/crash-*" >/dev/null; then
    echo "$target: crash inputs in fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
