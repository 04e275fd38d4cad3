#!/usr/bin/env bash
# Install deskwatch into a Debian/Raspberry Pi OS root filesystem.
#
#   image-build/install-layer.sh ROOTFS
#
# Used by the pi-gen stage (stage-deskwatch/01-run.sh) and by the CI test that runs it
# in a debootstrap chroot. The rootfs must already have the Debian packages listed in
# stage-deskwatch/00-packages (python3, python3-venv, python3-pip, python3-systemd,
# ca-certificates, systemd). What it does, idempotently:
#   - builds the appliance's two wheels on the host (pure Python: deskwatch and
#     deskwatch-contract; never the desk companion, the collector or the dev tools) and
#     installs them with their dependencies into /opt/deskwatch/venv inside the rootfs
#     (pip runs in the chroot, so the wheels match the rootfs's architecture; under
#     qemu-user for arm64),
#   - the models come with the wheel (into the venv's share/deskwatch/models),
#   - installs the units, sysusers.d and tmpfiles.d entries, creates the user and dirs,
#   - enables deskwatch.service and the first-boot deskwatch-provision.service,
#   - enables the camera in /boot/firmware/config.txt,
#   - keeps a read-only-friendly layout: code and models read-only under /opt and /usr,
#     bytecode compiled at build time, runtime writes only to /var/lib/deskwatch,
#     config and secrets only written by provisioning to /etc/deskwatch.
#
# Environment:
#   DESKWATCH_EXTRAS   pip extras (default "litert"; the Pi image adds picamera2 from apt)
#   DESKWATCH_PIP_EXTRA  more requirements for the venv (the Pi stage: simplejpeg>=1.8)
#   PIP_CERT           CA bundle pip in the chroot should trust (copied in; default: the
#                      host's /etc/ssl/certs/ca-certificates.crt when it exists)
#   PIP_CACHE_DIR      host directory bind-mounted as pip's cache (speeds up rebuilds)
#   PIP_INDEX_URL      passed on to pip in the chroot when set
set -euo pipefail

ROOTFS=${1:?usage: install-layer.sh ROOTFS}
ROOTFS=$(cd "$ROOTFS" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)
EXTRAS=${DESKWATCH_EXTRAS:-litert}
VENV=/opt/deskwatch/venv
HOST_PY=${HOST_PYTHON:-}
if [ -z "$HOST_PY" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then HOST_PY=$REPO/.venv/bin/python; else HOST_PY=python3; fi
fi
log() { printf 'install-layer: %s\n' "$*" >&2; }

[ "$(id -u)" -eq 0 ] || { log "must run as root (chroot, chown)"; exit 1; }
[ -x "$ROOTFS/usr/bin/python3" ] || { log "$ROOTFS has no /usr/bin/python3: install the packages in stage-deskwatch/00-packages first"; exit 1; }

# -- chroot plumbing ----------------------------------------------------------------------
MOUNTS=()
cleanup() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTS[$i]}" 2>/dev/null || true; done
  rm -rf "$ROOTFS/tmp/deskwatch-install"
}
trap cleanup EXIT
bind() {  # bind SRC DEST-inside-rootfs
  mkdir -p "$ROOTFS$2"
  mount --bind "$1" "$ROOTFS$2"
  MOUNTS+=("$ROOTFS$2")
}
mountpoint -q "$ROOTFS/proc" || { mkdir -p "$ROOTFS/proc"; mount -t proc proc "$ROOTFS/proc"; MOUNTS+=("$ROOTFS/proc"); }
mountpoint -q "$ROOTFS/dev" || bind /dev /dev
[ -s "$ROOTFS/etc/resolv.conf" ] || cp -L /etc/resolv.conf "$ROOTFS/etc/resolv.conf" 2>/dev/null || true

STAGE=/tmp/deskwatch-install
mkdir -p "$ROOTFS$STAGE/wheels"
CERT=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}
CHROOT_ENV=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
  PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=120 PYTHONDONTWRITEBYTECODE=1)
