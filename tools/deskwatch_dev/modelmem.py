#!/usr/bin/env python3
"""What each model adds to the daemon's memory (issue 13: peak RSS with every model loaded).

Builds the vision stage as ``deskwatch bench`` does (the ``full`` profile, every model it
loads) with each interpreter's construction watched: the process's RssAnon / RssFile in MB
before and after each model is built (tensors allocated, XNNPACK's packed weights made, the
mapped file pages released), then after the first ``invoke()`` of each on a zero input (the
work buffers an operator allocates only when it first runs). The models the stage loads
only while it needs them (the presence check's hands, held while the desk is empty and the
pose model let go) are built, invoked and let go once each at the end (``borrowed``); for
them ``held_mb`` is the growth while they are out.

The growth of one model depends on what was loaded before it (heap reuse, the runtime's
shared buffers), so the figures are for this order, the daemon's own. Runs with nothing but
the installed daemon (no repository): on the appliance, or inside the emulated one,

    /opt/deskwatch/venv/bin/python modelmem.py [--json]

and here ``PYTHONPATH=daemon:contract:tools .venv/bin/python -m deskwatch_dev.modelmem``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from typing import Any

FIELDS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")


def status_mb() -> dict[str, float]:
    """This process's memory lines from ``/proc/self/status``, in MB. (``daemonmem.parse_status``
    reads the same lines of another process; this file is carried alone into the appliance,
    where ``deskwatch_dev`` is not installed, so it does not import it.)"""
    out: dict[str, float] = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in FIELDS:
                out[key] = round(int(value.split()[0]) / 1024, 2)
    return out


def growth(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {f"{k}_mb": round(after[k] - before[k], 2) for k in ("RssAnon", "RssFile") if k in before and k in after}


def zero_inputs(model: Any) -> list[Any]:
    import numpy as np

    return [np.zeros([int(v) for v in d["shape"]], dtype=d["dtype"]) for d in model.inputs.values()]


def measure() -> dict[str, Any]:
    from deskwatch.app import build_vision
    from deskwatch.commands.bench import _bench_config
    from deskwatch.vision import runtime as rt_module
    from deskwatch.vision.memory import lean_process, trim_heap

    lean_process()  # as the daemon and the bench do, before any thread starts
    start = status_mb()
    rt = rt_module.load_runtime(None)
    imported = status_mb()
    builds: list[dict[str, Any]] = []
    original = rt_module.ModelStore._build

    def watched(store: rt_module.ModelStore, file: str) -> rt_module.Model:
        trim_heap()
        before = status_mb()
        model = original(store, file)
        builds.append({"file": file, "load": growth(before, status_mb())})
        return model

    with tempfile.TemporaryDirectory(prefix="deskwatch-modelmem-") as state_dir:
        cfg = _bench_config(argparse.Namespace(config="/nonexistent", precision=None), state_dir)
        setattr(rt_module.ModelStore, "_build", watched)  # noqa: B010 (mypy refuses a method assigned)
        try:
            vision = build_vision(cfg)
            loaded = status_mb()
            held = dict(vision.store._models)
            for entry in builds:
                model = held.get(entry["file"])
                if model is None:
                    continue
                trim_heap()
                before = status_mb()
                model.run(*zero_inputs(model))
                entry["first_invoke"] = growth(before, status_mb())
            invoked = status_mb()
            for file in sorted(set(vision.store.loaded()) - set(held)):
                trim_heap()
                before = status_mb()
                with vision.store.borrowed(file) as model:
                    model.run(*zero_inputs(model))
                    out = status_mb()
                builds[-1]["borrowed"] = True
                builds[-1]["held_mb"] = round(out["RssAnon"] - before["RssAnon"], 2)
        finally:
            setattr(rt_module.ModelStore, "_build", original)  # noqa: B010
        vision.close()
    return {
        "machine": platform.machine(),
        "python": platform.python_version(),
        "runtime": f"{rt.name} {rt.version}",
        "threads": cfg.vision.threads,
        "start": start,
        "runtime_imported": imported,
        "models_loaded": loaded,
        "after_first_invokes": invoked,
        "models": builds,
    }


def print_report(r: dict[str, Any]) -> None:
    print(f"{r['machine']}, Python {r['python']}, {r['runtime']}, {r['threads']} threads")
    print(
        f"  RssAnon at start {r['start']['RssAnon']:.1f} MB, runtime imported {r['runtime_imported']['RssAnon']:.1f} MB"
    )
    print(f"  {'model':<48} {'load anon':>9} {'file':>6} {'1st invoke':>10}")
    for m in r["models"]:
        first = m.get("first_invoke", {}).get("RssAnon_mb")
        note = f"  (borrowed: {m['held_mb']:.1f} MB while out)" if m.get("borrowed") else ""
        first_text = f"{first:10.2f}" if first is not None else f"{'-':>10}"
        print(f"  {m['file']:<48} {m['load']['RssAnon_mb']:9.2f} {m['load']['RssFile_mb']:6.2f} {first_text}{note}")
    print(
        f"  every model loaded: VmRSS {r['models_loaded']['VmRSS']:.1f} MB; after one invoke each "
        f"{r['after_first_invokes']['VmRSS']:.1f} MB (RssAnon {r['after_first_invokes']['RssAnon']:.1f})"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    result = measure()
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
