"""``deskwatch-ca``: the fleet's certificate authority and the broker ACLs made from it.

Run by whoever runs the broker, on a machine that keeps the CA key (never on a device
or a worker's PC). It issues the certificates of devices, their desk companions and
central services with the CN of :mod:`deskwatch_contract.access`, and renders the
broker's access rules from the certificates it issued, for Mosquitto (``acl_file``)
and NATS (``authorization``), so the rules can never drift from the identities::

    deskwatch-ca init /srv/deskwatch-ca
    deskwatch-ca issue /srv/deskwatch-ca device acme-support desk-0042 --out bundle/
    deskwatch-ca issue /srv/deskwatch-ca companion acme-support desk-0042 --out companion/
    deskwatch-ca issue /srv/deskwatch-ca central deskwatch-central --out collector/
    deskwatch-ca server /srv/deskwatch-ca broker.example.com --out /etc/mosquitto/certs/
    deskwatch-ca acl /srv/deskwatch-ca --engine mosquitto -o /etc/mosquitto/deskwatch.acl
    deskwatch-ca revoke /srv/deskwatch-ca acme-support/desk-0042   # then render the ACL again
    deskwatch-ca evidence-key /srv/deskwatch-evidence-keys          # the collector's sealing key pair

Mosquitto re-reads ``acl_file`` on SIGHUP; NATS on ``nats-server --signal reload``. A
certificate that is not in the rendered ACL (revoked, or issued elsewhere) can
connect but may neither publish nor read anything. Needs the ``openssl`` command.
"""

from __future__ import annotations

import argparse
import base64
import os
import ssl
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from deskwatch_contract import access, sealing
from deskwatch_contract.access import Identity

ISSUED, REVOKED = "issued", "revoked"
CURVE = "prime256v1"


class CaError(Exception):
    """A CA operation failed; the message says what to do."""


# -- certificates -------------------------------------------------------------------------------
def _openssl(*args: object, cwd: Path | None = None) -> str:
    try:
        done = subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, text=True, cwd=cwd)
    except FileNotFoundError:
        raise CaError("the openssl command is needed (apt-get install openssl)") from None
    except subprocess.CalledProcessError as exc:
        raise CaError(f"openssl {args[0]} failed: {exc.stderr.strip()[-400:]}") from None
    return done.stdout


def _subject(identity: Identity) -> str:
    """The ``-subj`` for openssl (``/`` inside a value escaped)."""
    cn = identity.cn.replace("/", "\\/")
    org = f"/O={identity.site}" if identity.site else ""
    return f"{org}/OU={identity.role}/CN={cn}"


def init(ca_dir: Path, *, days: int = 3650, name: str = "deskwatch fleet CA") -> Path:
    """Create the CA key (0600) and certificate; returns the certificate path."""
    ca_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    key, crt = ca_dir / "ca.key", ca_dir / "ca.crt"
    if key.exists():
        raise CaError(f"{key} exists: this directory already holds a CA")
    (ca_dir / ISSUED).mkdir(exist_ok=True)
    (ca_dir / REVOKED).mkdir(exist_ok=True)
    old = os.umask(0o077)
    try:
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", f"ec_paramgen_curve:{CURVE}", "-nodes",
            "-keyout", key, "-out", crt, "-days", days, "-subj", f"/CN={name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
    finally:
        os.umask(old)
    return crt


def _sign(ca_dir: Path, subject: str, ext: str, out_crt: Path, out_key: Path, days: int) -> None:
    if not (ca_dir / "ca.key").exists():
        raise CaError(f"{ca_dir} holds no CA: run 'deskwatch-ca init {ca_dir}' first")
    with tempfile.TemporaryDirectory(prefix="deskwatch-ca-") as tmp:
        csr, extfile = Path(tmp) / "req.csr", Path(tmp) / "ext.cnf"
        extfile.write_text(ext + "\n")
        old = os.umask(0o077)
        try:
            _openssl(
                "req", "-newkey", "ec", "-pkeyopt", f"ec_paramgen_curve:{CURVE}", "-nodes",
                "-keyout", out_key, "-out", csr, "-subj", subject,
            )  # fmt: skip
        finally:
            os.umask(old)
        _openssl(
            "x509", "-req", "-in", csr, "-CA", ca_dir / "ca.crt", "-CAkey", ca_dir / "ca.key",
            "-CAcreateserial", "-out", out_crt, "-days", days, "-extfile", extfile,
        )  # fmt: skip
    os.chmod(out_key, 0o600)


