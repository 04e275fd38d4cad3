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

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .jsonutil import JsonRejected, dumps_bytes, loads_object

MAX_DOCUMENT_BYTES = 256 * 1024


class SignatureRejected(ValueError):
    """The envelope is malformed, names an unknown key, or its signature does not verify."""


def generate_key() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as (private PEM, public PEM)."""
    private = Ed25519PrivateKey.generate()
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(pem: bytes, where: str = "key") -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise SignatureRejected(f"{where}: not a PEM public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SignatureRejected(f"{where}: not an Ed25519 public key")
    return key


def load_public_keys(directory: Path) -> dict[str, Ed25519PublicKey]:
    """Every ``*.pub`` in ``directory`` by key id (empty when the directory is missing)."""
    keys: dict[str, Ed25519PublicKey] = {}
    if not directory.is_dir():
        return keys
    for path in sorted(directory.glob("*.pub")):
        key = load_public_key(path.read_bytes(), str(path))
        keys[key_id(key)] = key
    return keys


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key


def seal(document: Mapping[str, Any], private_pem: bytes, schema: str) -> dict[str, str]:
    """The envelope for ``document`` signed with ``private_pem``."""
    private = load_private_key(private_pem)
    body = dumps_bytes(dict(document))
    return {
        "schema": schema,
        "key_id": key_id(private.public_key()),
        "document": base64.b64encode(body).decode("ascii"),
        "signature": base64.b64encode(private.sign(body)).decode("ascii"),
    }


def open_envelope(
    envelope: Mapping[str, Any], keys: Mapping[str, Ed25519PublicKey], schema: str
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
    return key_id(private.public_key()), private.sign(data)


def verify_bytes(data: bytes, signature: bytes, kid: str, keys: Mapping[str, Ed25519PublicKey]) -> None:
    if kid not in keys:
        known = ", ".join(sorted(keys)) or "none installed"
        raise SignatureRejected(f"signed with unknown key {kid[:40]!r} (trusted: {known})")
    try:
        keys[kid].verify(signature, data)
    except InvalidSignature:
        raise SignatureRejected(f"signature does not verify with key {kid}") from None
