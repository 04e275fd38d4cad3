"""The one place that chooses a TFLite runtime and loads model files.

``ai-edge-litert`` is preferred (maintained, fast int8 kernels, numpy 2);
``tflite-runtime`` 2.14 (numpy < 2) still works for installs that pin it. Every
model file is checked against ``models/manifest.yaml`` (sha256) before it is
handed to the interpreter, and the interpreter is built from the very file that
was hashed: hashed through an open descriptor, then mapped by the interpreter
through that descriptor (``/proc/self/fd/N``: the same inode, whatever happens to
the path meanwhile). Once XNNPACK has packed the weights (``allocate_tensors``) the
mapping's resident pages are dropped (:mod:`deskwatch.vision.memory`): ~23 MB of
the peak RSS for the shipped models. Each model is built once per
:class:`ModelStore` and reused.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import logging
import os
import stat
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import yaml

from deskwatch.vision.config import VisionConfig
from deskwatch.vision.memory import release_file_pages

log = logging.getLogger(__name__)

T = TypeVar("T")

INSTALL_HINT = (
    "no TFLite runtime is installed: install the default one with "
    "pip install 'deskwatch[litert]' (or 'deskwatch[tflite-runtime]' on numpy<2 installs)"
)
SYSTEM_MODELS_DIR = Path("/usr/share/deskwatch/models")
MANIFEST = "manifest.yaml"


class ModelError(RuntimeError):
    """A model cannot be used: missing, not in the manifest, or corrupt.

    ``path`` is the file at fault (a model or the manifest) when known, and ``what`` the
    message without its generic advice: a caller that knows where the daemon gets its models
    (``app.models_remedy``: a model job's directory, vision.models_dir, the package) can say
    better what to do than "reinstall"."""

    def __init__(self, message: str, *, path: Path | None = None, what: str | None = None) -> None:
        super().__init__(message)
        self.path = path
        self.what = what or message


REINSTALL = "reinstall the models (in a source checkout: rebuild them with models/build_models.py)"


def _bad(path: Path, what: str) -> ModelError:
    """``what`` is wrong with ``path``; the message adds the generic advice."""
    return ModelError(f"{what}: {REINSTALL}", path=path, what=what)


class RuntimeUnavailable(ModelError):
    """Neither TFLite runtime can be imported."""


@dataclass(frozen=True)
class RuntimeInfo:
    name: str  # "ai-edge-litert" or "tflite-runtime"
    version: str
    interpreter_class: Any


_runtime: RuntimeInfo | None = None
_runtime_lock = threading.Lock()


def load_runtime(prefer: str | None = None) -> RuntimeInfo:
    """The TFLite runtime to use (cached). ``prefer`` forces one, for tests/bench."""
    global _runtime
    with _runtime_lock:
        if _runtime is not None and prefer in (None, _runtime.name):
            return _runtime
        order = ["ai-edge-litert", "tflite-runtime"]
        if prefer:
            order = [prefer]
        errors = []
        for name in order:
            module = "ai_edge_litert.interpreter" if name == "ai-edge-litert" else "tflite_runtime.interpreter"
            try:
                mod = importlib.import_module(module)
            except ImportError as exc:
                errors.append(f"{name}: {exc}")
                continue
            top = importlib.import_module(module.split(".")[0])
            version = str(getattr(top, "__version__", "?"))
            info = RuntimeInfo(name, version, mod.Interpreter)
            if prefer is None:
                _runtime = info
            log.debug("TFLite runtime: %s %s", name, version)
            return info
        raise RuntimeUnavailable(INSTALL_HINT + " (" + "; ".join(errors) + ")")


def default_models_dir() -> Path:
    """Where the shipped models are: an explicit env override, the installed
    package data, the system path, then the source checkout's ``models/``."""
    here = Path(__file__).resolve()
    candidates = []
    env = os.environ.get("DESKWATCH_MODELS_DIR")
    if env:
        candidates.append(Path(env))
    candidates += [
        here.parents[1] / "models",  # package data (deskwatch/models)
        Path(sys.prefix) / "share" / "deskwatch" / "models",  # setup.py data_files (e.g. /opt/deskwatch)
        SYSTEM_MODELS_DIR,
        here.parents[3] / "models",  # source checkout: <repo>/daemon/deskwatch/vision
    ]
    for path in candidates:
        if (path / MANIFEST).is_file():
            return path
    for path in candidates:
        if path.is_dir():
            return path
    return candidates[-1]


def models_dir(cfg: VisionConfig) -> Path:
    return Path(cfg.models_dir) if cfg.models_dir else default_models_dir()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ManifestEntry:
    name: str  # the manifest's key for the model
    file: str  # file name relative to the models dir
    sha256: str
    info: dict[str, Any] = field(default_factory=dict)


MAX_MANIFEST = 1 << 20  # the shipped one is 3 KB


def _read_manifest_text(path: Path) -> str:
    """The manifest's text: a regular file of at most :data:`MAX_MANIFEST` bytes (OSError
    otherwise). A model job's manifest is written by the daemon's user, and root's tools read
    it to choose their models: a FIFO there must not hold them, nor a huge file fill memory."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        if st.st_size > MAX_MANIFEST:
            raise OSError(errno.EFBIG, f"{st.st_size} bytes, more than a manifest's {MAX_MANIFEST}")
        chunks, size = [], 0
        while size <= MAX_MANIFEST and (chunk := os.read(fd, MAX_MANIFEST + 1 - size)):
            chunks.append(chunk)
            size += len(chunk)
        raw = b"".join(chunks)
        if size > MAX_MANIFEST:
            raise OSError(errno.EFBIG, f"more than a manifest's {MAX_MANIFEST} bytes")
        return raw.decode("utf-8")
    finally:
        os.close(fd)


def read_manifest(directory: Path) -> dict[str, ManifestEntry]:
    """Manifest entries keyed by file name (and by model name when it differs).

    Accepts ``models:`` (and ``files:`` for labels and the like) as a list of
    mappings with ``file`` and ``sha256``, or as a mapping of name to such a mapping.
    """
    path = directory / MANIFEST
    try:
        data = yaml.safe_load(_read_manifest_text(path))
    except FileNotFoundError:
        raise _bad(path, f"{path} is missing") from None
    except OSError as exc:
        raise _bad(path, f"{path} cannot be read ({exc.strerror or exc})") from None
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise _bad(path, f"{path} cannot be read ({exc})") from None
    except RecursionError:
        raise _bad(path, f"{path} cannot be read (nested too deeply to be a manifest)") from None
    sections = [data.get("models"), data.get("files")] if isinstance(data, dict) and "models" in data else [data]
    items: list[tuple[str, dict[str, Any]]] = []
    for raw in sections:
        if isinstance(raw, dict):
            items += [(str(k), v) for k, v in raw.items() if isinstance(v, dict)]
        elif isinstance(raw, list):
            items += [(str(v.get("name") or v.get("file")), v) for v in raw if isinstance(v, dict)]
    entries: dict[str, ManifestEntry] = {}
    for name, spec in items:
        file, digest = spec.get("file"), spec.get("sha256")
        if not file or not digest:
            continue
        entry = ManifestEntry(name, str(file), str(digest).lower(), spec)
        entries[entry.file] = entry
        entries.setdefault(name, entry)
    return entries


@dataclass
class Model:
    """One loaded interpreter with its tensors addressed by name."""

    name: str
    file: str
    sha256: str
    interpreter: Any
    inputs: dict[str, dict[str, Any]]
    outputs: dict[str, dict[str, Any]]
    invoke_ms: float = 0.0  # time of the last invoke()
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in next(iter(self.inputs.values()))["shape"])

    @property
    def input_dtype(self) -> Any:
        return next(iter(self.inputs.values()))["dtype"]

    def run(self, *tensors: np.ndarray) -> dict[str, np.ndarray]:
        """Invoke with the inputs in order; outputs by name (copies)."""
        with self.lock:
            for detail, tensor in zip(self.inputs.values(), tensors, strict=True):
                self.interpreter.set_tensor(detail["index"], tensor)
            self._invoke()
            return {k: self.interpreter.get_tensor(d["index"]) for k, d in self.outputs.items()}

    def run_reading(self, image: np.ndarray, read: Callable[[dict[str, np.ndarray]], T]) -> T:
        """Invoke on one image (HxWx3, any dtype the input's converts from exactly, e.g.
        uint8 into float32) and return ``read(outputs)``, the outputs being views of the
        interpreter's own buffers, valid only inside ``read`` (it runs under the model's lock).

        For the detectors run several times a frame (NanoDet, CenterNet): no float copy of
        the image, no copy of their 1-2 MB of outputs. ``read`` must copy what it keeps:
        a view still held at the next invoke makes the interpreter refuse to run."""
        detail = next(iter(self.inputs.values()))
        if tuple(image.shape) != tuple(int(v) for v in detail["shape"][1:]):
            raise ValueError(f"{self.file}: an image of {list(image.shape)} for an input of {list(detail['shape'])}")
        with self.lock:
            buffer = self.interpreter.tensor(detail["index"])
            np.copyto(buffer()[0], image, casting="unsafe")
            del buffer
            self._invoke()
            views = {k: self.interpreter.tensor(d["index"])() for k, d in self.outputs.items()}
            try:
                return read(views)
            finally:
                del views

    def _invoke(self) -> None:
        t0 = time.perf_counter()
        self.interpreter.invoke()
        self.invoke_ms = (time.perf_counter() - t0) * 1000.0


def check_io(model: Model, outputs: Iterable[str], *, size: int | None = None) -> None:
    """That ``model`` is the graph its decoder reads: one RGB image input, square (``size``
    x ``size`` when given) and every output in ``outputs``; ValueError naming the file and
    what it has otherwise (a wrong model file fails the start, not the first frame)."""
    shape = tuple(model.input_shape)
    square = len(shape) == 4 and shape[1] == shape[2] and shape[3] == 3
    if not square or (size is not None and shape[1] != size):
        wanted = f"[1, {size}, {size}, 3]" if size is not None else "[1, S, S, 3]"
        raise ValueError(f"{model.file}: expected input {wanted}, got {list(shape)}")
    missing = [k for k in outputs if k not in model.outputs]
    if missing:
        raise ValueError(f"{model.file}: outputs {missing} missing (has {sorted(model.outputs)})")


def _tensor_maps(
    interpreter: Any,
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Inputs/outputs by name: the signature's names when there is one (their order
    changes between conversions), else the tensor names."""
    signatures = interpreter.get_signature_list() if hasattr(interpreter, "get_signature_list") else {}
    if signatures:
        key = "serving_default" if "serving_default" in signatures else next(iter(signatures))
        runner = interpreter.get_signature_runner(key)
        ins = {k: dict(v) for k, v in runner.get_input_details().items()}
        outs = {k: dict(v) for k, v in runner.get_output_details().items()}
        ins = dict(sorted(ins.items(), key=lambda kv: kv[1]["index"]))
        return ins, outs
    ins = {d["name"]: d for d in interpreter.get_input_details()}
    outs = {d["name"]: d for d in interpreter.get_output_details()}
    return ins, outs


