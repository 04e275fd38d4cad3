"""deskwatch-contract: the MQTT contract and what every side of it shares.

Installed on the appliance, on the worker's PC (with the desk companion) and on the
central side (with the collector); so it needs only PyYAML and paho-mqtt.
``deskwatch_contract.signing`` also needs PyNaCl (libsodium): the appliance and the
collector, the two sides that sign and verify, require it; the desk companion never
imports that module.
"""

import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "deskwatch_contract/__init__.py").read_text()).group(1)

setup(
    name="deskwatch-contract",
    version=VERSION,
    description="deskwatch MQTT contract: JSON Schemas, topics, command intake, TLS helper, exit codes",
    license="Proprietary",
    python_requires=">=3.11",
    packages=["deskwatch_contract"],
    package_data={"deskwatch_contract": ["schemas/*.json", "py.typed"]},
    install_requires=["PyYAML>=6.0", "paho-mqtt>=2.1,<3"],
    # The fleet's CA and broker ACLs (run by the broker's operator; openssl, and PyNaCl for evidence keys).
    entry_points={"console_scripts": ["deskwatch-ca=deskwatch_contract.ca:main"]},
)
