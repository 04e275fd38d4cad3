"""The real daemon's memory over many scans (issue 13: peak RSS with every model loaded).

``deskwatch bench`` measures whole scans inside the bench process; this runs what the
appliance runs - ``deskwatch run`` as a child process, against a throwaway Mosquitto on
loopback, the replay camera on the repo's photos, the worker enrolled (identity on), the
``full`` profile, a scan every 5 s - and reads the daemon's ``/proc/PID/status`` from
outside:

- at ``ready`` (the models loaded, the broker tried): VmHWM (the peak of loading) and
  VmRSS split into RssAnon / RssFile; then VmHWM is reset (``/proc/PID/clear_refs``);
- after each scan's log line: VmHWM since the previous one (that scan's peak, the idle
  time before it included) and RssAnon / RssFile, then VmHWM is reset again;
- at the end: the highest of those peaks (``scans_peak_rss_mb``) and the idle daemon's
  VmRSS / RssAnon / RssFile a second after the last scan.

Each photo is fitted into a camera-sized frame and made a burst of ``camera.burst_frames``
noisy frames (as ``deskwatch bench`` makes them), so that the replay camera walks one still
scene per scan (every burst taken whole, ``policy.end_settled_bursts: false``: a settled burst
would leave its last frames to the next scan, and the whole burst is the memory's worst case). ``--camera arrays`` (default): the frames are saved as ``.npy`` and the
replay camera of the daemon (started through this module) reads each into a fresh array, as
a Pi camera delivers one and as ``deskwatch bench`` feeds its whole scans;
``--camera jpeg``: saved as JPEG (quality 95) and decoded by the replay camera as it is, in
the burst's thread, alongside the analysis of the frame before (PIL's RGBX image, its
bytes and two arrays: ~12 MB at 1280x720 that a Pi camera never asks for). Slow: ~6 s a scan.

    PYTHONPATH=daemon:contract:tools .venv/bin/python -m deskwatch_dev.daemonmem [--scans 30] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

REPO = Path(__file__).resolve().parents[2]
PHOTOS = REPO / "tests" / "data" / "photos"
STATUS_FIELDS = ("VmHWM", "VmRSS", "RssAnon", "RssFile", "RssShmem")
WIDTH, HEIGHT, BURST = 1280, 720, 5
EVENT = re.compile(r"\bDESKWATCH_EVENT=(\w+)")


def parse_status(text: str) -> dict[str, float]:
    """The memory lines of a ``/proc/PID/status`` text in MB (kB / 1024), those present."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        fields = value.split()
        if key in STATUS_FIELDS and len(fields) == 2 and fields[1] == "kB" and fields[0].isdigit():
            out[key] = round(int(fields[0]) / 1024, 1)
    return out


def log_event(line: str) -> str | None:
    """The ``DESKWATCH_EVENT`` of one of the daemon's stderr log lines (``started``,
    ``scan``, ...), or None for a line without one."""
    m = EVENT.search(line)
    return m.group(1) if m else None


def read_status(pid: int) -> dict[str, float]:
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
        return parse_status(fh.read())


def reset_peak(pid: int) -> None:
    """Start the process's VmHWM afresh from its current RSS."""
    with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as fh:
        fh.write("5")


def prepare_frames(photos: list[Path], out: Path, arrays: bool) -> Path:
    """Each photo as a burst of BURST noisy camera-sized frames, in replay order."""
    import numpy as np
    from PIL import Image

    from deskwatch.commands.bench import _load_frame, camera_burst

    frames = out / "frames"
    frames.mkdir()
    for seed, path in enumerate(photos):
        for k, image in enumerate(camera_burst(_load_frame(path, WIDTH, HEIGHT), BURST, seed)):
            if arrays:
                np.save(frames / f"{seed:03d}_{k}.npy", image)
            else:
                Image.fromarray(image).save(frames / f"{seed:03d}_{k}.jpg", quality=95)
    return frames


