"""``deskwatch bench`` on arm64: the installed image in the emulator, beside this machine.

``python -m deskwatch_dev.vmtest bench`` (``make vm-bench``; about 35 minutes with one run, not in CI)
boots the appliance image in qemu-system-aarch64 (:mod:`deskwatch_dev.vm`, a Cortex-A72
like a Pi 4's), waits for the daemon to reach READY, stops it so nothing competes, and runs
the installed ``deskwatch bench --json`` on a few of the repository's photos carried into the
machine, then :mod:`deskwatch_dev.modelmem` (what each model adds to RSS). The results come
back on the autoboot FAT partition. The same bench on the same photos runs here first, so
both architectures are compared on identical input.

The memory figures are real arm64 ones: a real arm64 kernel reports the RSS of the arm64
wheels and XNNPACK's arm64 kernels with their own weight packing. The times are not: every
instruction is emulated (TCG), tens of times slower than a Pi, so no time from the guest
is a Pi timing. One memory figure depends on time: in a whole scan the camera thread keeps
its real pace (``camera.burst_seconds``) while the emulated analysis takes tens of seconds a
frame, so every frame of the burst waits in memory at once; ``bursts.peak_rss_mb`` from the
guest is that worst case (up to four 1280x720 frames, 11 MB, more than a Pi would hold).
``peak_rss_mb`` (one frame, every model loaded) does not depend on time.

The ten default photos take the emulated bench 27-34 minutes a run (measured at load 2-5;
three photos: 13 minutes); ``--bench-args``
defaults to ``--no-hog --no-faceid`` (dlib's HOG and encoder take minutes a face when
emulated): the RSS figures do not depend on them (both are measured after the peaks), but
the JSON then lacks ``identity`` (BlazeFace + encoder vs HOG) and ``identity_backends``
(both backends per face, genuine/impostor distances, liveness).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from deskwatch_dev import vm, vmtest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
# faces (two pairs of the same person, one photo with two faces), phones in a hand and on a
# desk, eating, three people, an empty scene: every stage runs, the phone stage included
PHOTOS = (
    "eat_02.jpg",
    "empty_04.jpg",
    "face_01.jpg",
    "face_02.jpg",
    "face_03.jpg",
    "multi_06.jpg",
    "multi_07.jpg",
    "phone_desk_01.jpg",
    "phone_hand_01.jpg",
    "single_03.jpg",
)
BENCH_ARGS = "--no-hog --no-faceid"
GUEST_PHOTOS = "usr/share/deskwatch-vmtest/bench-photos"
GUEST_MODELMEM = "usr/local/lib/deskwatch-vmtest/modelmem.py"
RESULTS = "vmtest"  # the folder on the autoboot partition the guest writes into
GUEST_SITE = "opt/deskwatch/venv/lib/python3.11/site-packages"
# the wheels whose builds differ by architecture and hold the memory: compared by version
PACKAGES = ("ai-edge-litert", "numpy", "pillow", "opencv-python-headless", "dlib-bin", "pynacl")
# (label, path in the bench JSON) of the figures printed side by side
FIGURES = (
    ("peak RSS, one frame, every model loaded (MB)", "peak_rss_mb"),
    ("peak RSS, whole 5-frame scans (MB)", "bursts.peak_rss_mb"),
    ("bench process peak RSS (MB)", "process_peak_rss_mb"),
    ("frames timed", "frames"),
    ("scan p50 (ms)", "scan_ms.p50"),
    ("scan p95 (ms)", "scan_ms.p95"),
    ("whole scan p50 (ms)", "bursts.scan_ms.p50"),
    ("inside models p50 (ms)", "inside_models_ms.p50"),
    ("enrolled from", "identity_enrolled_from"),
)


def photo_set(directory: Path, names: tuple[str, ...] | None) -> list[Path]:
    """The photos to carry: ``names`` in ``directory`` (all of its photos when None)."""
    if names is None:
        return sorted(p for p in directory.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    missing = [n for n in names if not (directory / n).is_file()]
    if missing:
        raise SystemExit(f"not in {directory}: {', '.join(missing)}")
    return [directory / n for n in names]


def stage_photos(photos: list[Path], out: Path) -> Path:
    """The photos in a folder of their own, with the lines of ``labels.yaml`` that are theirs
    (``deskwatch bench`` reads the labels for the identity backends' figures)."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.iterdir():
        old.unlink()
    for path in photos:
        (out / path.name).write_bytes(path.read_bytes())
    labels = photos[0].parent / "labels.yaml" if photos else None
    if labels is not None and labels.is_file():
        doc = yaml.safe_load(labels.read_text(encoding="utf-8")) or {}
        names = {p.name for p in photos}
        doc["files"] = [f for f in doc.get("files", []) if f.get("file") in names]
        (out / "labels.yaml").write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return out


def bench_command(python: str, photos: str, bench_args: str) -> list[str]:
    """The bench as both machines run it: no device config (the defaults: 1280x720 frames,
    bursts of 5), the ``full`` profile the bench sets itself."""
    fixed = ["-m", "deskwatch", "bench", "--config", "/nonexistent/config.yaml", "--json", "--photos", photos]
    return [python, *fixed, *shlex.split(bench_args)]


def native_runs(photos: Path, bench_args: str, runs: int) -> list[dict[str, Any]]:
    """The same bench on this machine, from this checkout, ``runs`` times."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(REPO / d) for d in ("daemon", "contract", "tools")))
    out = []
    for n in range(1, runs + 1):
        load = os.getloadavg()[0]
        t0 = time.monotonic()
        proc = subprocess.run(
            bench_command(sys.executable, str(photos), bench_args), env=env, capture_output=True, text=True
        )
        if proc.returncode != 0:
            raise RuntimeError(f"the native bench failed ({proc.returncode}): {proc.stderr[-2000:]}")
        result = json.loads(proc.stdout)
        result["_wall_s"], result["_load"] = round(time.monotonic() - t0, 1), load
        print(f"native bench {n}: {result['_wall_s']} s, load {load:.2f}", flush=True)
        out.append(result)
    mem = subprocess.run(
        [sys.executable, "-m", "deskwatch_dev.modelmem", "--json"], env=env, capture_output=True, text=True
    )
    if mem.returncode == 0:
        out.append({"_modelmem": json.loads(mem.stdout)})
    return out


def _normal(name: str) -> str:
    return name.lower().replace("_", "-")


def dist_versions(site: Path) -> dict[str, str]:
    """Every distribution in a site-packages folder, by its ``*.dist-info`` name: name -> version."""
    out = {}
    for info in site.glob("*.dist-info"):
        name, _, version = info.name.removesuffix(".dist-info").partition("-")
        out[_normal(name)] = version
    return out


def version_lines(guest: dict[str, str], host: dict[str, str]) -> list[str]:
    """The architecture-dependent wheels, arm64 beside x86-64; a difference is said."""
    cells = []
    for name in PACKAGES:
        a, x = guest.get(name, "-"), host.get(name, "-")
        cells.append(f"{name} {a}" if a == x else f"{name} arm64 {a} / x86-64 {x} (DIFFERENT)")
    return ["wheels: " + ", ".join(cells)]


def put_guest_files(root: Path, photos: Path) -> list[Path]:
    """The photos and the per-model probe into the root file system; returns what was added."""
    added = []
    for src in sorted(photos.iterdir()):
        dest = root / GUEST_PHOTOS / src.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(src.read_bytes())
        added.append(dest)
    probe = root / GUEST_MODELMEM
    probe.parent.mkdir(parents=True, exist_ok=True)
    probe.write_bytes((HERE / "modelmem.py").read_bytes())
    probe.chmod(0o755)
    added.append(probe)
    return added


def bench_scenario(
    root: Path,
    work: Path,
    photos: Path,
    bench_args: str,
    runs: int,
    *,
    cpu: str = vm.CPU,
    kernel_args: str = "",
    echo: vmtest.Echo | None = None,
) -> tuple[vmtest.Report, dict[str, Any]]:
    """Boot, READY, the daemon stopped, ``runs`` benches and the model probe; their outputs."""
    pki = vmtest.make_pki(work / "pki")
    added = vmtest.guest_files(root, pki) + put_guest_files(root, photos)
    disk = work / "disk.img"
    try:
        report = vmtest.Report(vmtest.build_disk(disk, root, work, pki, scenario="bench", kernel_args=kernel_args))
    finally:
        for path in reversed(added):
            path.unlink(missing_ok=True)
        (root / GUEST_PHOTOS).rmdir()
    part = vm.partitions(disk)[vm.AUTOBOOT]
    vm.put_fat_file(disk, part, f"{RESULTS}/bench-args", bench_args.encode() + b"\n")
    vm.put_fat_file(disk, part, f"{RESULTS}/bench-runs", f"{runs}\n".encode())
    boot = vm.Machine(disk, work, cpu=cpu).power_on(timeout=900 + runs * 3600, on_line=echo)
    report.boots.append(boot)
    report.timings["power_on_to_off_s"] = round(boot.seconds, 1)
    outputs: dict[str, Any] = {}
    for name in [f"bench-{n}" for n in range(1, runs + 1)] + ["modelmem"]:
        raw = vm.read_fat_file(disk, part, f"{RESULTS}/{name}.json")
        err = vm.read_fat_file(disk, part, f"{RESULTS}/{name}.err")
        (work / f"arm64-{name}.json").write_bytes(raw or b"")
        (work / f"arm64-{name}.err").write_bytes(err or b"")
        try:
            outputs[name] = json.loads(raw or b"")
        except ValueError:
            outputs[name] = None
    return report, outputs


def figure(result: dict[str, Any] | None, path: str) -> Any:
    """``result["a"]["b"]`` for ``"a.b"``; None where it is missing."""
    value: Any = result
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


def side_by_side(arm: list[dict[str, Any] | None], x86: list[dict[str, Any]]) -> list[str]:
    """The figures of every run, arm64 first, one line each."""
    heads = [f"arm64 #{n}" for n in range(1, len(arm) + 1)] + [f"x86-64 #{n}" for n in range(1, len(x86) + 1)]
    lines = [f"{'':<46}" + "".join(f"{h:>15}" for h in heads)]
    for label, path in FIGURES:
        cells = [figure(r, path) for r in [*arm, *x86]]
        lines.append(f"{label:<46}" + "".join(f"{'-' if c is None else c!s:>15}" for c in cells))
    return lines


def per_model(arm: dict[str, Any] | None, x86: dict[str, Any] | None) -> list[str]:
    """RssAnon each model adds when built (and at its first invoke), arm64 beside x86-64."""
    if not arm and not x86:
        return []
    by_file: dict[str, dict[str, Any]] = {}
    for arch, probe in (("arm", arm), ("x86", x86)):
        for m in (probe or {}).get("models", []):
            by_file.setdefault(m["file"], {})[arch] = m
    lines = [f"{'RssAnon added (MB): load + first invoke':<48}{'arm64':>16}{'x86-64':>16}{'arm - x86':>11}"]
    for file, got in by_file.items():
        cells, totals = [], []
        for arch in ("arm", "x86"):
            m = got.get(arch)
            if m is None:
                cells.append(f"{'-':>16}")
                continue
            load, first = m["load"]["RssAnon_mb"], m.get("first_invoke", {}).get("RssAnon_mb", 0.0)
            totals.append(load + first)
            cells.append(f"{load:>8.1f} + {first:>4.1f}" + (" b" if m.get("borrowed") else "  "))
        diff = f"{totals[0] - totals[1]:>+11.1f}" if len(totals) == 2 else f"{'':>11}"
        lines.append(f"{file:<48}" + "".join(cells) + diff)
    for arch, probe in (("arm64", arm), ("x86-64", x86)):
        if probe:
            lines.append(
                f"{arch}: {probe['runtime']}, Python {probe['python']}; every model held and invoked once: "
                f"VmRSS {probe['after_first_invokes']['VmRSS']:.1f} MB, RssAnon "
                f"{probe['after_first_invokes']['RssAnon']:.1f} MB (b: borrowed, let go after use)"
            )
    return lines


def print_report(
    report: vmtest.Report,
    outputs: dict[str, Any],
    native: list[dict[str, Any]],
    install_s: float,
    work: Path,
    root: Path,
) -> None:
    marks = report.markers
    arm = [v for k, v in outputs.items() if k.startswith("bench-")]
    x86 = [r for r in native if "_modelmem" not in r]
    x86_probe = next((r["_modelmem"] for r in native if "_modelmem" in r), None)
    print()
    print(f"install layer {install_s:.0f} s; disk {report.timings.get('disk_build_s')} s; power-on to off "
          f"{report.timings.get('power_on_to_off_s')} s (READY at uptime {marks.get('ready_uptime', '-')} s)")  # fmt: skip
    for n in range(1, len(arm) + 1):
        print(f"arm64 bench {n}: exit {marks.get(f'bench-{n}_exit', '-')}, {marks.get(f'bench-{n}_seconds', '-')} s")
    print(
        f"guest CPU: {marks.get('cpu_model', '?')} (part {marks.get('cpu_part', '?')}), {marks.get('cpus', '?')} "
        f"cores, features: {marks.get('cpu_features', '?')}; {marks.get('mem_total', '?')}; {marks.get('kernel', '?')}; "
        f"transparent huge pages: {marks.get('transparent_hugepage', '?')}"
    )
    runtimes = {"arm64": {r.get("runtime") for r in arm if r}, "x86-64": {r.get("runtime") for r in x86}}
    print("runtime: " + "; ".join(f"{k} {', '.join(sorted(str(v) for v in vs))}" for k, vs in runtimes.items()))
    from importlib import metadata

    host = {_normal(d.metadata["Name"]): d.version for d in metadata.distributions()}
    for line in version_lines(dist_versions(root / GUEST_SITE), host):
        print(line)
    print()
    for line in side_by_side(arm, x86):
        print(line)
    print()
    for line in per_model(outputs.get("modelmem"), x86_probe):
        print(line)
    print()
    print(
        "The arm64 memory figures are real (an arm64 kernel's RSS of the arm64 wheels and kernels); the arm64 "
        "TIMES ARE EMULATED (qemu TCG), many times slower than a Raspberry Pi: not Pi timings. The whole-scan "
        "peak on arm64 holds every frame of the burst at once: the camera keeps real time while the emulated "
        "analysis of one frame takes tens of seconds, so all five wait (up to 4 x 2.7 MB more than on a Pi)."
    )
    print(
        f"JSON: {work}/arm64-bench-*.json, {work}/arm64-modelmem.json, {work}/x86-bench.json; console: {work}/console.log"
    )
