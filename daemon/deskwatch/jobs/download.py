"""Fetch a job's artifact and prove it is the one the signed document names (size and sha256)."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from deskwatch.system.files import create_new, remove, replace_within
from deskwatch_contract.jobs import Artifact

CHUNK = 256 * 1024


class DownloadFailed(Exception):
    """The artifact could not be fetched or is not the one the job names."""


def fetch(artifact: Artifact, dest: Path, *, timeout: float = 60.0) -> Path:
    """Download ``artifact`` to ``dest`` (via a temporary file beside it); DownloadFailed otherwise."""
    tmp = dest.with_name(dest.name + ".part")
    digest, size = hashlib.sha256(), 0
    try:
        # the directory may be the service user's: a link planted at the .part name is replaced, not followed
        with (
            urllib.request.urlopen(artifact.url, timeout=timeout) as response,
            os.fdopen(create_new(tmp, 0o644), "wb") as out,
        ):
            while chunk := response.read(CHUNK):
                size += len(chunk)
                if size > artifact.bytes:
                    raise DownloadFailed(f"{artifact.url} is larger than the {artifact.bytes} bytes the job names")
                digest.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
    except DownloadFailed:
        remove(tmp)
        raise
    except (urllib.error.URLError, OSError, ValueError) as exc:
        remove(tmp)
        raise DownloadFailed(f"cannot download {artifact.url}: {exc}") from None
    if size != artifact.bytes or digest.hexdigest() != artifact.sha256:
        remove(tmp)
        raise DownloadFailed(
            f"{artifact.url} is not the artifact the job names (sha256 {digest.hexdigest()[:12]}…, {size} bytes)"
        )
    replace_within(dest.parent, tmp.name, dest.name)
    return dest