def _read_from_start(fd: int) -> bytes:
    os.lseek(fd, 0, os.SEEK_SET)
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


class ModelStore:
    """Loads verified models from one directory, once each."""

    def __init__(self, cfg: VisionConfig, *, runtime: str | None = None):
        self.cfg = cfg
        self.directory = models_dir(cfg)
        self._runtime_pref = runtime
        self._manifest: dict[str, ManifestEntry] | None = None
        self._models: dict[str, Model] = {}
        self._checked: dict[str, str] = {}  # file -> sha256 of models in use but not held (checked, lent, let go)
        # files loaded once already: the pose and hand models change places at every empty desk (the
        # pipeline's let_go_of_pose), and only a model's first load is an operator's line at INFO
        self._loaded_before: set[str] = set()
        self._lock = threading.Lock()

    @property
    def manifest(self) -> dict[str, ManifestEntry]:
        if self._manifest is None:
            self._manifest = read_manifest(self.directory)
        return self._manifest

    def entry(self, file: str) -> ManifestEntry:
        entry = self.manifest.get(file)
        if entry is None:
            raise _bad(
                self.directory / MANIFEST, f"{self.directory / file} is not listed in {self.directory / MANIFEST}"
            )
        return entry

    def verify(self, file: str) -> tuple[ManifestEntry, bytes]:
        """The model's bytes, after checking them against the manifest."""
        entry, fd = self._open_verified(file)
        try:
            return entry, _read_from_start(fd)
        finally:
            os.close(fd)

    def _open_verified(self, file: str) -> tuple[ManifestEntry, int]:
        """An open descriptor of the model file, its content checked against the manifest
        (read through the descriptor in 1 MB chunks: no copy of the model is kept)."""
        entry = self.entry(file)
        path = self.directory / entry.file
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError as exc:
            raise _bad(path, f"model file {path} cannot be read ({exc.strerror})") from None
        try:
            h = hashlib.sha256()
            while chunk := os.read(fd, 1 << 20):
                h.update(chunk)
        except OSError as exc:
            os.close(fd)
            raise _bad(path, f"model file {path} cannot be read ({exc.strerror})") from None
        digest = h.hexdigest()
        if digest != entry.sha256:
            os.close(fd)
            raise _bad(
                path,
                f"model file {path} is corrupt or was replaced: sha256 {digest[:16]}... but "
                f"{MANIFEST} says {entry.sha256[:16]}...; refusing to load it",
            )
        return entry, fd

    def _interpreter(self, rt: RuntimeInfo, fd: int, file: str) -> Any:
        """The interpreter on the verified file behind ``fd``, tensors allocated (XNNPACK
        has packed the weights), the file's mapped pages released. Where there is no
        ``/proc/self/fd`` it is built from the file's bytes, read through ``fd``."""
        by_fd = f"/proc/self/fd/{fd}"
        if os.path.exists(by_fd):
            interpreter = rt.interpreter_class(model_path=by_fd, num_threads=self.cfg.threads)
            interpreter.allocate_tensors()
            released = release_file_pages(os.fstat(fd).st_ino, Path(file).name)
            log.debug("model %s: %.1f MB of mapped weights released after packing", file, released / 2**20)
            return interpreter
        interpreter = rt.interpreter_class(model_content=_read_from_start(fd), num_threads=self.cfg.threads)
        interpreter.allocate_tensors()
        return interpreter

    def load(self, file: str) -> Model:
        with self._lock:
            model = self._models.get(file)
            if model is not None:
                return model
            model = self._build(file)
            self._models[file] = model
            if file in self._loaded_before:  # let go to save memory and needed again: not news for the journal
                log.debug("loaded model %s again (verified, sha256 %s...)", file, model.sha256[:12])
                return model
            self._loaded_before.add(file)
            log.info(
                "loaded model %s (%s, %d threads, sha256 %s...)",
                file,
                load_runtime(self._runtime_pref).name,
                self.cfg.threads,
                model.sha256[:12],
            )
            return model

    def check(self, file: str) -> str:
        """Verify a model that is loaded only when a frame needs it (the presence check's hands), so that a missing
        or altered file fails the daemon's start rather than the first frame that needs it;
        its sha256 is listed by :meth:`loaded` from then on."""
        entry, fd = self._open_verified(file)
        os.close(fd)
        with self._lock:
            self._checked[file] = entry.sha256
        return entry.sha256

    @contextmanager
    def borrowed(self, file: str) -> Iterator[Model]:
        """A model loaded for one use and let go after it (``deskwatch_dev.modelmem`` measures what
        a model holds while it is out this way): its interpreter's memory is held only while it runs.
        Verified against the manifest on every load, as :meth:`load` does; one already loaded
        for good is lent as it is."""
        with self._lock:
            model = self._models.get(file)
        if model is not None:
            yield model
            return
        model = self._build(file)
        with self._lock:
            self._checked[file] = model.sha256
        try:
            yield model
        finally:
            model.interpreter = None  # the interpreter's arena and packed weights go with it

    def forget(self, file: str) -> bool:
        """Let go of a loaded model (its holders drop it too); the next :meth:`load` loads and
        verifies it again. Its sha256 stays listed by :meth:`loaded` (it is still in use).
        False when it was not loaded."""
        with self._lock:
            model = self._models.pop(file, None)
            if model is not None:
                self._checked[file] = model.sha256
        return model is not None

    def _build(self, file: str) -> Model:
        rt = load_runtime(self._runtime_pref)
        entry, fd = self._open_verified(file)
        try:
            interpreter = self._interpreter(rt, fd, entry.file)
        except (ValueError, RuntimeError) as exc:
            raise ModelError(
                f"{rt.name} cannot load {self.directory / file}: {exc}", path=self.directory / file
            ) from None
        finally:
            os.close(fd)
        ins, outs = _tensor_maps(interpreter)
        return Model(entry.name, entry.file, entry.sha256, interpreter, ins, outs)

    def runtime_name(self) -> str:
        """The runtime this store loads with (imports it if needed)."""
        return load_runtime(self._runtime_pref).name

    def loaded(self) -> dict[str, str]:
        """file -> sha256 of every model loaded so far, and of those loaded only when needed."""
        return {m.file: m.sha256 for m in self._models.values()} | self._checked

    def close(self) -> None:
        with self._lock:
            self._models.clear()
            self._checked.clear()