def issue(ca_dir: Path, identity: Identity, out_dir: Path, *, days: int = 825) -> tuple[Path, Path]:
    """A client certificate for ``identity`` in ``out_dir`` (``device.crt``/``.key``,
    ``companion.crt``/``.key`` or ``client.crt``/``.key``, plus ``ca.crt``); it is also
    recorded under ``issued/`` for :func:`render_acl`."""
    if (ca_dir / REVOKED / _record_name(identity)).exists():
        raise CaError(f"{identity.cn} was revoked; give the replacement device a new id")
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = {"device": "device", "companion": "companion", "central": "client"}[identity.role]
    crt, key = out_dir / f"{stem}.crt", out_dir / f"{stem}.key"
    _sign(ca_dir, _subject(identity), "extendedKeyUsage=clientAuth", crt, key, days)
    (ca_dir / ISSUED / _record_name(identity)).write_bytes(crt.read_bytes())
    (out_dir / "ca.crt").write_bytes((ca_dir / "ca.crt").read_bytes())
    return crt, key


def server(
    ca_dir: Path, hostname: str, out_dir: Path, *, ips: Iterable[str] = (), days: int = 825
) -> tuple[Path, Path]:
    """The broker's own certificate (``broker.crt``/``.key``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    names = [f"DNS:{hostname}", *(f"IP:{ip}" for ip in ips)]
    ext = f"subjectAltName={','.join(names)}\nextendedKeyUsage=serverAuth"
    crt, key = out_dir / "broker.crt", out_dir / "broker.key"
    _sign(ca_dir, f"/CN={hostname}", ext, crt, key, days)
    return crt, key


def revoke(ca_dir: Path, cn: str) -> Path:
    """Take an identity out of the ACL (render it again and reload the broker afterwards)."""
    identity = access.parse_cn(cn)
    src = ca_dir / ISSUED / _record_name(identity)
    if not src.exists():
        raise CaError(f"no certificate was issued to {cn}")
    dst = ca_dir / REVOKED / src.name
    src.rename(dst)
    return dst


def _record_name(identity: Identity) -> str:
    return identity.cn.replace("/", "__") + ".crt"


def issued(ca_dir: Path) -> list[tuple[Identity, str]]:
    """Every identity with a current certificate, and the certificate's subject as RFC 2253."""
    out = []
    for path in sorted((ca_dir / ISSUED).glob("*.crt")):
        cert = _decode(path)
        out.append((access.parse_cn(_cn(cert)), _rfc2253(cert)))
    return out


def _decode(path: Path) -> dict[str, Any]:
    decoded: dict[str, Any] = ssl._ssl._test_decode_cert(str(path))  # type: ignore[attr-defined]
    return decoded


def _cn(cert: dict[str, Any]) -> str:
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    raise CaError("certificate without a CN")


_SHORT = {"commonName": "CN", "organizationalUnitName": "OU", "organizationName": "O", "countryName": "C"}


def _rfc2253(cert: dict[str, Any]) -> str:
    """The subject as NATS's ``verify_and_map`` sees it (RFC 2253: last RDN first)."""
    parts = [f"{_SHORT.get(k, k)}={v}" for rdn in cert.get("subject", ()) for k, v in rdn]
    return ",".join(reversed(parts))


# -- ACLs -----------------------------------------------------------------------------------------
def mosquitto_acl(identities: Iterable[Identity]) -> str:
    """Mosquitto ``acl_file`` text: one ``user`` block per identity, no pattern rules
    (a pattern would apply to every client, companions included)."""
    lines = [
        "# Generated by deskwatch-ca from the certificates it issued; do not edit by hand.",
        "# Certificate CN = user name (use_identity_as_username true). Anything not listed is denied.",
    ]
    for identity in identities:
        lines += ["", f"# {identity.role}", f"user {identity.cn}"]
        lines += [f"topic write {t}" for t in identity.publish_filters()]
        lines += [f"topic read {t}" for t in identity.read_filters()]
    return "\n".join(lines) + "\n"


def _nats_subjects(topic_filter: str) -> list[str]:
    """An MQTT topic filter as the NATS subjects its MQTT gateway subscribes to
    (``a/#`` also matches ``a`` itself, so it becomes ``a`` and ``a.>``)."""
    levels = topic_filter.split("/")
    subject = ".".join(">" if level == "#" else "*" if level == "+" else level for level in levels)
    if levels[-1] == "#" and len(levels) > 1:
        return [".".join(subject.split(".")[:-1]), subject]
    return [subject]


