"""The TFLite runtime loader: sha256 refusal, runtime choice, one interpreter per model."""

from __future__ import annotations

import builtins
import shutil
from pathlib import Path

import numpy as np
import pytest

from deskwatch.vision import runtime
from deskwatch.vision.config import VisionConfig
from deskwatch.vision.runtime import ModelError, ModelStore, RuntimeUnavailable, read_manifest
from tests.support.vision import MODELS

FACE = "face_detection_short_range.tflite"


@pytest.fixture
def models_copy(tmp_path: Path) -> Path:
    """A private copy of the manifest and the small face model."""
    shutil.copy(MODELS / "manifest.yaml", tmp_path / "manifest.yaml")
    shutil.copy(MODELS / FACE, tmp_path / FACE)
    return tmp_path


def test_manifest_lists_every_shipped_model_with_its_sha256() -> None:
    manifest = read_manifest(MODELS)
    for file in (FACE, "nanodet_g416_int8.tflite", "nanodet_g416_fp32.tflite"):
        assert file in manifest
        assert len(manifest[file].sha256) == 64
        assert runtime.sha256_file(MODELS / file) == manifest[file].sha256


def test_verified_model_loads_once_and_runs(models_copy: Path) -> None:
    store = ModelStore(VisionConfig(models_dir=str(models_copy), threads=1))
    model = store.load(FACE)
    assert store.load(FACE) is model  # built once, reused
    out = model.run(np.zeros((1, 128, 128, 3), np.float32))
    assert out["regressors"].shape == (1, 896, 16)
    assert out["classificators"].shape == (1, 896, 1)
    assert model.invoke_ms > 0
    assert store.loaded() == {FACE: read_manifest(models_copy)[FACE].sha256}


def test_corrupted_model_is_refused_naming_the_file_and_the_fix(models_copy: Path) -> None:
    path = models_copy / FACE
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte somewhere in the weights
    path.write_bytes(bytes(data))
    store = ModelStore(VisionConfig(models_dir=str(models_copy)))
    with pytest.raises(ModelError) as err:
        store.load(FACE)
    message = str(err.value)
    assert str(path) in message
    assert "sha256" in message and "reinstall" in message.lower()


def test_missing_and_unlisted_models_are_refused(models_copy: Path) -> None:
    store = ModelStore(VisionConfig(models_dir=str(models_copy)))
    with pytest.raises(ModelError, match=r"nanodet_g416_int8\.tflite.*reinstall"):
        store.load("nanodet_g416_int8.tflite")  # listed, but the file is not in the copy
    with pytest.raises(ModelError, match="not listed"):
        store.load("other.tflite")
    (models_copy / "manifest.yaml").unlink()
    with pytest.raises(ModelError, match=r"manifest\.yaml is missing"):
        ModelStore(VisionConfig(models_dir=str(models_copy))).load(FACE)


def test_no_runtime_installed_names_the_pip_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def no_tflite(name: str, *args: object, **kwargs: object) -> object:
        if name.startswith(("ai_edge_litert", "tflite_runtime")):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(runtime, "_runtime", None)
    monkeypatch.setattr(builtins, "__import__", no_tflite)
    monkeypatch.setattr(runtime.importlib, "import_module", lambda name: no_tflite(name))
    with pytest.raises(RuntimeUnavailable, match=r"deskwatch\[litert\]"):
        runtime.load_runtime()


def test_litert_is_the_default_runtime() -> None:
    assert runtime.load_runtime().name == "ai-edge-litert"


