# Shared shell helpers for the project's scripts. Source it; do not run it.

# Runs a command as root (directly when we are root, else through sudo).
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs Debian packages, refreshing the package index once if needed.
apt_install() {
  echo "==> installing $* (Debian packages)"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 || {
    as_root apt-get update -q >/dev/null
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
  }
}

# Waits up to $2 seconds (default 30) for the command in $1 to succeed.
wait_for() {
  local check=$1 limit=${2:-30} i
  for ((i = 0; i < limit * 10; i++)); do
    if eval "$check" >/dev/null 2>&1; then return 0; fi
    sleep 0.1
  done
  echo "timed out waiting for: $check" >&2
  return 1
}

# Fails with a clear message when the Rust toolchain is missing or too old.
require_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is not installed: install Rust 1.94 or newer (https://rustup.rs) and retry." >&2
    exit 1
  fi
}

# Installs curl when missing (the scripts use it for health checks).
require_curl() {
  command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates
}