def nats_authorization(entries: Iterable[tuple[Identity, str]]) -> str:
    """A NATS ``authorization { users = [...] }`` block for ``mqtt { tls { verify_and_map: true } }``.

    The user is the certificate subject (RFC 2253). ``$MQTT.sub.>`` is NATS's delivery
    subject for QoS 1 subscriptions: an MQTT client cannot read other clients' messages
    through it (the tests check that), but without it no QoS 1 subscription works.
    """
    users = []
    for identity, subject in entries:
        publish = [s for t in identity.publish_filters() for s in _nats_subjects(t)]
        read = [s for t in identity.read_filters() for s in _nats_subjects(t)] + ["$MQTT.sub.>"]
        users.append(
            f"    # {identity.role} {identity.cn}\n"
            f"    {{user: {_quote(subject)}, permissions: {{publish: {{allow: [{', '.join(map(_quote, publish))}]}}, "
            f"subscribe: {{allow: [{', '.join(map(_quote, read))}]}}}}}}"
        )
    return (
        "# Generated by deskwatch-ca from the certificates it issued; do not edit by hand.\n"
        "authorization {\n  users = [\n" + "\n".join(users) + "\n  ]\n}\n"
    )


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_acl(ca_dir: Path, engine: str) -> str:
    entries = issued(ca_dir)
    if engine == "mosquitto":
        return mosquitto_acl(identity for identity, _ in entries)
    if engine == "nats":
        return nats_authorization(entries)
    raise CaError(f"unknown broker engine {engine!r} (mosquitto or nats)")


# -- the collector's key for sealed evidence -----------------------------------------------------------
def evidence_key(out_dir: Path) -> tuple[Path, Path, str]:
    """A new X25519 key pair for sealing evidence (``evidence-<id>.key`` 0600, ``.pub``).

    The public key goes to every device (``evidence.seal_to``); the private key stays with
    the collector (``evidence_keys``). Returns (private, public, key id).
    """
    try:
        from nacl.public import PrivateKey
    except ImportError:
        raise CaError("PyNaCl is needed for evidence keys: pip install pynacl") from None
    private = PrivateKey.generate()
    public = bytes(private.public_key)
    key_id = sealing.key_id(public)
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    priv_path, pub_path = out_dir / f"evidence-{key_id}.key", out_dir / f"evidence-{key_id}.pub"
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(base64.b64encode(bytes(private)).decode() + "\n")
    pub_path.write_text(base64.b64encode(public).decode() + "\n")
    return priv_path, pub_path, key_id


# -- command line -------------------------------------------------------------------------------------
def _identity(role: str, names: list[str]) -> Identity:
    if role == "central":
        if len(names) != 1:
            raise CaError("central takes one NAME")
        return access.central(names[0])
    if len(names) != 2:
        raise CaError(f"{role} takes SITE DEVICE_ID")
    return access.device(*names) if role == "device" else access.companion(*names)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="deskwatch-ca", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("init", help="create a CA in DIR")
    p.add_argument("ca_dir", type=Path)
    p.add_argument("--days", type=int, default=3650)
    p = sub.add_parser("issue", help="issue a device, companion or central certificate")
    p.add_argument("ca_dir", type=Path)
    p.add_argument("role", choices=access.ROLES)
    p.add_argument("names", nargs="+", metavar="NAME", help="SITE DEVICE_ID (device, companion) or NAME (central)")
    p.add_argument("--out", type=Path, required=True, help="directory for the certificate, its key and ca.crt")
    p.add_argument("--days", type=int, default=825)
    p = sub.add_parser("server", help="issue the broker's certificate")
    p.add_argument("ca_dir", type=Path)
    p.add_argument("hostname")
    p.add_argument("--ip", action="append", default=[])
    p.add_argument("--out", type=Path, required=True)
    p = sub.add_parser("revoke", help="take an identity (its CN) out of the ACL")
    p.add_argument("ca_dir", type=Path)
    p.add_argument("cn")
    p = sub.add_parser("acl", help="render the broker ACL from the issued certificates")
    p.add_argument("ca_dir", type=Path)
    p.add_argument("--engine", choices=("mosquitto", "nats"), default="mosquitto")
    p.add_argument("-o", "--output", type=Path, help="write here (atomically) instead of stdout")
    p = sub.add_parser("evidence-key", help="a new key pair for sealing evidence to the collector")
    p.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    try:
        if args.command == "init":
            print(init(args.ca_dir, days=args.days))
        elif args.command == "issue":
            crt, key = issue(args.ca_dir, _identity(args.role, args.names), args.out, days=args.days)
            print(f"{crt}\n{key}")
        elif args.command == "server":
            crt, key = server(args.ca_dir, args.hostname, args.out, ips=args.ip)
            print(f"{crt}\n{key}")
        elif args.command == "revoke":
            revoke(args.ca_dir, args.cn)
            print(f"revoked {args.cn}: render the ACL again and reload the broker")
        elif args.command == "acl":
            text = render_acl(args.ca_dir, args.engine)
            if args.output is None:
                sys.stdout.write(text)
            else:
                tmp = args.output.with_name(args.output.name + ".new")
                tmp.write_text(text)
                os.replace(tmp, args.output)
        elif args.command == "evidence-key":
            priv, pub, key_id = evidence_key(args.out_dir)
            print(f"key id {key_id}\nprivate (collector only): {priv}\npublic (devices): {pub}")
    except (CaError, ValueError, OSError) as exc:
        print(f"deskwatch-ca: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