def run_daemon_on_arrays(config: str) -> int:
    """``deskwatch run`` whose replay camera reads ``.npy`` frames: ``np.load`` into a fresh
    array, no decoder (what ``deskwatch bench``'s whole scans are fed)."""
    import numpy as np

    from deskwatch import cli
    from deskwatch.camera import replay

    def load_array(path: str | os.PathLike[str], **_options: object) -> np.ndarray:
        return np.asarray(np.load(path))

    replay.IMAGE_SUFFIXES.add(".npy")
    replay.load_image = load_array
    return cli.main(["run", "--config", config])


def write_config(out: Path, port: int, frames: Path) -> Path:
    cfg = out / "config.yaml"
    cfg.write_text(f"""\
device: {{id: desk-mem, site: mem-site, worker_id: w-mem}}
mqtt: {{host: 127.0.0.1, port: {port}, tls: {{enabled: false}}}}
camera: {{backend: replay, source: {frames}, width: {WIDTH}, height: {HEIGHT}, burst_frames: {BURST}}}
schedule:
  timezone: UTC
  shifts: [{{days: [mon, tue, wed, thu, fri, sat, sun], start: "00:00", end: "24:00"}}]
  mode: interval
  interval_seconds: 5
  # nobody synchronises this machine's clock (a container, CI, the test VM): scan by it as it is
  require_synced_clock: false
policy:
  profile: full
  end_settled_bursts: false
  rules: {{away_from_desk: {{confirm_after_seconds: 1}}}}
state_dir: {out / "state"}
""")
    return cfg


def enrol(cfg: Path, photos: list[Path]) -> str | None:
    """Enrol the worker from the first photo ``deskwatch enroll`` accepts on its own."""
    for path in photos:
        argv = [sys.executable, "-m", "deskwatch", "enroll", "--config", str(cfg), "--worker", "w-mem",
                "--images", str(path), "--consent", "--min-images", "1"]  # fmt: skip
        if subprocess.run(argv, capture_output=True, timeout=300).returncode == 0:
            return path.name
    return None


def watch(daemon: subprocess.Popen[str], scans: int, timeout: float) -> dict[str, Any]:
    """Follow the daemon's log; read its memory at ready and after each scan."""
    assert daemon.stderr is not None
    lines: list[str] = []
    events: list[tuple[str, float]] = []
    cond = threading.Condition()

    def reader(stream: IO[str]) -> None:
        for line in stream:
            with cond:
                lines.append(line.rstrip())
                kind = log_event(line)
                if kind is not None:
                    events.append((kind, time.monotonic()))
                    cond.notify_all()
        with cond:
            events.append(("eof", time.monotonic()))
            cond.notify_all()

    threading.Thread(target=reader, args=(daemon.stderr,), daemon=True).start()
    deadline = time.monotonic() + timeout
    result: dict[str, Any] = {"per_scan": []}
    seen = 0
    while True:
        with cond:
            while seen >= len(events):
                if not cond.wait(max(0.0, deadline - time.monotonic())):
                    raise TimeoutError("daemon too slow; its last lines:\n" + "\n".join(lines[-20:]))
            kind, _ = events[seen]
            seen += 1
        if kind == "eof":
            raise RuntimeError("the daemon stopped; its last lines:\n" + "\n".join(lines[-20:]))
        if kind == "started":
            result["ready"] = read_status(daemon.pid)
            reset_peak(daemon.pid)
        elif kind == "scan" and "ready" in result:
            result["per_scan"].append(read_status(daemon.pid))
            reset_peak(daemon.pid)
            if len(result["per_scan"]) >= scans:
                time.sleep(1.0)  # the scan's heap trim comes after its log line
                result["idle"] = read_status(daemon.pid)
                result["findings"] = sum(1 for ln in lines if log_event(ln) == "finding")
                return result