if [ -f "$CERT" ]; then
  cp "$CERT" "$ROOTFS$STAGE/ca.crt"
  CHROOT_ENV+=(PIP_CERT=$STAGE/ca.crt)
fi
[ -n "${PIP_INDEX_URL:-}" ] && CHROOT_ENV+=(PIP_INDEX_URL="$PIP_INDEX_URL")
if [ -n "${PIP_CACHE_DIR:-}" ]; then
  mkdir -p "$PIP_CACHE_DIR"
  bind "$PIP_CACHE_DIR" /var/cache/deskwatch-pip
  CHROOT_ENV+=(PIP_CACHE_DIR=/var/cache/deskwatch-pip)
else
  CHROOT_ENV+=(PIP_NO_CACHE_DIR=1)
fi
in_root() { chroot "$ROOTFS" "${CHROOT_ENV[@]}" "$@"; }

# -- the package ----------------------------------------------------------------------------
log "building the deskwatch and deskwatch-contract wheels"
BUILD=$(mktemp -d)
# One snapshot of the tree for the wheels, the models and the example config, so they agree.
# Only the appliance's parts are copied: the image cannot ship what is not in the snapshot.
cp -r "$REPO/setup.py" "$REPO/pyproject.toml" "$REPO/README.md" "$REPO/daemon" "$REPO/contract" "$REPO/models" \
  "$REPO/config.example.yaml" "$BUILD/" 2>/dev/null || true
