#!/usr/bin/env bash
# Build the deskwatch SD card image with Raspberry Pi's pi-gen (Docker build).
#   image-build/build-image.sh [PI_GEN_DIR]
# Needs Docker and ~20 GB; the image lands in PI_GEN_DIR/deploy/.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
PI_GEN=${1:-$HERE/.pi-gen}
if [ ! -d "$PI_GEN" ]; then
  git clone --depth 1 --branch arm64 https://github.com/RPi-Distro/pi-gen.git "$PI_GEN"
fi
# pi-gen copies stage directories into its container: give it a copy with the repo inside.
rm -rf "$PI_GEN/stage-deskwatch" "$PI_GEN/deskwatch-src"
mkdir -p "$PI_GEN/deskwatch-src"
tar -C "$HERE/.." --exclude=.venv --exclude=.git --exclude=image-build/.pi-gen -cf - . | tar -C "$PI_GEN/deskwatch-src" -xf -
ln -s deskwatch-src/image-build/stage-deskwatch "$PI_GEN/stage-deskwatch"
touch "$PI_GEN/stage2/SKIP_IMAGES" 2>/dev/null || true
DESKWATCH_STAGE=stage-deskwatch envsubst < "$HERE/config.pi-gen" > "$PI_GEN/config"
cd "$PI_GEN" && ./build-docker.sh
