#!/usr/bin/env bash
# Build the sandbox server's container image with podman and no image registry (the path tested here).
#
#   sudo sandbox/build_image.sh              # -> localhost/mathfirst-sandbox:latest
#
# 1. installs podman, runc and debootstrap from Debian when missing (podman runs with `--runtime runc`: crun
#    fails on cgroup-v1 hosts like this one);
# 2. base image: a minimal Debian 12 rootfs from `debootstrap --variant=minbase bookworm` (mirror: the Debian
#    URI apt already uses here), imported with `podman import` as localhost/mathfirst-sandbox-base:bookworm;
#    built once, reused afterwards (MFSBX_REBUILD_BASE=1 rebuilds it);
# 3. the sandbox layer: sandbox/Dockerfile built FROM that base (build-arg BASE_IMAGE) on a small build context
#    (pyproject.toml, README.md, mathfirst_hpc/, sandbox/) plus the server's few Python wheels, downloaded here
#    with pip so that the build itself needs no PyPI (python3, bubblewrap, g++ come from Debian's mirror).
#
# Idempotent: a second run reuses the base image and podman's layer cache (seconds). Prints the time of each
# step. Settings: MFSBX_IMAGE, MFSBX_BASE_IMAGE, MFSBX_MIRROR, MFSBX_BUILD_CACHE (rootfs scratch folder and the
# logs of the last debootstrap and podman build).
# Run the result with mathfirst_hpc.sandbox.container (tests: pytest -m container) or by hand, see Dockerfile.
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"

image="${MFSBX_IMAGE:-localhost/mathfirst-sandbox:latest}"
base="${MFSBX_BASE_IMAGE:-localhost/mathfirst-sandbox-base:bookworm}"
cache="${MFSBX_BUILD_CACHE:-/var/tmp/mathfirst-sandbox-build}"
podman=(podman --runtime runc)

if [[ "$(id -u)" != 0 ]]; then
  echo "build_image.sh: must run as root (debootstrap, rootful podman)" >&2
  exit 2
fi

missing=()
command -v podman >/dev/null || missing+=(podman)
command -v runc >/dev/null || missing+=(runc)
command -v debootstrap >/dev/null || missing+=(debootstrap)
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update >/dev/null && apt-get -o DPkg::Lock::Timeout=600 install -y --no-install-recommends \
           "${missing[@]}" >/dev/null; }
  echo "installed: ${missing[*]}"
fi

debian_mirror() {
  # The first Debian archive URI apt uses (deb822 .sources or one-line .list), security archives excluded.
  local uri
  uri="$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
         | grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -n1 | tr -d ' ' || true)"
  echo "${uri:-http://deb.debian.org/debian}"
}

seconds_since() { echo $(( $(date +%s) - $1 )); }

# --- 2. base image ----------------------------------------------------------------------------------------------
if [[ "${MFSBX_REBUILD_BASE:-0}" == 1 ]] || ! "${podman[@]}" image exists "$base"; then
  mirror="${MFSBX_MIRROR:-$(debian_mirror)}"
  mkdir -p "$cache"
  rootfs="$cache/rootfs"
  rm -rf "$rootfs"
  t0=$(date +%s)
  echo "debootstrap --variant=minbase bookworm from $mirror ..."
  debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -n 20 "$cache/debootstrap.log" >&2; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
  echo "debootstrap: $(seconds_since "$t0") s"
  t0=$(date +%s)
  tar -C "$rootfs" -c . | "${podman[@]}" import --quiet --message "debootstrap minbase bookworm ($mirror)" - "$base" >/dev/null
  rm -rf "$rootfs"
  echo "podman import: $(seconds_since "$t0") s -> $base"
else
  echo "base image $base exists (MFSBX_REBUILD_BASE=1 rebuilds it)"
fi

# --- 3. the sandbox layer ---------------------------------------------------------------------------------------
mkdir -p "$cache"
context="$(mktemp -d /var/tmp/mfsbx-context.XXXXXX)"
trap 'rm -rf "$context"' EXIT
cp pyproject.toml README.md "$context/"
tar -C "$repo" --exclude=__pycache__ --exclude='*.pyc' --exclude=sandbox/wheels -c mathfirst_hpc sandbox \
  | tar -C "$context" -x
pip_python=python3
[[ -x "$repo/.venv/bin/python" ]] && pip_python="$repo/.venv/bin/python"
t0=$(date +%s)
"$pip_python" -m pip download -q -d "$context/sandbox/wheels" --only-binary=:all: \
  "aiohttp>=3.9" "click>=8.1" "pyyaml>=6.0" "filelock>=3.12" "setuptools>=68" wheel 2>&1 \
  | { grep -v "^WARNING: Location" || true; } >&2
echo "wheels: $(seconds_since "$t0") s ($(ls "$context/sandbox/wheels" | wc -l) files)"
t0=$(date +%s)
# --network host: the build's apt-get reaches the Debian mirror the way this host does.
"${podman[@]}" build --network host --build-arg BASE_IMAGE="$base" -f "$context/sandbox/Dockerfile" -t "$image" \
  "$context" >"$cache/build.log" 2>&1 || { tail -n 30 "$cache/build.log" >&2; exit 1; }
echo "podman build: $(seconds_since "$t0") s -> $image ($("${podman[@]}" image inspect --format '{{.Size}}' "$image" \
  | awk '{printf "%.0f MB", $1 / 1e6}'))"
