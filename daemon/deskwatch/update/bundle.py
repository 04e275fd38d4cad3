"""Signed update bundles: what the release pipeline writes and the device checks.

A bundle is an uncompressed tar with, in this order:

- ``manifest.json``: ``{"schema": "deskwatch.update.manifest/1", "version", "compatible",
  "created_at", "images": {"boot": {"file", "sha256", "bytes"}, "root": {...}}}``;
  ``sha256`` and ``bytes`` are of the *uncompressed* partition image;
- ``manifest.sig``: ``{"key_id", "signature"}`` (base64 Ed25519 over manifest.json's bytes);
- ``boot.vfat.gz`` and ``root.ext4.gz``: the slot's boot (FAT) and root (ext4) images.

The device holds only public keys (``/usr/share/deskwatch/keys/updates/*.pub``). The
manifest is verified before a byte is written; each image is hashed while it streams
onto the inactive slot, and a mismatch stops the update before the slot is offered to
the firmware.

A bundle is read through one open file from start to end (:func:`open_bundle`), never
reopened by name: a name can be given to another file between two reads (root downloads
into a directory the daemon's user owns), and then the manifest verified would not be
the one of the images written.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from deskwatch_contract.signing import SignatureRejected, sign_bytes, verify_bytes

from .slots import UpdateError

SCHEMA = "deskwatch.update.manifest/1"
KEYS_DIR = Path("/usr/share/deskwatch/keys/updates")
COMPATIBLE = "deskwatch-rpi-arm64"
IMAGES = ("boot", "root")
MEMBER = {"boot": "boot.vfat.gz", "root": "root.ext4.gz"}
CHUNK = 1024 * 1024
MAX_MANIFEST = 64 * 1024


@dataclass(frozen=True)
class Image:
    name: str
    file: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class Manifest:
    version: str
    compatible: str
    created_at: str
    images: dict[str, Image]
    key_id: str


def _sha256_file(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def write_bundle(
    out: Path, *, version: str, boot_image: Path, root_image: Path, private_pem: bytes, compatible: str = COMPATIBLE
) -> Manifest:
    """Write a signed bundle from two partition images (the release side)."""
    images = {}
    for name, path in (("boot", boot_image), ("root", root_image)):
        sha, size = _sha256_file(path)
        images[name] = {"file": MEMBER[name], "sha256": sha, "bytes": size}
    manifest = {
        "schema": SCHEMA,
        "version": version,
        "compatible": compatible,
        "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "images": images,
    }
    body = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    kid, signature = sign_bytes(body, private_pem)
    sig = json.dumps({"key_id": kid, "signature": base64.b64encode(signature).decode()}).encode()
    with tarfile.open(out, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in (("manifest.json", body), ("manifest.sig", sig)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        for name, path in (("boot", boot_image), ("root", root_image)):
            packed = out.with_name(out.name + f".{name}.gz")
            with open(path, "rb") as src, gzip.open(packed, "wb", compresslevel=6) as dst:
                while chunk := src.read(CHUNK):
                    dst.write(chunk)
            tar.add(packed, arcname=MEMBER[name])
            packed.unlink()
    return _manifest(manifest, kid)


def _manifest(data: Mapping[str, Any], kid: str) -> Manifest:
    try:
        if data.get("schema") != SCHEMA:
            raise UpdateError(f"bundle manifest schema is {data.get('schema')!r}, expected {SCHEMA!r}")
        images = {}
        for name in IMAGES:
            entry = data["images"][name]
            sha = str(entry["sha256"])
            if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
                raise UpdateError(f"bundle manifest: images.{name}.sha256 is not a sha256")
            images[name] = Image(name, str(entry["file"]), sha, int(entry["bytes"]))
        return Manifest(str(data["version"]), str(data["compatible"]), str(data.get("created_at", "")), images, kid)
    except (KeyError, TypeError, ValueError) as exc:
        raise UpdateError(f"bundle manifest is incomplete: {exc}") from None


def open_bundle(path: Path) -> BinaryIO:
    """``path`` opened once for reading; UpdateError if it is not a regular file (a FIFO
    would block the reader until someone writes to it; a device is not a bundle)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise UpdateError(f"{path} cannot be opened: {exc.strerror}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UpdateError(f"{path} is not a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _tar(bundle: BinaryIO) -> tarfile.TarFile:
    """The bundle as a tar from its first byte (the same open file each time)."""
    bundle.seek(0)
    return tarfile.open(fileobj=bundle, mode="r:")


def read_manifest(
    bundle: BinaryIO, keys: Mapping[str, Any], compatible: str = COMPATIBLE, *, path: str = "the bundle"
) -> Manifest:
    """The bundle's manifest, its signature verified; UpdateError otherwise (nothing written yet).
    ``path`` names the bundle in messages."""
    try:
        with _tar(bundle) as tar:
            members = {m.name: m for m in tar.getmembers()}
            missing = [n for n in ("manifest.json", "manifest.sig", *MEMBER.values()) if n not in members]
            if missing:
                raise UpdateError(f"{path} is not a deskwatch update bundle: missing {', '.join(missing)}")
            if members["manifest.json"].size > MAX_MANIFEST:
                raise UpdateError(f"{path}: manifest.json is larger than {MAX_MANIFEST} bytes")
            body = _read_member(tar, "manifest.json")
            sig = json.loads(_read_member(tar, "manifest.sig"))
    except (tarfile.TarError, OSError) as exc:
        raise UpdateError(f"{path} cannot be read as a bundle: {exc}") from None
    except ValueError:
        raise UpdateError(f"{path}: manifest.sig is not JSON") from None
    try:
        signature = base64.b64decode(str(sig.get("signature", "")), validate=True)
        verify_bytes(body, signature, str(sig.get("key_id", "")), keys)
    except (binascii.Error, AttributeError):
        raise UpdateError(f"{path}: manifest.sig is malformed") from None
    except SignatureRejected as exc:
        raise UpdateError(f"{path}: refused, {exc}") from None
    try:
        data = json.loads(body)
    except ValueError:
        raise UpdateError(f"{path}: manifest.json is not JSON") from None
    manifest = _manifest(data, str(sig["key_id"]))
    if manifest.compatible != compatible:
        raise UpdateError(f"{path} is for {manifest.compatible!r}, this device is {compatible!r}")
    return manifest


def _read_member(tar: tarfile.TarFile, name: str) -> bytes:
    fh = tar.extractfile(name)
    if fh is None:
        raise UpdateError(f"bundle member {name} is not a file")
    return fh.read()


def image_chunks(bundle: BinaryIO, image: Image) -> Iterator[bytes]:
    """The uncompressed image, chunk by chunk; UpdateError at the end if size or sha256 differ."""
    digest, size = hashlib.sha256(), 0
    try:
        with _tar(bundle) as tar:
            raw = tar.extractfile(image.file)
            if raw is None:
                raise UpdateError(f"bundle member {image.file} is not a file")
            stream = gzip.GzipFile(fileobj=raw)
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > image.bytes:
                    raise UpdateError(f"{image.file} is larger than the manifest's {image.bytes} bytes")
                digest.update(chunk)
                yield chunk
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise UpdateError(f"{image.file} is damaged: {exc}") from None
    if size != image.bytes or digest.hexdigest() != image.sha256:
        raise UpdateError(
            f"{image.file} does not match the signed manifest (sha256 {digest.hexdigest()[:12]}…, {size} bytes): "
            "download the bundle again"
        )


__all__ = [
    "Image",
    "Manifest",
    "SignatureRejected",
    "UpdateError",
    "image_chunks",
    "open_bundle",
    "read_manifest",
    "write_bundle",
]
