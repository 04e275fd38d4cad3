"""``make demo``: the daemon end to end against a real local broker.

Starts Mosquitto on a free loopback port, writes a demo config (replay camera on
the bundled public-domain frames, a scan every few seconds), runs ``deskwatch run``
as a child process (its log lines show what an operator sees in the journal),
subscribes like the central side does, prints each message as the broker delivers
it and saves evidence JPEGs to ``demo-out/evidence/``. Stops after ``--seconds`` or
Ctrl-C, and exits non-zero if no scan record arrived.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from deskwatch_dev.devservers import MOSQUITTO, TempMosquitto

REPO = Path(__file__).resolve().parents[2]
FRAMES = REPO / "demo" / "frames"


def prepare_frames(out: Path, burst: int) -> Path:
    """Each demo scene repeated ``burst`` times, so one scan's burst sees one scene."""
    frames, derived = out / "frames", out / "derived"
    for d in (frames, derived):  # derived scenes stay out of the replayed directory
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    worker = np.asarray(Image.open(FRAMES / "01_worker_at_desk.jpg").convert("RGB"))
    empty = FRAMES / "02_empty_desk.jpg"
    dark = derived / "dark_room.jpg"
    Image.fromarray((worker.astype(np.float32) * 0.1).astype(np.uint8)).save(dark, quality=90)
    covered = derived / "covered_lens.jpg"
    rng = np.random.default_rng(7)
    noise = rng.normal(6, 1.2, worker.shape).clip(0, 255).astype(np.uint8)
    Image.fromarray(noise).save(covered, quality=90)
    scenes = [FRAMES / "01_worker_at_desk.jpg", empty, empty, dark, covered]
    n = 0
    for scene in scenes:
        for _ in range(burst):
            os.symlink(scene.resolve(), frames / f"{n:03d}{scene.suffix}")
            n += 1
    return frames


def write_config(out: Path, port: int, frames: Path, burst: int, interval: int) -> Path:
    cfg = out / "config.yaml"
    cfg.write_text(f"""\
# Written by the demo; see config.example.yaml for every key.
device: {{id: desk-demo, site: demo-site, worker_id: w-demo}}
mqtt:
  host: 127.0.0.1
  port: {port}
  tls: {{enabled: false}}   # plain MQTT is allowed to a loopback broker only
camera:
  backend: replay
  source: {frames}
  burst_frames: {burst}
  burst_seconds: 0.6
schedule:
  timezone: UTC
  shifts: [{{days: [mon, tue, wed, thu, fri, sat, sun], start: "00:00", end: "24:00"}}]
  mode: interval
  interval_seconds: {interval}
  # a development machine's clock may not be synchronised (a container): scan by it as it is
  require_synced_clock: false
policy:
  profile: full
  rules:
    away_from_desk: {{confirm_after_seconds: 4}}   # 20 s by default; shorter for the demo's pace
service:
  health_interval_seconds: 10
state_dir: {out / "state"}
""")
    return cfg


class Listener:
    """Subscribes like the central side and prints what arrives."""

    def __init__(self, port: int, out: Path):
        import paho.mqtt.client as mqtt

        self.out = out
        self.counts: dict[str, int] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="demo-central", protocol=mqtt.MQTTv5)
        # retainAsPublished: show the retain flag as the device set it, not only on replay
        opts = mqtt.SubscribeOptions(qos=1, retainAsPublished=True)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe("deskwatch/v1/#", options=opts)
        self.client.on_message = self.on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        parts = msg.topic.split("/")
        kind = parts[4] if len(parts) > 4 else msg.topic
        with self.lock:
            self.counts[kind] = self.counts.get(kind, 0) + 1
        if kind == "evidence":
            path = self.out / "evidence" / f"{parts[5]}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(msg.payload)
            print(
                f"  <- evidence {parts[5][:13]}… {len(msg.payload)} B saved to {path.relative_to(REPO) if path.is_relative_to(REPO) else path}"
            )
            return
        try:
            body = json.loads(msg.payload)
        except ValueError:
            print(f"  <- {msg.topic}: {len(msg.payload)} bytes (not JSON)")
            return
        if kind == "event":
            ev = body.get("evidence") or {}
            print(
                f"  <- EVENT {body.get('type')} conf {body.get('confidence')} seq {body.get('seq')} "
                f"evidence {str(ev.get('bytes')) + ' B' if ev else 'none'}{' (replayed)' if body.get('replayed') else ''}"
            )
        elif kind == "scan":
            found = ", ".join(str(f) for f in body.get("findings") or [])
            print(
                f"  <- scan {str(body.get('scan_id'))[:13]}… {body.get('outcome')}"
                f"{': ' + found if found else ''} (persons {body.get('persons')}, frames {body.get('frames')})"
            )
        elif kind == "status":
            print(f"  <- status {body.get('state')} (session {body.get('session')}, retained={bool(msg.retain)})")
        elif kind == "health":
            inf = body.get("inference_ms") or {}
            print(
                f"  <- health: scans {body.get('scans')}, inference p50 {inf.get('p50')} ms, "
                f"outbox depth {(body.get('outbox') or {}).get('depth')}, camera {body.get('camera')}"
            )
        else:
            print(f"  <- {kind}: {msg.payload[:120]!r}")

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="make demo", description=__doc__)
    ap.add_argument("--seconds", type=float, default=60.0, help="stop after this long (default 60)")
    ap.add_argument("--interval", type=int, default=5, help="seconds between scans (default 5)")
    ap.add_argument("--out", default=str(REPO / "demo-out"), help="where config, state and evidence go")
    args = ap.parse_args(argv)

    out = Path(args.out).resolve()
    shutil.rmtree(out / "state", ignore_errors=True)
    shutil.rmtree(out / "evidence", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    burst = 3
    if not os.path.exists(MOSQUITTO):
        sys.exit("demo: mosquitto is not installed; run 'make install' (it installs Debian's mosquitto)")
    broker = TempMosquitto().start()
    port = broker.port
    print(f"demo: mosquitto listening on 127.0.0.1:{port}")
    daemon: subprocess.Popen[bytes] | None = None
    listener = None
    try:
        frames = prepare_frames(out, burst)
        cfg = write_config(out, port, frames, burst, args.interval)
        listener = Listener(port, out)
        print(
            f"demo: running the daemon on {FRAMES.relative_to(REPO)} (+ a dark and a covered frame), "
            f"a scan every {args.interval} s, for {args.seconds:.0f} s (Ctrl-C stops)"
        )
        daemon = subprocess.Popen([sys.executable, "-m", "deskwatch", "run", "--config", str(cfg)])
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline and daemon.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        print("\ndemo: interrupted")
    finally:
        code = None
        if daemon is not None:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
                try:
                    code = daemon.wait(15)
                except subprocess.TimeoutExpired:
                    daemon.kill()
                    code = daemon.wait()
            else:
                code = daemon.returncode
        time.sleep(0.5)  # let the clean 'offline' status arrive
        if listener is not None:
            listener.stop()
        broker.stop()
    counts = listener.counts if listener else {}
    print(f"demo: daemon exited with {code}; received {json.dumps(counts, sort_keys=True)}")
    evidence = out / "evidence"
    if evidence.exists():
        print(f"demo: evidence thumbnails in {evidence}")
    if not counts.get("scan"):
        print("demo: FAILED: no scan record reached the broker", file=sys.stderr)
        return 1
    return 0 if code == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
