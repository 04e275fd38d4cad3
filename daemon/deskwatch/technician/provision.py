"""Provisioning from a bundle on the boot partition: validate everything, then apply atomically.

A bundle is a directory (``/boot/firmware/deskwatch/`` on the SD card) with

- ``bundle.yaml``: the device's config (same keys as ``config.yaml``: device, mqtt,
  policy, ...); the TLS file paths may be left out, they are filled in;
- ``device.crt`` + ``device.key``: the client certificate (CN = ``device.id``) and its key;
- ``ca.crt`` (optional): the CA of the broker's certificate (else the system trust store).

:func:`provision` checks all of it before touching anything: the YAML against the
config schema, the certificates parse, the key matches the certificate, the CN is the
device id. Then it builds the new ``/etc/deskwatch`` next to the old one and swaps the
directories with ``rename(2)``: either the old configuration or the complete new one
is in place, never a mix. Only then are the secrets deleted from the FAT partition.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import ssl
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from deskwatch.config import Config, ConfigError, load_config_text

log = logging.getLogger(__name__)

SERVICE_USER = "deskwatch"
BUNDLE_FILE = "bundle.yaml"
CERT, KEY, CA = "device.crt", "device.key", "ca.crt"
RESULT_FILE = "provision-result.txt"
APPLIED_SUFFIX = ".applied"


class BundleError(Exception):
    """The bundle cannot be applied; ``problems`` says every reason."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass
class Bundle:
    directory: Path
    config_data: dict[str, Any]
    files: dict[str, bytes]  # name -> content, for CERT, KEY and (optional) CA
    notes: list[str] = field(default_factory=list)


@dataclass
class Applied:
    config: Config
    config_path: Path
    etc_dir: Path
    removed_from_bundle: list[str]


# -- validation --------------------------------------------------------------------------------
def _decode_cert(path: Path) -> dict[str, Any]:
    # The ssl module's own PEM decoder: no extra dependency on the appliance.
    decoded: dict[str, Any] = ssl._ssl._test_decode_cert(str(path))  # type: ignore[attr-defined]
    return decoded


def _subject_cn(cert: dict[str, Any]) -> str | None:
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


def check_certificates(directory: Path, device_id: str | None) -> tuple[list[str], list[str]]:
    """(problems, notes) for the certificate files in ``directory``."""
    problems: list[str] = []
    notes: list[str] = []
    cert, key, ca = directory / CERT, directory / KEY, directory / CA
    for f in (cert, key):
        if not f.is_file():
            problems.append(f"{f.name} is missing from the bundle (the device's client certificate and key)")
    if ca.is_file():
        try:
            ssl.create_default_context(cafile=str(ca))
            info = _decode_cert(ca)
            notes.append(f"broker CA: {_subject_cn(info)}")
        except (ssl.SSLError, OSError, ValueError) as exc:
            problems.append(f"{CA} is not a PEM certificate: {exc}")
    if problems:
        return problems, notes
    try:
        info = _decode_cert(cert)
    except (ssl.SSLError, OSError, ValueError) as exc:
        return [f"{CERT} is not a PEM certificate: {exc}"], notes
    cn = _subject_cn(info)
    if device_id is not None and cn != device_id:
        problems.append(f"{CERT} is for CN={cn!r} but bundle.yaml says device.id {device_id!r}: they must match")
    try:
        not_after = datetime.strptime(info["notAfter"], "%b %d %H:%M:%S %Y %Z").replace(tzinfo=UTC)
        if not_after < datetime.now(UTC):
            problems.append(f"{CERT} expired on {not_after:%Y-%m-%d}: issue a new one")
        else:
            notes.append(f"device certificate CN={cn}, valid until {not_after:%Y-%m-%d}")
    except (KeyError, ValueError):
        pass
    try:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        reason = "the key does not belong to the certificate" if "mismatch" in str(exc).lower() else str(exc)
        problems.append(f"{KEY}: {reason}")
    except OSError as exc:
        problems.append(f"{KEY} cannot be read: {exc}")
    return problems, notes


