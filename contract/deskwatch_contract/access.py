"""Who is who on the broker (certificate identities), and what each role may publish and read.

Every client authenticates with a certificate; its common name (CN), which brokers
take as the user name, says who it is:

============================== ============== =====================================
CN                             role           example
============================== ============== =====================================
``{site}/{device_id}``         device         ``acme-support/desk-0042``
``{site}/{device_id}/companion`` companion    ``acme-support/desk-0042/companion``
``{name}`` (no ``/``)          central        ``deskwatch-central``
============================== ============== =====================================

The certificate also carries ``O={site}`` and ``OU={role}`` for people reading it.
Site and device id can hold no ``/`` (see :mod:`.topics`), so the three forms can
never be confused. The broker ACL is *generated* from the certificates issued
(:mod:`deskwatch_contract.ca`), one entry per identity with exactly the topics of
:data:`PERMISSIONS`, so a device can publish only under its own site and id, and a
companion only what it needs for its own desk.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from deskwatch_contract import topics

Role = Literal["device", "companion", "central"]
ROLES: tuple[Role, ...] = ("device", "companion", "central")
COMPANION_SUFFIX = "companion"
_ID = re.compile(topics.ID_PATTERN)


@dataclass(frozen=True)
class Access:
    """Topic filters one role may publish to and read, relative to its desk's prefix
    (device, companion) or to ``deskwatch/v1/`` (central, which serves every desk)."""

    publish: tuple[str, ...]
    read: tuple[str, ...]


PERMISSIONS: dict[Role, Access] = {
    # Everything a device sends, and the commands and activity meant for it.
    "device": Access(
        publish=(
            topics.STATUS,
            topics.EVENT,
            topics.EVIDENCE + "+",
            topics.SCAN,
            topics.HEALTH,
            topics.CMD_RESULT,
            topics.SELFTEST,
            topics.JOBS_PROGRESS,
        ),
        read=(
            topics.CMD_PAUSE,
            topics.CMD_RESUME,
            topics.CMD_SCAN,
            topics.ACTIVITY,
            topics.JOBS_NOTIFY,  # the signed remote job, retained
            topics.REVIEWS,  # the collector's word on its findings, retained
        ),
    ),
    # The worker's PC: pause, resume and input activity for its desk; it shows the answers,
    # the scans and the findings of that desk. It never sends what a device sends.
    "companion": Access(
        publish=(topics.CMD_PAUSE, topics.CMD_RESUME, topics.ACTIVITY),
        read=(topics.CMD_RESULT, topics.SCAN, topics.EVENT),
    ),
    # The collector: reads every desk, sends commands, starts signed jobs and tells each
    # desk how its findings were reviewed; it never publishes device data.
    "central": Access(
        publish=(
            "+/+/" + topics.CMD_PAUSE,
            "+/+/" + topics.CMD_RESUME,
            "+/+/" + topics.CMD_SCAN,
            "+/+/" + topics.JOBS_NOTIFY,
            "+/+/" + topics.REVIEWS,
        ),
        read=("#",),
    ),
}


@dataclass(frozen=True)
class Identity:
    role: Role
    site: str = ""
    device_id: str = ""
    name: str = ""  # central services only

    @property
    def cn(self) -> str:
        if self.role == "device":
            return f"{self.site}/{self.device_id}"
        if self.role == "companion":
            return f"{self.site}/{self.device_id}/{COMPANION_SUFFIX}"
        return self.name

    @property
    def scope(self) -> str:
        """The topic prefix its permissions are relative to (with the trailing slash)."""
        if self.role == "central":
            return topics.ROOT + "/"
        return topics.prefix(self.site, self.device_id)

    def publish_filters(self) -> list[str]:
        return [self.scope + suffix for suffix in PERMISSIONS[self.role].publish]

    def read_filters(self) -> list[str]:
        return [self.scope + suffix for suffix in PERMISSIONS[self.role].read]


def device(site: str, device_id: str) -> Identity:
    return _checked(Identity("device", site, device_id))


def companion(site: str, device_id: str) -> Identity:
    return _checked(Identity("companion", site, device_id))


def central(name: str) -> Identity:
    return _checked(Identity("central", name=name))


def parse_cn(cn: str) -> Identity:
    """The identity a certificate's CN names; ValueError (with the expected forms) otherwise."""
    parts = cn.split("/")
    if len(parts) == 2:
        return device(parts[0], parts[1])
    if len(parts) == 3 and parts[2] == COMPANION_SUFFIX:
        return companion(parts[0], parts[1])
    if len(parts) == 1:
        return central(parts[0])
    raise ValueError(
        f"certificate CN {cn!r} names no deskwatch identity: expected SITE/DEVICE, SITE/DEVICE/companion "
        "or a central service name"
    )


def _checked(identity: Identity) -> Identity:
    for label, value in (("site", identity.site), ("device id", identity.device_id), ("name", identity.name)):
        if value and not _ID.fullmatch(value):
            raise ValueError(f"{label} {value!r} {topics.ID_HINT}")
    if identity.role in ("device", "companion") and not (identity.site and identity.device_id):
        raise ValueError(f"a {identity.role} needs a site and a device id")
    if identity.role == "central" and not identity.name:
        raise ValueError("a central service needs a name")
    return identity
