"""Ed25519 signing of job documents and update manifests, on libsodium (PyNaCl).

The keys are the files openssl makes and reads; the appliance's process never loads the
``cryptography`` package (7.6 MB resident, issue 13)."""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from deskwatch_contract.signing import (
    SignatureRejected,
    generate_key,
    key_id,
    load_private_key,
    load_public_key,
    load_public_keys,
    open_envelope,
    seal,
    sign_bytes,
    verify_bytes,
)

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = "deskwatch.job/1"
needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def test_an_envelope_opens_with_its_key_and_nothing_altered_passes() -> None:
    private, public = generate_key()
    keys = {key_id(load_public_key(public)): load_public_key(public)}
    envelope = seal({"job": "selftest", "n": 1}, private, SCHEMA)
    document, kid = open_envelope(envelope, keys, SCHEMA)
    assert document == {"job": "selftest", "n": 1} and kid in keys

    body = bytearray(base64.b64decode(envelope["document"]))
    body[-2] ^= 1
    altered = dict(envelope, document=base64.b64encode(bytes(body)).decode())
    with pytest.raises(SignatureRejected, match="does not verify"):
        open_envelope(altered, keys, SCHEMA)
    with pytest.raises(SignatureRejected, match="does not verify"):
        open_envelope(dict(envelope, signature=base64.b64encode(b"\0" * 10).decode()), keys, SCHEMA)
    other_private, _ = generate_key()
    with pytest.raises(SignatureRejected, match="unknown key"):
        open_envelope(seal({"job": "selftest"}, other_private, SCHEMA), keys, SCHEMA)


@needs_openssl
def test_keys_made_by_openssl_sign_and_verify_both_ways(tmp_path: Path) -> None:
    _openssl("genpkey", "-algorithm", "ed25519", "-out", "release.pem", cwd=tmp_path)
    _openssl("pkey", "-in", "release.pem", "-pubout", "-out", "release.pub", cwd=tmp_path)
    (tmp_path / "manifest.json").write_bytes(b'{"version": "1.2.3"}')
    _openssl(
        "pkeyutl", "-sign", "-rawin", "-inkey", "release.pem", "-in", "manifest.json", "-out", "ossl.sig", cwd=tmp_path
    )

    keys = load_public_keys(tmp_path)
    kid, ours = sign_bytes(b'{"version": "1.2.3"}', (tmp_path / "release.pem").read_bytes())
    assert list(keys) == [kid]
    assert ours == (tmp_path / "ossl.sig").read_bytes()  # Ed25519 is deterministic: the same 64 bytes
    verify_bytes(b'{"version": "1.2.3"}', ours, kid, keys)

    # and openssl reads what generate_key writes, and verifies what it signs
    private, public = generate_key()
    (tmp_path / "ours.pem").write_bytes(private)
    (tmp_path / "ours.pub").write_bytes(public)
    _, signature = sign_bytes(b'{"version": "1.2.3"}', private)
    (tmp_path / "ours.sig").write_bytes(signature)
    _openssl(
        "pkeyutl",
        "-verify",
        "-rawin",
        "-pubin",
        "-inkey",
        "ours.pub",
        "-in",
        "manifest.json",
        "-sigfile",
        "ours.sig",
        cwd=tmp_path,
    )
    _openssl("pkey", "-in", "ours.pem", "-noout", cwd=tmp_path)


@needs_openssl
def test_a_key_file_that_is_not_an_ed25519_public_key_names_the_file_and_the_fix(tmp_path: Path) -> None:
    _openssl("genpkey", "-algorithm", "rsa", "-pkeyopt", "rsa_keygen_bits:1024", "-out", "rsa.pem", cwd=tmp_path)
    _openssl("pkey", "-in", "rsa.pem", "-pubout", "-out", "rsa.pub", cwd=tmp_path)
    with pytest.raises(SignatureRejected, match=r"rsa\.pub: .*another kind of public key .*openssl genpkey"):
        load_public_keys(tmp_path)
    with pytest.raises(ValueError, match="another kind of private key"):
        load_private_key((tmp_path / "rsa.pem").read_bytes())


@pytest.mark.parametrize(
    ("text", "why"),
    [
        (b"", "found no PEM block"),
        (b"\xff\xfe not text", "not text"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "found PRIVATE KEY"),
        (b"-----BEGIN PUBLIC KEY-----\nnot*base64\n-----END PUBLIC KEY-----\n", "not base64"),
        (b"-----BEGIN PUBLIC KEY-----\nMCowBQYDK2VwAyEA\n-----END PUBLIC KEY-----\n", "another kind"),  # cut short
        (b"-----END PUBLIC KEY-----\n-----BEGIN PUBLIC KEY-----\n", "needs one"),
        (b"x" * 5000, "more than a key file's"),
    ],
)
def test_a_broken_public_key_file_is_refused_with_what_is_wrong(text: bytes, why: str) -> None:
    with pytest.raises(SignatureRejected, match=why):
        load_public_key(text, "keys/jobs/fleet.pub")


def test_a_public_key_with_bytes_after_the_key_is_refused() -> None:
    _, public = generate_key()
    der = base64.b64decode("".join(public.decode().splitlines()[1:-1]))
    longer = b"-----BEGIN PUBLIC KEY-----\n" + base64.b64encode(der + b"\0") + b"\n-----END PUBLIC KEY-----\n"
    with pytest.raises(SignatureRejected, match="another kind"):
        load_public_key(longer)


def test_the_appliance_never_loads_the_cryptography_package() -> None:
    """Every appliance module that signs, verifies or seals, imported in a fresh interpreter."""
    code = (
        "import sys\n"
        "import deskwatch.cli, deskwatch.app, deskwatch.jobs.agent, deskwatch.jobs.executor\n"
        "import deskwatch.update.bundle, deskwatch.update.install, deskwatch.delivery.seal\n"
        "import deskwatch.commands.bench\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'cryptography'))\n"
    )
    env = {"PYTHONPATH": f"{ROOT / 'daemon'}:{ROOT / 'contract'}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
