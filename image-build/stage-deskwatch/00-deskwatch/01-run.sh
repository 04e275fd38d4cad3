#!/bin/bash -e
# pi-gen sub-stage: runs on the build host with ROOTFS_DIR set, after 00-packages were
# installed in the chroot. Everything else is the same install layer CI tests.
REPO="$(cd -P "$(dirname "${BASH_SOURCE[0]}")" && cd ../../.. && pwd)"
# picamera2 and libcamera come from Raspberry Pi's apt repository (00-packages) and are
# seen through the venv's system site packages; pip adds the TFLite runtime and the rest.
# apt's python3-simplejpeg (imported by picamera2) is built against numpy 1 and fails to
# import beside the venv's numpy 2: the venv gets its own, numpy-2-built simplejpeg.
DESKWATCH_EXTRAS="${DESKWATCH_EXTRAS:-litert}" DESKWATCH_PIP_EXTRA="simplejpeg>=1.8" \
	"${REPO}/image-build/install-layer.sh" "${ROOTFS_DIR}"

# Read-only friendly: nothing of ours writes outside /var/lib/deskwatch at runtime, so the
# image can use raspi-config's overlay file system with /var/lib/deskwatch on a data
# partition. Keep swap off the SD card.
on_chroot <<CHROOT
systemctl disable dphys-swapfile.service 2>/dev/null || true
CHROOT