def summary(raw: dict[str, Any]) -> dict[str, Any]:
    per_scan = raw["per_scan"]
    peaks = [s["VmHWM"] for s in per_scan]
    top = max(range(len(peaks)), key=peaks.__getitem__)
    return {
        "scans": len(per_scan),
        "findings": raw["findings"],
        "load_peak_rss_mb": raw["ready"]["VmHWM"],
        "ready": {k: raw["ready"][k] for k in ("VmRSS", "RssAnon", "RssFile")},
        "scans_peak_rss_mb": peaks[top],
        "peak_scan": top + 1,
        "at_peak_scan_end": {k: per_scan[top][k] for k in ("VmRSS", "RssAnon", "RssFile")},
        "scan_peaks_mb": peaks,
        "idle_after": {k: raw["idle"][k] for k in ("VmRSS", "RssAnon", "RssFile")},
    }


def run(photos: Path, scans: int, arrays: bool) -> dict[str, Any]:
    from deskwatch_dev.devservers import TempMosquitto, stop_process

    paths = sorted(p for p in photos.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    if not paths:
        raise SystemExit(f"daemonmem: no photos in {photos}")
    with tempfile.TemporaryDirectory(prefix="deskwatch-daemonmem-") as tmp:
        out = Path(tmp)
        broker = TempMosquitto().start()
        daemon: subprocess.Popen[str] | None = None
        try:
            cfg = write_config(out, broker.port, prepare_frames(paths, out, arrays))
            enrolled = enrol(cfg, paths)
            env = {**os.environ, "DESKWATCH_LOG_TARGET": "stderr"}
            if arrays:  # this module starts the daemon (see run_daemon_on_arrays): tools/ on the path
                env["PYTHONPATH"] = os.pathsep.join(
                    [str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH", "")]
                )
                argv = [sys.executable, "-m", "deskwatch_dev.daemonmem", "--daemon-on-arrays", str(cfg)]
            else:
                argv = [sys.executable, "-m", "deskwatch", "run", "--config", str(cfg)]
            daemon = subprocess.Popen(argv, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
            raw = watch(daemon, scans, timeout=120 + 30 * scans)
        finally:
            if daemon is not None:
                stop_process(daemon, signal.SIGTERM, timeout=20)  # type: ignore[arg-type]
            broker.stop()
    camera = "replay, .npy arrays" if arrays else "replay, JPEG decoded"
    return {"photos": str(photos), "camera": camera, "identity_enrolled_from": enrolled} | summary(raw)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="daemonmem", description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", default=str(PHOTOS), help=f"directory of photos (default {PHOTOS})")
    parser.add_argument("--scans", type=int, default=30, help="scans to watch after ready (default 30)")
    parser.add_argument(
        "--camera", choices=("arrays", "jpeg"), default="arrays", help="frames as .npy arrays (default) or JPEG files"
    )
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--daemon-on-arrays", metavar="CONFIG", help=argparse.SUPPRESS)  # the child (see above)
    args = parser.parse_args(argv)
    if args.daemon_on_arrays:
        return run_daemon_on_arrays(args.daemon_on_arrays)
    if not sys.platform.startswith("linux"):
        print("daemonmem: needs Linux (/proc/PID/status and clear_refs)", file=sys.stderr)
        return 2
    r = run(Path(args.photos), max(1, args.scans), args.camera == "arrays")
    if args.json:
        print(json.dumps(r, indent=1))
        return 0
    print(
        f"deskwatch run ({r['camera']}), {r['scans']} scans ({r['findings']} findings), "
        f"enrolled from {r['identity_enrolled_from']}:\n"
        f"  loading peak {r['load_peak_rss_mb']} MB; ready {r['ready']['VmRSS']} MB "
        f"(anon {r['ready']['RssAnon']}, file {r['ready']['RssFile']})\n"
        f"  peak over the scans {r['scans_peak_rss_mb']} MB (scan {r['peak_scan']}; at its end anon "
        f"{r['at_peak_scan_end']['RssAnon']}, file {r['at_peak_scan_end']['RssFile']})\n"
        f"  idle after the last scan {r['idle_after']['VmRSS']} MB "
        f"(anon {r['idle_after']['RssAnon']}, file {r['idle_after']['RssFile']})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
