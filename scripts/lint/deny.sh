#!/usr/bin/env bash
# cargo-deny over the workspace (deny.toml): advisories, licences, duplicate
# versions, sources. Installs the pinned cargo-deny from crates.io when
# missing.
#
# The advisory database is RustSec's git repository. cargo-deny fetches it
# from github.com itself; where github.com cannot be reached, set
# DWP_ADVISORY_DB to a clone or mirror of it (a path or git URL) and the
# check runs offline against that. DWP_ADVISORIES=skip leaves advisories
# out, loudly; nothing else does.
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh
require_rust

version=0.20.2
if [ "$(cargo deny --version 2>/dev/null)" != "cargo-deny $version" ]; then
  echo "==> installing cargo-deny $version (crates.io)"
  cargo install --locked --quiet cargo-deny --version "$version"
fi

# cargo-deny reads the metadata of every platform's crates (windows-sys
# and the like), which a build here never downloads; --offline would then
# fail on a machine whose registry has only this platform's.
cargo fetch --locked --quiet
checks=(bans licenses sources)
cargo deny --offline check "${checks[@]}"

if [ "${DWP_ADVISORIES:-}" = skip ]; then
  echo "cargo-deny: ADVISORIES NOT CHECKED (DWP_ADVISORIES=skip)"
  exit 0
fi
if [ -z "${DWP_ADVISORY_DB:-}" ]; then
  cargo deny check advisories
  exit 0
fi
# cargo-deny keeps the database in db-path under the URL's own directory
# name; a local copy there and --offline make it use that copy.
db_root=target/advisory-dbs
db="$db_root/advisory-db-3157b0e258782691"
rm -rf "$db"
mkdir -p "$db_root"
git clone --quiet "$DWP_ADVISORY_DB" "$db"
config=$(mktemp)
trap 'rm -f "$config"' EXIT
sed "s|^db-urls = .*|&\ndb-path = \"$PWD/$db_root\"|" deny.toml >"$config"
echo "advisory database: $DWP_ADVISORY_DB at $(git -C "$db" log -1 --format='%h of %cs')"
cargo deny --offline --config "$config" check advisories
