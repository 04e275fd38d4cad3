"""deskwatch: the appliance (on-device desk-compliance checks for a Raspberry Pi webcam).

One of four distributions in this repository (see the README's layout):
this one (``daemon/deskwatch``), ``contract/`` (deskwatch-contract, which this one
needs), ``desk/`` (the worker's companion) and ``collector/`` (the central side). The
appliance image installs this one and the contract, nothing else.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
VERSION = re.search(
    r'__version__ = "([^"]+)"', (HERE / "daemon/deskwatch/__init__.py").read_text()
).group(1)

# face_recognition itself is installed with --no-deps by tools/bootstrap.sh (and by
# image-build/): its metadata asks for `dlib`, which would compile for ~8 minutes,
# while `dlib-bin` ships the same module prebuilt. face_recognition_models imports
# pkg_resources, which setuptools 82 removed.
# The shipped models (sha256-checked by deskwatch.vision.runtime) install beside the
# package's prefix: <prefix>/share/deskwatch/models (e.g. /opt/deskwatch/share/...).
MODEL_FILES = sorted(
    str(p.relative_to(HERE))
    for p in (HERE / "models").glob("*")
    if p.suffix in {".tflite", ".yaml", ".txt", ".md"} and p.is_file()
)
LICENSE_FILES = sorted(str(p.relative_to(HERE)) for p in (HERE / "models" / "LICENSES").glob("*") if p.is_file())

setup(
    name="deskwatch",
    version=VERSION,
    description="Desk-compliance appliance: on-device detectors, durable MQTT delivery",
    long_description=(HERE / "README.md").read_text() if (HERE / "README.md").exists() else "",
    long_description_content_type="text/markdown",
    license="Proprietary",
    python_requires=">=3.11",
    package_dir={"": "daemon"},
    packages=find_packages("daemon", include=["deskwatch", "deskwatch.*"]),
    package_data={"deskwatch": ["py.typed"]},
    include_package_data=False,
    data_files=[
        ("share/deskwatch/models", MODEL_FILES),
        ("share/deskwatch/models/LICENSES", LICENSE_FILES),
    ],
    install_requires=[
        f"deskwatch-contract=={VERSION}",
        "numpy>=1.24",
        "paho-mqtt>=2.1,<3",
        "PyYAML>=6.0",
        "Pillow>=10",
        # Resizing in the scan's hot path: 0.75 ms against Pillow's 8.3 ms per frame.
        "opencv-python-headless>=4.8",
        "dlib-bin>=19.24",
        "face_recognition_models>=0.3.0",
        "setuptools<82",
        # libsodium (wheels for x86_64 and aarch64): sealed evidence, and the Ed25519 signatures of
        # update bundles and remote job documents (deskwatch_contract.signing).
        "PyNaCl>=1.5",
    ],
    extras_require={
        # The default TFLite runtime: maintained, fast int8 kernels, needs numpy 2.
        "litert": ["ai-edge-litert>=2.0", "numpy>=2"],
        # The legacy runtime for installs that must use it: no fast int8 path, numpy 1.
        "tflite-runtime": ["tflite-runtime==2.14.0", "numpy<2"],
        # On the Raspberry Pi: the camera module and journald/sd_notify bindings.
        "pi": ["picamera2>=0.3.17", "systemd-python>=235"],
        "journald": ["systemd-python>=235"],
    },
    entry_points={"console_scripts": ["deskwatch=deskwatch.cli:main"]},
)
