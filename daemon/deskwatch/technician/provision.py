"""Provisioning from a bundle on the boot partition: validate everything, then apply atomically.

A bundle is a directory (``/boot/firmware/deskwatch/`` on the SD card) with

- ``bundle.yaml``: the device's config (same keys as ``config.yaml``: device, mqtt,
  policy, ...); the TLS file paths may be left out, they are filled in;
- ``device.crt`` + ``device.key``: the client certificate (CN = ``{device.site}/{device.id}``,
  see :mod:`deskwatch_contract.access`) and its key;
- ``ca.crt`` (optional): the CA of the broker's certificate (else the system trust store).

:func:`provision` checks all of it before touching anything: the YAML against the
config schema, the certificates parse, the key matches the certificate, the CN names
this device in this site. Then it builds the new ``/etc/deskwatch`` next to the old one
and swaps the directories with ``rename(2)``: either the old configuration or the
complete new one is in place, never a mix. Files the new config names inside the old
directory that the bundle does not bring (a broker password put there by hand, which
never travels on the card) are carried over into the new one; the config is checked as
installed, and the old directory comes back if that check fails. Only then are the
secrets deleted from the FAT partition.

The bundle comes from a card anyone may have written, and this runs as root. So every
file is opened without following symbolic links and must be a regular file of
bounded size (:data:`LIMITS`); what is validated is the bytes read once into memory,
never the path again; the key is overwritten before deletion only if it is still the
regular file that was read; and the result file is written beside the bundle and
renamed into place, so a link planted there cannot redirect root's write.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import pwd
import shutil
import ssl
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml

from deskwatch.config import Config, ConfigError, load_config, load_config_text
from deskwatch.jobs.ledger import NAME as JOBS_RUN  # root's record of the jobs run, beside the config
from deskwatch.system.files import fill, fsync_dir, write_atomically
from deskwatch.technician.service_user import SERVICE_USER
from deskwatch_contract.configfile import is_section, section_fields

log = logging.getLogger(__name__)
T = TypeVar("T")

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


def check_certificates(files: dict[str, bytes], site: str | None, device_id: str | None) -> tuple[list[str], list[str]]:
    """(problems, notes) for the certificate files read from the bundle (name -> bytes)."""
    problems: list[str] = []
    notes: list[str] = []
    for name in (CERT, KEY):
        if name not in files:
            problems.append(f"{name} is missing from the bundle (the device's client certificate and key)")
    with tempfile.TemporaryDirectory(prefix="deskwatch-bundle-") as tmp:  # 0700: the key stays private
        paths = {}
        for name, data in files.items():
            paths[name] = Path(tmp) / name
            _write(paths[name], data, 0o600, None)
        if CA in paths:
            try:
                ssl.create_default_context(cafile=str(paths[CA]))
                notes.append(f"broker CA: {_subject_cn(_decode_cert(paths[CA]))}")
            except (ssl.SSLError, OSError, ValueError) as exc:
                problems.append(f"{CA} is not a PEM certificate: {exc}")
        if problems:
            return problems, notes
        try:
            info = _decode_cert(paths[CERT])
        except (ssl.SSLError, OSError, ValueError) as exc:
            return [f"{CERT} is not a PEM certificate: {exc}"], notes
        cn = _subject_cn(info)
        if site is not None and device_id is not None:
            want = f"{site}/{device_id}"
            if cn != want:
                problems.append(
                    f"{CERT} is for CN={cn!r} but bundle.yaml says device {want!r} (site/id): issue the device's "
                    f"certificate with 'deskwatch-ca issue CA device {site} {device_id}'"
                )
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
            # A password callback, so that OpenSSL never prompts: on first boot nobody is at
            # a terminal, and the daemon could not type a passphrase at every start either.
            ctx.load_cert_chain(str(paths[CERT]), str(paths[KEY]), password=_no_passphrase)
        except _Encrypted:
            # Not "-out device.key": openssl truncates the output before reading the input.
            problems.append(
                f"{KEY} is protected by a passphrase, which the device cannot type: export it without one "
                f"(openssl pkey -in {KEY} -out device-nopass.key, then rename device-nopass.key to {KEY})"
            )
        except ssl.SSLError as exc:
            reason = "the key does not belong to the certificate" if "mismatch" in str(exc).lower() else str(exc)
            problems.append(f"{KEY}: {reason}")
        except OSError as exc:
            problems.append(f"{KEY} cannot be read: {exc}")
    return problems, notes


class _Encrypted(Exception):
    """The key asked for a passphrase."""


def _no_passphrase() -> bytes:
    raise _Encrypted


# Largest file each bundle entry may be: a certificate is ~1 KB, a CA bundle a few.
LIMITS = {BUNDLE_FILE: 64 * 1024, CERT: 16 * 1024, KEY: 16 * 1024, CA: 256 * 1024}


def read_bundle_file(directory: Path, name: str) -> bytes | None:
    """The bytes of ``directory/name`` if it is a regular file within its size limit;
    None if it does not exist; BundleError naming the problem otherwise. Never follows a link."""
    path = directory / name
    limit = LIMITS[name]
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise BundleError([f"{name} is a symbolic link: put the file itself in the bundle"]) from None
        raise BundleError([f"{name} cannot be read: {exc.strerror or exc}"]) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BundleError([f"{name} is not a regular file (a directory, device or pipe): refused"])
        if st.st_size > limit:
            raise BundleError([f"{name} is {st.st_size} bytes; at most {limit} are accepted"])
        chunks, total = [], 0
        while total <= limit:
            chunk = os.read(fd, limit + 1 - total)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > limit:
            raise BundleError([f"{name} is more than {limit} bytes; refused"])
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_bundle(directory: Path, etc_dir: Path) -> Bundle:
    """Everything in the bundle, checked; raises BundleError listing every problem.
    ``etc_dir`` is where config.yaml will be: relative paths in bundle.yaml are read from there."""
    try:
        if stat.S_ISLNK(os.lstat(directory).st_mode):
            raise BundleError([f"bundle directory {directory} is a symbolic link: refused"])
    except FileNotFoundError:
        raise BundleError([f"bundle directory {directory} does not exist"]) from None
    if not directory.is_dir():
        raise BundleError([f"bundle directory {directory} does not exist"])
    path = directory / BUNDLE_FILE
    problems: list[str] = []
    files: dict[str, bytes] = {}
    raw: bytes | None = None
    for name in (BUNDLE_FILE, CERT, KEY, CA):
        try:
            content = read_bundle_file(directory, name)
        except BundleError as exc:
            problems += exc.problems
            continue
        if content is None:
            continue
        if name == BUNDLE_FILE:
            raw = content
        else:
            files[name] = content
    if raw is None and not any(BUNDLE_FILE in p for p in problems):
        if (directory / (BUNDLE_FILE + APPLIED_SUFFIX)).exists():
            raise BundleError(
                [
                    f"{path} is missing: this bundle was already applied ({BUNDLE_FILE}{APPLIED_SUFFIX}); "
                    "to provision again, put a new bundle.yaml, device.crt and device.key there"
                ]
            )
        raise BundleError([f"{path} is missing", *problems])
    if raw is None:
        raise BundleError(problems)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BundleError([*problems, f"{path} cannot be read: {exc}"]) from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise BundleError([*problems, f"{path}: YAML syntax error: {exc}"]) from None
    if not isinstance(data, dict):
        raise BundleError([*problems, f"{path} must be a mapping (device:, mqtt:, ...)"])
    device = data.get("device") if isinstance(data.get("device"), dict) else {}
    site = device.get("site") if isinstance(device, dict) else None
    device_id = device.get("id") if isinstance(device, dict) else None
    if not any(n in p for p in problems for n in (CERT, KEY, CA)):
        cert_problems, notes = check_certificates(
            files, str(site) if site is not None else None, str(device_id) if device_id is not None else None
        )
        problems += cert_problems
    else:
        notes = []
    problems += config_problems(text, etc_dir)
    if problems:
        raise BundleError(problems)
    return Bundle(directory, data, files, notes)


TLS_PATH_KEYS = ("mqtt.tls.cert_file", "mqtt.tls.key_file", "mqtt.tls.ca_file")


def config_problems(text: str, etc_dir: Path) -> list[str]:
    """Schema problems of bundle.yaml, with their lines; the TLS file paths are filled in
    by provisioning and checked with the staged files, so they are not judged here. Relative
    paths are judged from ``etc_dir``, where the daemon will read config.yaml."""
    try:
        load_config_text(text, str(etc_dir / "config.yaml"))
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
def _service_ids(user: str = SERVICE_USER) -> tuple[int, int] | None:
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


def _write(path: Path, content: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    fill(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode), content, mode, owner)


PathMapper = Callable[[str, str, str], str]


def map_path_settings(
    data: dict[str, Any], fn: PathMapper, cls: type | None = None, prefix: str = ""
) -> dict[str, Any]:
    """A copy of the config mapping with every file or directory setting's value replaced
    by ``fn(key, kind, value)``; the schema says which settings are paths (``setting(path=...)``)."""
    out = dict(data)
    for f, tp in section_fields(cls or Config):
        if f.name not in out:
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = out[f.name]
        inner = next((a for a in getattr(tp, "__args__", (tp,)) if a is not type(None)), tp)
        if is_section(inner) and isinstance(value, dict):
            out[f.name] = map_path_settings(value, fn, inner, key)
        elif f.metadata.get("path") and isinstance(value, str):
            out[f.name] = fn(key, f.metadata["path"], value)
    return out


def _inside(etc_dir: Path, value: str) -> Path | None:
    """``value`` (absolute, or relative to config.yaml as the daemon reads it) relative to
    ``etc_dir`` if it lies inside it, else None."""
    rel = os.path.relpath(os.path.normpath(etc_dir / value), etc_dir)  # an absolute value replaces etc_dir
    return None if rel == ".." or rel.startswith("../") else Path(rel)


def carry_over(data: dict[str, Any], etc_dir: Path, staging: Path) -> list[str]:
    """Copy into ``staging`` the files the new config names inside ``etc_dir`` that the bundle
    did not bring, since the swap removes the old directory; problems for what cannot be carried.

    The broker password, say, is put in /etc/deskwatch by hand and never travels on the card:
    a new bundle naming it expects to find it there afterwards. Directories are not carried
    (state_dir there would be lost with every provisioning): such settings are refused."""
    problems: list[str] = []

    def visit(key: str, kind: str, value: str) -> str:
        rel = None if key in TLS_PATH_KEYS else _inside(etc_dir, value)
        if rel is None:
            return value
        if kind != "file" or rel == Path("."):
            problems.append(
                f"{key} = {value} is inside {etc_dir}, which provisioning replaces with the bundle's files "
                f"(only files are carried over): move it out of {etc_dir}"
            )
        elif not os.path.lexists(staging / rel):
            try:
                _copy_old(etc_dir, staging, rel)
            except OSError as exc:
                problems.append(f"{key}: cannot carry {etc_dir / rel} over into the new configuration: {exc}")
        return value

    map_path_settings(data, visit)
    return problems


def _copy_old(etc_dir: Path, staging: Path, rel: Path) -> None:
    """``etc_dir/rel`` into ``staging/rel`` with its mode and owner (and its directories'); a
    link is copied as the link. Nothing there: nothing copied, the config check says so."""
    source = etc_dir / rel
    try:
        st = os.lstat(source)
    except FileNotFoundError:
        return
    for part in reversed(rel.parents[:-1]):  # the directories between, outermost first
        if not (staging / part).is_dir():
            dst = os.lstat(etc_dir / part)
            os.mkdir(staging / part, stat.S_IMODE(dst.st_mode))
            os.chmod(staging / part, stat.S_IMODE(dst.st_mode))
            if os.geteuid() == 0:
                os.chown(staging / part, dst.st_uid, dst.st_gid)
    if stat.S_ISLNK(st.st_mode):
        os.symlink(os.readlink(source), staging / rel)
        return
    with open(os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC), "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        content = f.read()
    _write(staging / rel, content, stat.S_IMODE(st.st_mode), (st.st_uid, st.st_gid))
    log.info("provision: kept %s from the old configuration", etc_dir / rel)


def stage(bundle: Bundle, etc_dir: Path, service_user: str = SERVICE_USER) -> tuple[Path, Config, str]:
    """Build the complete new config directory beside ``etc_dir`` and validate it there."""
    etc_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{etc_dir.name}.new-", dir=etc_dir.parent))
    try:
        ids = _service_ids(service_user)
        group_owner = (0, ids[1]) if ids and os.geteuid() == 0 else None
        staging.chmod(0o750)
        if group_owner:
            os.chown(staging, *group_owner)
        for name, content in bundle.files.items():
            secret = name == KEY
            _write(staging / name, content, 0o600 if secret else 0o644, ids if secret else None)
        has_ca = CA in bundle.files
        problems = carry_over(bundle.config_data, etc_dir, staging)
        if problems:
            raise BundleError(problems)
        try:  # root's record of the remote jobs already run: a new bundle must not let them run again
            _copy_old(etc_dir, staging, Path(JOBS_RUN))
        except OSError as exc:
            raise BundleError([f"cannot carry {etc_dir / JOBS_RUN} over into the new configuration: {exc}"]) from None

        # Validate against the staged files (their modes are final), every path inside
        # etc_dir read where it is staged (relative ones from staging's config.yaml); then
        # write the config with the paths it will have after the swap.
        def staged(_key: str, _kind: str, value: str) -> str:
            rel = _inside(etc_dir, value)
            return str(staging / rel) if rel is not None and os.path.isabs(value) else value

        try:
            cfg = load_config_text(
                yaml.safe_dump(map_path_settings(config_for(bundle.config_data, staging, has_ca), staged)),
                str(staging / "config.yaml"),
            )
        except ConfigError as exc:
            problems = [i.format(BUNDLE_FILE).replace(str(staging), str(etc_dir)) for i in exc.issues]
            raise BundleError(problems) from None
        text = render_config(config_for(bundle.config_data, etc_dir, has_ca), bundle.directory)
        _write(staging / "config.yaml", text.encode(), 0o640, group_owner)
        fsync_dir(staging)
        return staging, cfg, text
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def swap_in(staging: Path, etc_dir: Path, check: Callable[[], T]) -> T:
    """Replace ``etc_dir`` by ``staging`` with renames and return ``check()`` run on the result.

    The old directory is removed only once ``check`` passed: if it raises, the old one is
    renamed back (the new one is deleted) and the exception goes on, so a failed install
    leaves the device as it was."""
    old: Path | None = None
    if etc_dir.exists():
        old = etc_dir.parent / f".{etc_dir.name}.old-{int(time.time())}-{os.getpid()}"
        os.rename(etc_dir, old)
    try:
        os.rename(staging, etc_dir)
    except OSError:
        if old is not None:
            os.rename(old, etc_dir)
        raise
    try:
        result = check()
    except BaseException:
        failed = etc_dir.parent / f".{etc_dir.name}.failed-{os.getpid()}"
        os.rename(etc_dir, failed)
        if old is not None:
            os.rename(old, etc_dir)
        fsync_dir(etc_dir.parent)
        shutil.rmtree(failed, ignore_errors=True)
        raise
    fsync_dir(etc_dir.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return result


def scrub_bundle(directory: Path, key_read: bytes | None = None) -> list[str]:
    """Delete the secrets from the bundle (overwrite the key first: best effort on FAT) and
    mark it applied, so the first-boot unit does not run again.

    The key is overwritten only if it is still a regular file with one link holding the
    bytes that were installed: never through a link, never someone else's file."""
    removed = []
    for name in (KEY, CERT, CA):
        f = directory / name
        try:
            st = os.lstat(f)
        except FileNotFoundError:
            continue
        if name == KEY and stat.S_ISREG(st.st_mode):
            _overwrite_key(f, key_read)
        f.unlink()
        removed.append(name)
    bundle = directory / BUNDLE_FILE
    if bundle.exists():
        os.replace(bundle, directory / (BUNDLE_FILE + APPLIED_SUFFIX))
    with contextlib.suppress(OSError):
        fsync_dir(directory)
    return removed


def _overwrite_key(path: Path, expected: bytes | None) -> None:
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        log.warning("could not overwrite %s before deleting it: %s", path, exc)
        return
    try:
        st = os.fstat(fd)
        same = expected is None or (st.st_size == len(expected) and os.pread(fd, len(expected) + 1, 0) == expected)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1 or not same:
            log.warning("%s changed since it was read (or has other links): deleted without overwriting", path)
            return
        os.pwrite(fd, b"\0" * st.st_size, 0)
        os.fsync(fd)
    except OSError as exc:
        log.warning("could not overwrite %s before deleting it: %s", path, exc)
    finally:
        os.close(fd)


def provision(bundle_dir: Path, config_path: Path, *, service_user: str = SERVICE_USER) -> Applied:
    """Validate the bundle, apply it, scrub it; raises BundleError with nothing changed."""
    etc_dir = config_path.parent
    bundle = read_bundle(bundle_dir, etc_dir)
    staging, _cfg, _text = stage(bundle, etc_dir, service_user)
    try:
        # What the daemon will read, paths and modes as installed; else the old config is back.
        cfg = swap_in(staging, etc_dir, lambda: load_config(config_path))
    except ConfigError as exc:
        raise BundleError(
            [f"{BUNDLE_FILE}: as installed in {etc_dir}: {i.format(str(config_path))}" for i in exc.issues]
        ) from None
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise BundleError([f"cannot install {etc_dir}: {exc}"]) from None
    removed = scrub_bundle(bundle_dir, bundle.files.get(KEY))
    for note in bundle.notes:
        log.info("provision: %s", note)
    return Applied(cfg, config_path, etc_dir, removed)


def write_result(bundle_dir: Path, text: str) -> None:
    """The technician's copy of the outcome on the boot partition (never fatal).

    Written to a new file beside it and renamed over ``provision-result.txt``: whatever
    sits at that name (a link to /etc/shadow, say) is replaced, never written through."""
    try:
        if stat.S_ISLNK(os.lstat(bundle_dir).st_mode):
            log.warning("not writing %s: the bundle directory is a symbolic link", RESULT_FILE)
            return
        write_atomically(
            bundle_dir / RESULT_FILE,
            text.encode("utf-8")[: 256 * 1024],
            0o644,
            tmp=bundle_dir / f".{RESULT_FILE}.{os.getpid()}.new",
        )
    except OSError as exc:
        log.warning("could not write %s: %s", bundle_dir / RESULT_FILE, exc)
