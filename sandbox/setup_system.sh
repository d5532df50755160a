#!/usr/bin/env bash
# Prepare a Debian/Ubuntu host (or container image) for the code-execution sandbox. Idempotent.
#   - installs bubblewrap (per-execution isolation), g++ (C++ jobs) and util-linux's prlimit when missing
#   - creates one unprivileged, login-less user per sandbox worker: mfsbx0 .. mfsbx{N-1}
#     (distinct uids so per-uid process limits never collide and sandboxed code never runs as root)
#   - reports whether unprivileged user namespaces work (bwrap needs them unless it is installed setuid)
# Usage: sudo sandbox/setup_system.sh [N_USERS]      (default 16; MFSBX_PREFIX overrides the name prefix;
#        MFSBX_SKIP_PROBE=1 skips the final bwrap check, e.g. in an image build where namespaces are off)
set -euo pipefail

n_users="${1:-16}"
prefix="${MFSBX_PREFIX:-mfsbx}"
first_uid="${MFSBX_FIRST_UID:-61000}"   # a fixed range, so container images and hosts agree on the uids

if [[ "$(id -u)" != 0 ]]; then
  echo "setup_system.sh: must run as root (it installs packages and adds users)" >&2
  exit 2
fi

missing=()
command -v bwrap >/dev/null || missing+=(bubblewrap)
command -v g++ >/dev/null || missing+=(g++)
command -v prlimit >/dev/null || missing+=(util-linux)
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 \
    || { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
  echo "installed: ${missing[*]}"
fi

if ! getent group "$prefix" >/dev/null; then
  groupadd --system --gid "$first_uid" "$prefix" 2>/dev/null || groupadd --system "$prefix"
fi
gid="$(getent group "$prefix" | cut -d: -f3)"
created=0
for ((i = 0; i < n_users; i++)); do
  name="${prefix}${i}"
  if ! getent passwd "$name" >/dev/null; then
    uid=$((first_uid + i))
    getent passwd "$uid" >/dev/null && uid=""   # taken: let useradd pick one
    useradd --no-log-init ${uid:+--uid "$uid"} --gid "$gid" --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin --comment "mathfirst-hpc sandbox worker $i" "$name"
    created=$((created + 1))
  fi
done
echo "sandbox users: ${prefix}0..${prefix}$((n_users - 1)) ($created created)"

# bwrap as an unprivileged user needs user namespaces (or a setuid bwrap).
if [[ "${MFSBX_SKIP_PROBE:-0}" == 1 ]]; then
  exit 0
fi
if su -s /bin/sh "${prefix}0" -c 'bwrap --unshare-all --ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/lib /lib --symlink usr/lib64 /lib64 --proc /proc --dev /dev /bin/true' 2>/dev/null; then
  echo "bubblewrap works as ${prefix}0 (user namespaces available)"
else
  echo "WARNING: bwrap failed as ${prefix}0: enable unprivileged user namespaces" \
       "(sysctl kernel.unprivileged_userns_clone=1 / user.max_user_namespaces>0) or install bwrap setuid" >&2
  exit 1
fi
