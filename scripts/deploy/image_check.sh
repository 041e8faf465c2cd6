#!/usr/bin/env bash
# Builds every Dockerfile in deploy/docker for real, with buildah (Debian's
# package; vfs storage and chroot isolation, so no daemon, no overlay mount
# and no user namespaces are needed), then starts each image's binary from
# the built image and checks its /health.
#
# The base images are made here, offline of any registry: the runtime one
# with mmdebstrap from Debian's packages (bookworm, as debian:bookworm-slim),
# the build one the same plus gcc, libc6-dev and the Rust toolchain
# this machine builds with (rustc and cargo, bin/ and lib/ only). They are
# passed to the Dockerfiles as RUST_IMAGE and RUNTIME_IMAGE and kept between
# runs (rebuilt when the toolchain changes). The crates come from the
# machine's cargo registry, copied once into the build's cache mount.
# Knob: IMAGES ("gateway main-service aura-sim").
set -euo pipefail
cd "$(dirname "$0")/../.."
. scripts/lib.sh

IMAGES=${IMAGES:-gateway main-service aura-sim}
export STORAGE_DRIVER=vfs BUILDAH_ISOLATION=chroot
command -v buildah >/dev/null 2>&1 || apt_install buildah
command -v mmdebstrap >/dev/null 2>&1 || apt_install mmdebstrap
require_rust
require_curl
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if ! buildah info >/dev/null 2>"${TMPDIR:-/tmp}/buildah-info.err"; then
  echo "image-check: buildah does not work here:"; cat "${TMPDIR:-/tmp}/buildah-info.err"; exit 1
fi

work=$(mktemp -d)
ctrs=()
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for ctr in "${ctrs[@]}"; do buildah rm "$ctr" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# base NAME PACKAGES: a bookworm minbase image with PACKAGES, imported as
# localhost/dwp-base/NAME unless it exists; prints the container to add to.
import_rootfs() {
  local name=$1 packages=$2 ctr
  echo "== base image $name: mmdebstrap bookworm ($packages)" >&2
  mmdebstrap --quiet --variant=minbase --include="$packages" bookworm "$work/$name.tar" "$mirror" >&2
  ctr=$(buildah from scratch)
  buildah add --quiet "$ctr" "$work/$name.tar" / >/dev/null
  rm -f "$work/$name.tar"
  echo "$ctr"
}

started=$SECONDS
runtime=localhost/dwp-base/debian:bookworm-slim
if ! buildah inspect --type image "$runtime" >/dev/null 2>&1; then
  ctr=$(import_rootfs runtime ca-certificates,curl)
  buildah commit --quiet --rm "$ctr" "$runtime" >/dev/null
fi
toolchain=$(rustc --print sysroot)
version=$(rustc --version | awk '{print $2}')
rust=localhost/dwp-base/rust:$version-bookworm
if ! buildah inspect --type image "$rust" >/dev/null 2>&1; then
  # No make, as in the slim Rust images: the Dockerfiles' own install of it
  # (jemalloc's build needs it) is what gets tested.
  ctr=$(import_rootfs rust ca-certificates,gcc,libc6-dev)
  buildah copy --quiet "$ctr" "$toolchain/bin" /usr/local/rust/bin >/dev/null
  buildah copy --quiet "$ctr" "$toolchain/lib" /usr/local/rust/lib >/dev/null
  buildah config --env CARGO_HOME=/usr/local/cargo --env CARGO_NET_OFFLINE=true \
    --env PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
  buildah commit --quiet --rm "$ctr" "$rust" >/dev/null
fi
echo "== base images ready ($((SECONDS - started)) s): $rust, $runtime"

# The Dockerfiles' crate cache mount (id dwp-cargo-registry), filled from
# this machine's registry (after `cargo fetch`, so it holds every crate of
# Cargo.lock) so that the build needs no download; the build image says
# CARGO_NET_OFFLINE. Hard links, made afresh each run: an index file the
# host has rewritten since must not be seen in its old version. buildah
# keeps cache mounts in $TMPDIR/buildah-cache (1.28, Debian 12) or
# buildah-cache-$UID.
cargo fetch --locked --quiet
registry=${CARGO_HOME:-$HOME/.cargo}/registry
for parent in buildah-cache "buildah-cache-$(id -u)"; do
  cache=${TMPDIR:-/var/tmp}/$parent/dwp-cargo-registry
  rm -rf "$cache/index" "$cache/cache"
  mkdir -p "$cache"
  cp -al "$registry/index" "$registry/cache" "$cache/" 2>/dev/null ||
    cp -a "$registry/index" "$registry/cache" "$cache/"
