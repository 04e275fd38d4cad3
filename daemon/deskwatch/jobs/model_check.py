"""The selftest a new model must pass before the scan loop gets it.

It loads from the new models directory through the same :class:`ModelStore` the daemon
uses (so its sha256 is checked against the manifest there), and must take the same
input and give the same outputs (names and shapes) as the model it replaces: the
pipeline's decoding depends on them. One inference on a neutral grey frame must finish
in time and give finite numbers. Then the whole vision stage is built from the new
directory and analyses that frame once, as a scan would.
"""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from deskwatch.domain import Frame
from deskwatch.vision.config import VisionConfig
from deskwatch.vision.runtime import ModelStore

MAX_INVOKE_MS = 5000.0


class ModelRejected(Exception):
    """The new model does not fit the pipeline; the message says how."""


def _shapes(tensors: dict[str, dict[str, object]]) -> dict[str, tuple[int, ...]]:
    return {k: tuple(int(x) for x in v["shape"]) for k, v in tensors.items()}  # type: ignore[attr-defined]


def model_selftest(vision: VisionConfig, current_dir: Path, new_dir: Path, file: str) -> str:
    """A one-line detail on success; ModelRejected (or ModelError) otherwise."""
    old = ModelStore(dataclasses.replace(vision, models_dir=str(current_dir))).load(file)
    store = ModelStore(dataclasses.replace(vision, models_dir=str(new_dir)))
    new = store.load(file)
    if old.input_shape != new.input_shape or str(old.input_dtype) != str(new.input_dtype):
        raise ModelRejected(
            f"input {new.input_shape} {new.input_dtype} differs from the current {old.input_shape} {old.input_dtype}"
        )
    if _shapes(old.outputs) != _shapes(new.outputs):
        raise ModelRejected(f"outputs {_shapes(new.outputs)} differ from the current {_shapes(old.outputs)}")
    dtype = np.dtype(new.input_dtype)
    grey = np.full(new.input_shape, 128 if dtype.kind in "ui" else 0.0, dtype=dtype)
    t0 = time.perf_counter()
    outputs = new.run(grey)
    ms = (time.perf_counter() - t0) * 1000
    if ms > MAX_INVOKE_MS:
        raise ModelRejected(f"one inference took {ms:.0f} ms (limit {MAX_INVOKE_MS:.0f})")
    bad = [k for k, v in outputs.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
    if bad:
        raise ModelRejected(f"non-finite outputs from {', '.join(bad)}")
    from deskwatch.vision.pipeline import Vision

    pipeline = Vision(dataclasses.replace(vision, models_dir=str(new_dir)), store=store)
    try:
        pipeline.analyze(Frame(np.full((480, 640, 3), 128, dtype=np.uint8), datetime.now(UTC)))
    finally:
        pipeline.close()
    return f"{file}: same tensors as the current model, inference {ms:.0f} ms, the vision stage runs with it"
