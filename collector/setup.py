"""deskwatch-collector: the reference central side (storage, supervisor page, retention).

Never installed on an appliance: the image installs deskwatch and deskwatch-contract only.
"""

import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "deskwatch_collector/__init__.py").read_text()).group(1)

setup(
    name="deskwatch-collector",
    version=VERSION,
    description="deskwatch collector: validated intake, SQLite/PostgreSQL store, supervisor page",
    license="Proprietary",
    python_requires=">=3.11",
    packages=["deskwatch_collector", "deskwatch_collector.web", "deskwatch_collector.console"],
    package_data={"deskwatch_collector": ["static/*", "py.typed"], "deskwatch_collector.console": ["templates/*.html"]},
    install_requires=[
        f"deskwatch-contract=={VERSION}",
        "paho-mqtt>=2.1,<3",
        "jsonschema>=4.20",
        "psycopg[binary]>=3.1",
        # the supervisor page: an ASGI app on a server with timeouts (see web/server.py)
        "hypercorn>=0.17,<1",
        "starlette>=0.40,<2",
        # intake from a RabbitMQ cluster's quorum queue (docs/central/clustered-brokers.md)
        "pika>=1.3,<2",
        # the console's pages: autoescaped server-side templates, no build step (see console/)
        "Jinja2>=3.1,<4",
        # opens evidence sealed on the devices (libsodium's sealed box) and signs remote job
        # documents (deskwatch_contract.signing)
        "PyNaCl>=1.5",
    ],
    entry_points={"console_scripts": ["deskwatch-collector=deskwatch_collector.cli:main"]},
)
