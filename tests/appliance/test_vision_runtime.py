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
