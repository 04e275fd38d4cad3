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
    packages=["deskwatch_collector"],
    package_data={"deskwatch_collector": ["static/*", "py.typed"]},
    install_requires=[
        f"deskwatch-contract=={VERSION}",
        "paho-mqtt>=2.1,<3",
        "jsonschema>=4.20",
        "psycopg[binary]>=3.1",
        "PyNaCl>=1.5",  # opens evidence sealed on the devices
    ],
    entry_points={"console_scripts": ["deskwatch-collector=deskwatch_collector.cli:main"]},
)
