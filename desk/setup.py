"""deskwatch-desk: the workstation companion (input idleness and the worker's pause button).

Runs on the worker's PC: paho-mqtt, PyYAML and Tk (in the standard library) only. No
numpy, OpenCV or dlib ever comes with it.
"""

import re
from pathlib import Path

from setuptools import setup

HERE = Path(__file__).resolve().parent
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "deskwatch_desk/__init__.py").read_text()).group(1)

setup(
    name="deskwatch-desk",
    version=VERSION,
    description="deskwatch desk companion: idle time and the worker's pause window",
    license="Proprietary",
    python_requires=">=3.11",
    packages=["deskwatch_desk"],
    package_data={"deskwatch_desk": ["py.typed"]},
    install_requires=[f"deskwatch-contract=={VERSION}", "paho-mqtt>=2.1,<3", "PyYAML>=6.0"],
    entry_points={"console_scripts": ["deskwatch-desk=deskwatch_desk.cli:main"]},
)
