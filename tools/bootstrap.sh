#!/usr/bin/env bash
# Create or update .venv/ with everything deskwatch needs, system packages included.
# Idempotent: each step checks first and stays quiet when nothing has to change.
# Usage: tools/bootstrap.sh            (runtime + dev/test tools)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
log() { printf 'bootstrap: %s\n' "$*" >&2; }

# -- Debian packages -------------------------------------------------------------------
# make: runs the README's two commands (a fresh Debian 12 has no make). python3-venv: Debian's
# python3 has no ensurepip without it, so `python3 -m venv` fails.
# mosquitto: the demo's and the tests' broker. libsystemd-dev + pkg-config: to build
# systemd-python (journald + sd_notify). The rest serve the tests of one area each:
#   desk companion: xvfb xdotool imagemagick x11-apps libxss1 tk faketime libfaketime;
#     python3-tk for its window (Debian's python3 has no tkinter without it)
#   collector: postgresql (started by the tests as a child process), chromium + driver
#   delivery: nats-server (the second MQTT engine the contract is tested against)
#   collector: rabbitmq-server (the 3-node broker cluster the collector is tested on)
#   power cuts: user-mode-linux (a Linux kernel run as a process, cut with SIGKILL)
#   appliance image: debootstrap, qemu-user-static + binfmt-support (an arm64 chroot);
#     the emulator boot: qemu-system-arm (qemu-system-aarch64), mtools + dosfstools (the FAT
#     partitions), e2fsprogs, fdisk (sfdisk), device-tree-compiler (the firmware's /chosen/bootloader)
APT_PACKAGES=(make python3-venv mosquitto mosquitto-clients libsystemd-dev pkg-config gcc python3-dev
              xvfb xdotool imagemagick x11-apps libxss1 tk python3-tk faketime libfaketime
              postgresql chromium chromium-driver nats-server rabbitmq-server
              debootstrap qemu-user-static binfmt-support
              qemu-system-arm mtools dosfstools e2fsprogs fdisk device-tree-compiler user-mode-linux)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    log "missing Debian packages: ${missing[*]} — run: sudo apt-get install ${missing[*]}"
    exit 1
  fi
  log "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts a system-wide mosquitto on 1883 when the package is installed; the
# project never uses it (tests and the demo start their own on a free port).

# -- Python ---------------------------------------------------------------------------
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  log "Python 3.11 or newer is needed as '$PYTHON' (set PYTHON=...)"
  exit 1
fi
# A venv made while python3-venv was missing has a python but no pip: make it again.
if ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
  log "creating $VENV"
  "$PYTHON" -m venv --clear "$VENV"
fi
PIP=(pip_quiet)
pip_quiet() {
  # This machine's pip config points at local wheel folders that may not exist; drop that noise.
  "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}

# Reinstall only when the declared dependencies changed. All four distributions go
# into the one development venv (editable); tools/ is not installed (the tests and the
# demo put it on sys.path).
stamp="$VENV/.deskwatch-deps"
want=$(cat setup.py contract/setup.py desk/setup.py collector/setup.py tools/requirements-dev.txt tools/bootstrap.sh \
       | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Python packages into $VENV (contract, appliance[litert,journald], desk, collector, dev tools)"
  "${PIP[@]}" install --upgrade "pip>=24" "setuptools<82" wheel
  "${PIP[@]}" install -e ./contract -e ".[litert,journald]" -e ./desk -e ./collector -r tools/requirements-dev.txt
  # See setup.py: face_recognition's metadata would compile dlib; dlib-bin provides it.
  "${PIP[@]}" install --no-deps "face_recognition==1.3.0"
  echo "$want" > "$stamp"
fi
