"""Signed documents: Ed25519 over the exact bytes of a JSON document.

Job documents (collector → device) and update-bundle manifests (release → device)
travel as an envelope::

    {"schema": "...", "key_id": "1f0c…", "document": "<base64 of the JSON bytes>",
     "signature": "<base64 of the 64-byte Ed25519 signature>"}

The signature covers the document's bytes as sent, so nobody has to agree on a
canonical JSON form. A device holds only public keys (``*.pub``, PEM, one per file, in
a directory such as ``/usr/share/deskwatch/keys/jobs``); the private keys stay with
the release pipeline and the collector. ``key_id`` names the key (first 16 hex digits
of the sha256 of its raw 32 bytes) so a key can be rotated: ship the new public key,
then start signing with it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey, VerifyKey

from .jsonutil import JsonRejected, dumps_bytes, loads_object

MAX_DOCUMENT_BYTES = 256 * 1024

# An Ed25519 key has exactly one DER form each way (RFC 8410): these prefixes and its 32
# bytes. They are what ``openssl genpkey -algorithm ed25519`` / ``openssl pkey -pubout``
# write, and what generate_key() writes. Parsing them here keeps the appliance on
# libsodium (PyNaCl, which it needs for sealed evidence anyway) instead of also loading
# the ``cryptography`` package: 7.6 MB of resident memory in the daemon (issue 13).
_SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")  # SubjectPublicKeyInfo, id-Ed25519
_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")  # PKCS#8 v1, id-Ed25519
_KEY_BYTES = 32
_MAX_PEM_BYTES = 4096


class SignatureRejected(ValueError):
    """The envelope is malformed, names an unknown key, or its signature does not verify."""


def _pem(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).decode("ascii").replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]).encode("ascii")


def _der(pem: bytes, label: str) -> bytes:
    """The DER bytes of the one ``label`` block in ``pem``; ValueError saying what is wrong."""
    if len(pem) > _MAX_PEM_BYTES:
        raise ValueError(f"{len(pem)} bytes, more than a key file's {_MAX_PEM_BYTES}")
    try:
        text = pem.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("not text (a PEM file is ASCII)") from None
    begin, end = f"-----BEGIN {label}-----", f"-----END {label}-----"
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        found = ", ".join(sorted(set(_labels(text)))) or "no PEM block"
        raise ValueError(f"needs one '{begin}' block, found {found}")
    body = text[text.index(begin) + len(begin) : text.index(end)]
    try:
        return base64.b64decode("".join(body.split()), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"the {label} block is not base64") from None


def _labels(text: str) -> list[str]:
    return [line[11:-5] for line in text.splitlines() if line.startswith("-----BEGIN ") and line.endswith("-----")]


def _raw(der: bytes, prefix: bytes, what: str) -> bytes:
    if len(der) != len(prefix) + _KEY_BYTES or not der.startswith(prefix):
        raise ValueError(f"it holds another kind of {what} (make an Ed25519 one: openssl genpkey -algorithm ed25519)")
    return der[len(prefix) :]


def generate_key() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as (private PEM, public PEM), in openssl's own forms."""
    private = SigningKey.generate()
    return (
        _pem("PRIVATE KEY", _PKCS8_PREFIX + private.encode()),
        _pem("PUBLIC KEY", _SPKI_PREFIX + private.verify_key.encode()),
    )


def key_id(public: VerifyKey) -> str:
    return hashlib.sha256(public.encode()).hexdigest()[:16]


def load_public_key(pem: bytes, where: str = "key") -> VerifyKey:
    try:
        return VerifyKey(_raw(_der(pem, "PUBLIC KEY"), _SPKI_PREFIX, "public key"))
    except ValueError as exc:
        raise SignatureRejected(f"{where}: not a usable Ed25519 public key: {exc}") from None


def load_public_keys(directory: Path) -> dict[str, VerifyKey]:
    """Every ``*.pub`` in ``directory`` by key id (empty when the directory is missing)."""
    keys: dict[str, VerifyKey] = {}
    if not directory.is_dir():
        return keys
    for path in sorted(directory.glob("*.pub")):
        key = load_public_key(path.read_bytes(), str(path))
        keys[key_id(key)] = key
    return keys


def load_private_key(pem: bytes) -> SigningKey:
    """The signing key of an unencrypted PKCS#8 PEM; ValueError saying what is wrong."""
    try:
        return SigningKey(_raw(_der(pem, "PRIVATE KEY"), _PKCS8_PREFIX, "private key"))
    except ValueError as exc:
        raise ValueError(f"not a usable Ed25519 private key: {exc}") from None


def seal(document: Mapping[str, Any], private_pem: bytes, schema: str) -> dict[str, str]:
    """The envelope for ``document`` signed with ``private_pem``."""
    private = load_private_key(private_pem)
    body = dumps_bytes(dict(document))
    return {
        "schema": schema,
        "key_id": key_id(private.verify_key),
        "document": base64.b64encode(body).decode("ascii"),
        "signature": base64.b64encode(private.sign(body).signature).decode("ascii"),
    }


def open_envelope(
    envelope: Mapping[str, Any], keys: Mapping[str, VerifyKey], schema: str
) -> tuple[dict[str, Any], str]:
    """The verified document and the id of the key that signed it; SignatureRejected otherwise."""
    if envelope.get("schema") != schema:
        raise SignatureRejected(f"schema must be {schema!r}, got {str(envelope.get('schema'))[:60]!r}")
    raw_kid = envelope.get("key_id")
    kid = raw_kid if isinstance(raw_kid, str) else f"{raw_kid!r} (not a string)"  # never a key's id
    try:
        body = base64.b64decode(str(envelope.get("document", "")), validate=True)
        signature = base64.b64decode(str(envelope.get("signature", "")), validate=True)
    except (binascii.Error, ValueError):
        raise SignatureRejected("document and signature must be base64") from None
    if len(body) > MAX_DOCUMENT_BYTES:
        raise SignatureRejected(f"document is {len(body)} bytes, more than {MAX_DOCUMENT_BYTES}")
    verify_bytes(body, signature, kid, keys)
    try:
        document = loads_object(body, max_bytes=MAX_DOCUMENT_BYTES, max_depth=12)
    except JsonRejected as exc:
        raise SignatureRejected(f"signed document is not acceptable JSON: {exc}") from None
    return document, kid


def sign_bytes(data: bytes, private_pem: bytes) -> tuple[str, bytes]:
    """(key id, raw signature) over ``data`` (update manifests)."""
    private = load_private_key(private_pem)
    return key_id(private.verify_key), private.sign(data).signature


def verify_bytes(data: bytes, signature: bytes, kid: str, keys: Mapping[str, VerifyKey]) -> None:
    if kid not in keys:
        known = ", ".join(sorted(keys)) or "none installed"
        raise SignatureRejected(f"signed with unknown key {kid[:40]!r} (trusted: {known})")
    try:
        keys[kid].verify(data, signature)
    except (BadSignatureError, ValueError, TypeError):  # ValueError: not 64 bytes
        raise SignatureRejected(f"signature does not verify with key {kid}") from None