find "$BUILD" \( -name '__pycache__' -o -name '*.egg-info' -o -name build \) -prune -exec rm -rf {} +
rm -f "$ROOTFS$STAGE"/wheels/*.whl
for dist in "$BUILD/contract" "$BUILD"; do
  if ! ( cd "$dist" && "$HOST_PY" -m pip wheel --no-deps --no-build-isolation -q -w "$ROOTFS$STAGE/wheels" . ) >"$BUILD.log" 2>&1; then
    cat "$BUILD.log" >&2; log "building the wheel in ${dist#"$BUILD"}/ failed"; exit 1
  fi
done
rm -f "$BUILD.log"
trap 'cleanup; rm -rf "$BUILD"' EXIT
WHEEL=$(cd "$ROOTFS$STAGE/wheels" && ls deskwatch-[0-9]*.whl | head -1)
CONTRACT=$(cd "$ROOTFS$STAGE/wheels" && ls deskwatch_contract-*.whl | head -1)

log "creating $VENV (system site packages: python3-systemd, and python3-picamera2 on the Pi)"
[ -x "$ROOTFS$VENV/bin/python" ] || in_root python3 -m venv --system-site-packages "$VENV"
log "installing deskwatch[$EXTRAS], deskwatch-contract and their dependencies (pip in the chroot)"
in_root "$VENV/bin/python" -m pip install -q "setuptools<82" wheel
in_root "$VENV/bin/python" -m pip install -q "$STAGE/wheels/$CONTRACT" "$STAGE/wheels/$WHEEL[$EXTRAS]"
if [ -n "${DESKWATCH_PIP_EXTRA:-}" ]; then
  # shellcheck disable=SC2086  # a list of requirement specifiers
  in_root "$VENV/bin/python" -m pip install -q $DESKWATCH_PIP_EXTRA
fi
# face_recognition's metadata asks for dlib (an 8-minute compile); dlib-bin provides it.
in_root "$VENV/bin/python" -m pip install -q --no-deps "face_recognition==1.3.0"
# pip wrote the bytecode at install time: nothing is compiled into /opt at run time.
ln -sfn "$VENV/bin/deskwatch" "$ROOTFS/usr/local/bin/deskwatch"

# -- models, docs, example config -----------------------------------------------------------------
# The models travel in the wheel (setup.py data_files): $VENV/share/deskwatch/models,
# found there by deskwatch.vision.runtime.default_models_dir().
install -d -m 0755 "$ROOTFS/opt/deskwatch" "$ROOTFS/usr/share/doc/deskwatch"
[ -f "$REPO/README.md" ] && install -m 0644 "$REPO/README.md" "$ROOTFS/opt/deskwatch/README.md"
install -m 0644 "$BUILD/config.example.yaml" "$ROOTFS/usr/share/doc/deskwatch/config.example.yaml"
[ -f "$REPO/hw-tests/README.md" ] && cp -r "$REPO/hw-tests" "$ROOTFS/opt/deskwatch/hw-tests"

# -- units, user, directories --------------------------------------------------------------------
UNITS=(deskwatch.service deskwatch-provision.service deskwatch-update-confirm.service deskwatch-jobs.path deskwatch-jobs.service)
for unit in "${UNITS[@]}"; do install -m 0644 "$REPO/systemd/$unit" "$ROOTFS/etc/systemd/system/"; done
install -D -m 0644 "$REPO/systemd/sysusers.d/deskwatch.conf" "$ROOTFS/usr/lib/sysusers.d/deskwatch.conf"
install -D -m 0644 "$REPO/systemd/tmpfiles.d/deskwatch.conf" "$ROOTFS/usr/lib/tmpfiles.d/deskwatch.conf"
install -D -m 0644 "$HERE/files/journald-deskwatch.conf" "$ROOTFS/etc/systemd/journald.conf.d/deskwatch.conf"
getent_video() { grep -q '^video:' "$ROOTFS/etc/group"; }
getent_video || { log "adding the video group"; in_root groupadd --system video; }
if [ -x "$ROOTFS/usr/bin/systemd-sysusers" ]; then
  in_root systemd-sysusers /usr/lib/sysusers.d/deskwatch.conf
else
  systemd-sysusers --root="$ROOTFS" "$ROOTFS/usr/lib/sysusers.d/deskwatch.conf"
fi
if [ -x "$ROOTFS/usr/bin/systemd-tmpfiles" ]; then
  in_root systemd-tmpfiles --create /usr/lib/tmpfiles.d/deskwatch.conf
else
  systemd-tmpfiles --create --root="$ROOTFS" "$ROOTFS/usr/lib/tmpfiles.d/deskwatch.conf"
fi
ENABLE=(deskwatch.service deskwatch-provision.service deskwatch-update-confirm.service deskwatch-jobs.path)
log "enabling ${ENABLE[*]}"
systemctl --root="$ROOTFS" enable "${ENABLE[@]}" >/dev/null 2>&1 || in_root systemctl enable "${ENABLE[@]}"

# -- trusted public keys (updates and remote jobs) ---------------------------------------------------
# The device holds public keys only: update bundles and job documents signed with any
# other key are refused. DESKWATCH_KEYS (default image-build/keys) has updates/*.pub and
# jobs/*.pub; an image built without them refuses every update and job, and says so.
KEYS=${DESKWATCH_KEYS:-$HERE/keys}
for kind in updates jobs; do
  install -d -m 0755 "$ROOTFS/usr/share/deskwatch/keys/$kind"
  found=0
  for pub in "$KEYS/$kind"/*.pub; do
    [ -f "$pub" ] || continue
    install -m 0644 "$pub" "$ROOTFS/usr/share/deskwatch/keys/$kind/"
    found=$((found + 1))
  done
  log "trusted $kind keys: $found (from $KEYS/$kind)"
done

# -- camera ---------------------------------------------------------------------------------------
CONFIG_TXT="$ROOTFS/boot/firmware/config.txt"
mkdir -p "$(dirname "$CONFIG_TXT")"
touch "$CONFIG_TXT"
if grep -qE '^\s*camera_auto_detect=' "$CONFIG_TXT"; then
  sed -i -E 's/^\s*camera_auto_detect=.*/camera_auto_detect=1/' "$CONFIG_TXT"
else
  printf '\n# deskwatch: detect the camera module (libcamera)\ncamera_auto_detect=1\n' >> "$CONFIG_TXT"
fi
install -d -m 0755 "$ROOTFS/boot/firmware/deskwatch"
install -m 0644 "$HERE/files/BUNDLE-README.txt" "$ROOTFS/boot/firmware/deskwatch/README.txt"

log "done: $(in_root "$VENV/bin/deskwatch" --version)"
