#!/bin/bash -e
# pi-gen sub-stage: runs on the build host with ROOTFS_DIR set, after 00-packages were
# installed in the chroot. Everything else is the same install layer CI tests.
REPO="$(cd -P "$(dirname "${BASH_SOURCE[0]}")" && cd ../../.. && pwd)"
# picamera2 and libcamera come from Raspberry Pi's apt repository (00-packages) and are
# seen through the venv's system site packages; pip adds the TFLite runtime and the rest.
DESKWATCH_EXTRAS="${DESKWATCH_EXTRAS:-litert}" "${REPO}/image-build/install-layer.sh" "${ROOTFS_DIR}"

# Read-only friendly: nothing of ours writes outside /var/lib/deskwatch at runtime, so the
# image can use raspi-config's overlay file system with /var/lib/deskwatch on a data
# partition. Keep swap off the SD card.
on_chroot <<CHROOT
systemctl disable dphys-swapfile.service 2>/dev/null || true
CHROOT