done

port=19480
for image in $IMAGES; do
  started=$SECONDS
  echo "== build deploy/docker/$image.Dockerfile"
  # docker format: OCI's has no HEALTHCHECK.
  buildah build --quiet --pull=never --layers --format docker \
    --build-arg RUST_IMAGE="$rust" --build-arg RUNTIME_IMAGE="$runtime" \
    -f "deploy/docker/$image.Dockerfile" -t "localhost/dwp/$image:check" . >/dev/null
  echo "built localhost/dwp/$image:check in $((SECONDS - started)) s"
done

# The images' binaries, started from the built filesystems (chroot, as the
# image's user 10001) against this machine's Redis and PostgreSQL.
# A private Redis: main-service would otherwise join the shared one's
# consumer groups and redeliver its pending signals.
redis_port=19490
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
pids+=("$!")
wait_for "redis-cli -p $redis_port ping" 10
secret=$(head -c 48 /dev/urandom | base64 | tr -d '/+=' | head -c 48)
db=image_check_$RANDOM$RANDOM
health_of() { case $1 in main-service) echo /main/health ;; *) echo /health ;; esac; }
for image in $IMAGES; do
  ctr=$(buildah from --pull=never "localhost/dwp/$image:check")
  ctrs+=("$ctr")
  root=$(buildah mount "$ctr")
  user=$(buildah inspect --format '{{.OCIv1.Config.User}}' "$ctr")
  [ "$user" = 10001 ] || { echo "FAIL $image runs as '$user', not 10001"; exit 1; }
  env=(PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin SERVER_HOST=127.0.0.1 SERVER_PORT="$port" ADMIN_PORT=off JWT_SECRET="$secret" RUST_LOG=warn
       REDIS_URL="redis://127.0.0.1:$redis_port")
  case $image in
    gateway) env+=(GATEWAY_RECORDER_ENABLED=false) ;;
    main-service)
      psql -w -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $db" >/dev/null
      env+=(DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" DB_AUTO_MIGRATE=false)
      env -i "${env[@]}" chroot --userspec=10001:10001 "$root" /usr/local/bin/migration up
      echo "main-service image: migration up applied the schema to $db"
      ;;
  esac
  env -i "${env[@]}" chroot --userspec=10001:10001 "$root" "/usr/local/bin/$image" >"$work/$image.log" 2>&1 &
  pids+=("$!")
  wait_for "curl -fsS http://127.0.0.1:$port$(health_of "$image")" 30 || { cat "$work/$image.log"; exit 1; }
  # The image's own HEALTHCHECK command, run inside it (its port is the
  # image's default; ours is another, so the URL's port is swapped).
  mapfile -t argv < <(buildah inspect "$ctr" | python3 -c '
import json, re, sys
test = json.load(sys.stdin)["Docker"]["config"]["Healthcheck"]["Test"]
assert test[0] == "CMD", f"HEALTHCHECK not in exec form: {test}"
print("\n".join(re.sub(r":[0-9]{4}/", f":{sys.argv[1]}/", a) for a in test[1:]))' "$port")
  answer=$(env -i "${env[@]}" chroot --userspec=10001:10001 "$root" "${argv[@]}")
  echo "$image image: /usr/local/bin/$image runs as $user; its HEALTHCHECK (${argv[*]}) answers: ${answer:0:100}"
  last=${pids[${#pids[@]}-1]}
  kill "$last"
  wait "$last" 2>/dev/null || true
  buildah umount "$ctr" >/dev/null
  port=$((port + 1))
done
[ -n "$(psql -w -h 127.0.0.1 -U postgres -Atc "SELECT 1 FROM pg_database WHERE datname = '$db'")" ] &&
  psql -w -q -h 127.0.0.1 -U postgres -c "DROP DATABASE $db" >/dev/null
echo "image-check: every image built and answered /health"