def test_default_models_dir_is_the_checkout_in_development(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DESKWATCH_MODELS_DIR", raising=False)
    if runtime.SYSTEM_MODELS_DIR.joinpath("manifest.yaml").exists():
        pytest.skip("an installed /usr/share/deskwatch/models takes precedence here")
    assert runtime.default_models_dir() == MODELS
    monkeypatch.setenv("DESKWATCH_MODELS_DIR", "/nonexistent-models")
    assert runtime.default_models_dir() == MODELS  # an override without a manifest is not used


def test_labels_in_another_order_are_refused(tmp_path: Path) -> None:
    import hashlib

    import yaml

    from deskwatch.vision.pipeline import LABELS_FILE, check_labels

    manifest = yaml.safe_load((MODELS / "manifest.yaml").read_text())
    lines = (MODELS / LABELS_FILE).read_text().splitlines()
    assert lines[0] == "person" and lines[67] == "cell phone"
    check_labels(ModelStore(VisionConfig(models_dir=str(MODELS))))  # the shipped file is fine
    lines[41], lines[67] = lines[67], lines[41]  # cup <-> cell phone
    text = ("\n".join(lines) + "\n").encode()
    (tmp_path / LABELS_FILE).write_bytes(text)
    manifest["files"][LABELS_FILE]["sha256"] = hashlib.sha256(text).hexdigest()
    (tmp_path / "manifest.yaml").write_text(yaml.safe_dump(manifest))
    with pytest.raises(ModelError, match="COCO classes"):
        check_labels(ModelStore(VisionConfig(models_dir=str(tmp_path))))


def _mapped_kb(path: Path) -> tuple[int, int]:
    """(mapped, resident) kB of this process's mappings of the file at ``path`` (not of another
    copy of the same model: the session's pipeline has the shipped one mapped)."""
    size = rss = 0
    current = ""
    with open("/proc/self/smaps", encoding="utf-8") as fh:
        for line in fh:
            head = line.split()
            if head and "-" in head[0] and ":" not in head[0]:
                current = head[5] if len(head) >= 6 else ""
            elif head and head[0] in ("Size:", "Rss:") and current == str(path):
                if head[0] == "Size:":
                    size += int(head[1])
                else:
                    rss += int(head[1])
    return size, rss


def test_a_loaded_model_keeps_none_of_its_file_resident_and_runs_the_same(models_copy: Path) -> None:
    """The weights are packed by XNNPACK at allocate_tensors; the file's pages are then
    dropped (issue 13) and the interpreter gives bit for bit what one built from the bytes gives."""
    nanodet = "nanodet_g416_int8.tflite"
    shutil.copy(MODELS / nanodet, models_copy / nanodet)
    store = ModelStore(VisionConfig(models_dir=str(models_copy), threads=1))
    model = store.load(nanodet)
    mapped, resident = _mapped_kb(models_copy / nanodet)
    assert mapped >= 3800  # the interpreter maps the 3.9 MB file (no copy of it on the heap) ...
    assert resident < 256  # ... and none of it stays resident (before: all of it)
    rng = np.random.default_rng(7)
    tensor = rng.integers(0, 256, model.input_shape, dtype=np.uint8).astype(model.input_dtype)
    out = model.run(tensor)
    assert _mapped_kb(models_copy / nanodet)[1] < 256  # running it reads none of the released pages
    reference = runtime.load_runtime().interpreter_class(
        model_content=(models_copy / nanodet).read_bytes(), num_threads=1
    )
    reference.allocate_tensors()
    reference.set_tensor(next(iter(model.inputs.values()))["index"], tensor)
    reference.invoke()
    for name, detail in model.outputs.items():
        assert np.array_equal(out[name], reference.get_tensor(detail["index"])), name


def test_the_interpreter_runs_the_verified_file_even_if_the_path_is_replaced(models_copy: Path) -> None:
    """Hashed through a descriptor, mapped through the same descriptor: a file renamed over
    the path after the check is not what the interpreter runs."""
    store = ModelStore(VisionConfig(models_dir=str(models_copy), threads=1))
    real_open = runtime.os.open

    def swap_after_open(path: object, flags: int, *args: object) -> int:
        fd = real_open(path, flags, *args)  # type: ignore[arg-type]
        if str(path).endswith(FACE):
            impostor = models_copy / "impostor"
            impostor.write_bytes(b"not a model at all" * 100)
            impostor.replace(models_copy / FACE)
        return fd

    runtime.os.open = swap_after_open  # type: ignore[assignment]
    try:
        model = store.load(FACE)
    finally:
        runtime.os.open = real_open
    assert model.run(np.zeros((1, 128, 128, 3), np.float32))["regressors"].shape == (1, 896, 16)


def test_run_reading_sees_what_run_returns_without_copies(models_copy: Path) -> None:
    """The detectors run several times a frame read their outputs in place (issue 12's
    overhead_ratio): the same numbers as run()'s copies, from a uint8 image written
    straight into the float input."""
    model = ModelStore(VisionConfig(models_dir=str(models_copy), threads=1)).load(FACE)
    image = np.random.default_rng(3).integers(0, 256, (128, 128, 3), dtype=np.uint8)
    copies = model.run(image.astype(np.float32)[None])
    seen = model.run_reading(image, lambda out: {k: v.copy() for k, v in out.items()})
    assert copies.keys() == seen.keys()
    for name in copies:
        assert np.array_equal(copies[name], seen[name]), name


def test_a_view_kept_past_run_reading_stops_the_next_run_loudly(models_copy: Path) -> None:
    """A reader that keeps a view instead of copying cannot silently see the next frame's
    numbers: the interpreter refuses to run while the view exists."""
    model = ModelStore(VisionConfig(models_dir=str(models_copy), threads=1)).load(FACE)
    image = np.zeros((128, 128, 3), np.uint8)
    kept = model.run_reading(image, lambda out: out["regressors"])
    with pytest.raises(RuntimeError):
        model.run_reading(image, lambda out: None)
    del kept
    assert model.run_reading(image, lambda out: out["regressors"].shape) == (1, 896, 16)