def read_bundle(directory: Path) -> Bundle:
    """Everything in the bundle, checked; raises BundleError listing every problem."""
    problems: list[str] = []
    path = directory / BUNDLE_FILE
    if not directory.is_dir():
        raise BundleError([f"bundle directory {directory} does not exist"])
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if (directory / (BUNDLE_FILE + APPLIED_SUFFIX)).exists():
            raise BundleError(
                [
                    f"{path} is missing: this bundle was already applied ({BUNDLE_FILE}{APPLIED_SUFFIX}); "
                    "to provision again, put a new bundle.yaml, device.crt and device.key there"
                ]
            ) from None
        raise BundleError([f"{path} is missing"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BundleError([f"{path} cannot be read: {exc}"]) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise BundleError([f"{path}: YAML syntax error: {exc}"]) from None
    if not isinstance(data, dict):
        raise BundleError([f"{path} must be a mapping (device:, mqtt:, ...)"])
    device = data.get("device") if isinstance(data.get("device"), dict) else {}
    device_id = device.get("id") if isinstance(device, dict) else None
    cert_problems, notes = check_certificates(directory, str(device_id) if device_id is not None else None)
    problems += cert_problems
    problems += config_problems(text, path)
    files = {}
    for name in (CERT, KEY, CA):
        f = directory / name
        if f.is_file():
            files[name] = f.read_bytes()
    if problems:
        raise BundleError(problems)
    return Bundle(directory, data, files, notes)


TLS_PATH_KEYS = ("mqtt.tls.cert_file", "mqtt.tls.key_file", "mqtt.tls.ca_file")


def config_problems(text: str, path: Path) -> list[str]:
    """Schema problems of bundle.yaml, with their lines; the TLS file paths are filled in
    by provisioning and checked with the staged files, so they are not judged here."""
    try:
        load_config_text(text, str(path))
    except ConfigError as exc:
        return [i.format(BUNDLE_FILE) for i in exc.issues if i.key not in TLS_PATH_KEYS]
    return []


def config_for(data: dict[str, Any], etc_dir: Path, has_ca: bool) -> dict[str, Any]:
    """The bundle's config with the TLS paths pointing at ``etc_dir``."""
    out = dict(data)
    mqtt = dict(out.get("mqtt") or {})
    tls = dict(mqtt.get("tls") or {})
    tls["cert_file"] = str(etc_dir / CERT)
    tls["key_file"] = str(etc_dir / KEY)
    if has_ca:
        tls["ca_file"] = str(etc_dir / CA)
    elif tls.get("ca_file"):
        tls.pop("ca_file")  # a path on the technician's laptop means nothing here
    mqtt["tls"] = tls
    out["mqtt"] = mqtt
    return out


def render_config(data: dict[str, Any], bundle_dir: Path) -> str:
    head = (
        f"# Written by `deskwatch provision` from {bundle_dir / BUNDLE_FILE} on "
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC.\n"
        "# Check changes with: deskwatch check-config\n"
    )
    return head + yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


# -- applying ----------------------------------------------------------------------------------------
def _service_ids() -> tuple[int, int] | None:
    try:
        pw = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


def _write(path: Path, content: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, content)
        os.fchmod(fd, mode)
        if owner is not None and os.geteuid() == 0:
            os.fchown(fd, *owner)
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def stage(bundle: Bundle, etc_dir: Path) -> tuple[Path, Config, str]:
    """Build the complete new config directory beside ``etc_dir`` and validate it there."""
    etc_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{etc_dir.name}.new-", dir=etc_dir.parent))
    try:
        ids = _service_ids()
        group_owner = (0, ids[1]) if ids and os.geteuid() == 0 else None
        staging.chmod(0o750)
        if group_owner:
            os.chown(staging, *group_owner)
        for name, content in bundle.files.items():
            secret = name == KEY
            _write(staging / name, content, 0o600 if secret else 0o644, ids if secret else None)
        has_ca = CA in bundle.files
        # Validate against the staged files (their modes are final), then write the
        # config with the paths it will have after the swap.
        try:
            cfg = load_config_text(
                yaml.safe_dump(config_for(bundle.config_data, staging, has_ca)),
                str(bundle.directory / BUNDLE_FILE),
            )
        except ConfigError as exc:
            problems = [i.format(BUNDLE_FILE).replace(str(staging), str(etc_dir)) for i in exc.issues]
            raise BundleError(problems) from None
        text = render_config(config_for(bundle.config_data, etc_dir, has_ca), bundle.directory)
        _write(staging / "config.yaml", text.encode(), 0o640, group_owner)
        _fsync_dir(staging)
        return staging, cfg, text
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def swap_in(staging: Path, etc_dir: Path) -> None:
    """Replace ``etc_dir`` by ``staging`` with renames (the old one is removed after)."""
    old: Path | None = None
    if etc_dir.exists():
        old = etc_dir.parent / f".{etc_dir.name}.old-{int(time.time())}-{os.getpid()}"
        os.rename(etc_dir, old)
    os.rename(staging, etc_dir)
    _fsync_dir(etc_dir.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def scrub_bundle(directory: Path) -> list[str]:
    """Delete the secrets from the bundle (overwrite first: best effort on FAT) and
    mark it applied, so the first-boot unit does not run again."""
    removed = []
    for name in (KEY, CERT, CA):
        f = directory / name
        if not f.exists():
            continue
        if name == KEY:
            try:
                size = f.stat().st_size
                with open(f, "r+b") as fh:
                    fh.write(b"\0" * size)
                    fh.flush()
                    os.fsync(fh.fileno())
            except OSError as exc:
                log.warning("could not overwrite %s before deleting it: %s", f, exc)
        f.unlink()
        removed.append(name)
    bundle = directory / BUNDLE_FILE
    if bundle.exists():
        os.replace(bundle, directory / (BUNDLE_FILE + APPLIED_SUFFIX))
    with contextlib.suppress(OSError):
        _fsync_dir(directory)
    return removed


def provision(bundle_dir: Path, config_path: Path) -> Applied:
    """Validate the bundle, apply it, scrub it; raises BundleError with nothing changed."""
    etc_dir = config_path.parent
    bundle = read_bundle(bundle_dir)
    staging, _cfg, _text = stage(bundle, etc_dir)
    try:
        swap_in(staging, etc_dir)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise BundleError([f"cannot install {etc_dir}: {exc}"]) from None
    from deskwatch.config import load_config

    cfg = load_config(config_path)  # what the daemon will read, paths and modes as installed
    removed = scrub_bundle(bundle_dir)
    for note in bundle.notes:
        log.info("provision: %s", note)
    return Applied(cfg, config_path, etc_dir, removed)


def write_result(bundle_dir: Path, text: str) -> None:
    """The technician's copy of the outcome on the boot partition (never fatal)."""
    try:
        (bundle_dir / RESULT_FILE).write_text(text)
    except OSError as exc:
        log.warning("could not write %s: %s", bundle_dir / RESULT_FILE, exc)
