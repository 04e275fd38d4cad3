"""False findings under the variations a real camera adds to a scene:
``python -m deskwatch_dev.variants [DIR]`` (default: the repo's tests/data/photos).

A verdict that holds on a photo and flips on the same photo mirrored, darker, brighter,
with another gamma or white balance, re-compressed, noisier, out of focus, smaller, cropped
or tilted by 5 degrees was luck, not a measurement.
Each labelled photo is analysed as each variant (one frame, the shipped models and the
default ``full`` profile, through the policy as ``deskwatch scan`` does), as the file and
fitted into a 1280x720 camera frame as ``deskwatch bench`` does (``--sizes file`` for the
files only: what this tool measured before stop 25), and every finding its labels
contradict is listed:

- ``phone_use`` on a photo not labelled ``phone_in_use``;
- ``eating`` on a photo not labelled ``eating``;
- ``extra_person`` on a photo of one person (``persons: 1``, exact) or of nobody;
- ``away_from_desk`` on a photo with somebody in it;
- ``presentation_attack`` on any of them (they are photographs of real scenes; the
  synthetic attacks are ``deskwatch_dev.attacks``'s).

``--harsh`` applies seven worse variations instead (darker 0.4, JPEG q20, noise of sigma 16,
blur 3, a 70 % crop, tilted by 10 degrees either way): a figure to look for the next false
finding in, beyond what the accuracy test holds the verdicts to.

``--home`` applies what a camera at a real home desk gives instead (synthetic, from the
labelled photos): a Pi NoIR camera at night under an IR illuminator (near monochrome, bright
at the centre and falling off to the edges, skin glowing pale) and in daylight without an IR
filter (a strong pink-magenta cast), the worker backlit by a bright window (the camera exposes
for it: the room a silhouette, the pane and what was bright clipped), a dim room lit by the
monitor (blue light on one side, low light; and the same brought up by the camera's auto
exposure, noisier), a wide-angle lens's barrel distortion (a 120 and a 160 degree module) and
the worker at the frame's left or right edge, partly out of it (also through the 160 degree
lens). It also counts, per variant, the views judged too dark or covered to check
(``low_light``, ``camera_obstructed``): no accusation, no check either. Moved to the edge, a
worker who sat at the photo's side may be left as a sliver or not at all (the labels count no
slivers): an ``away_from_desk`` there can be what the picture shows, so look at such a view
before calling it false (on ../shared, 2026-12-01: 5 of the 11 edge views were so).

``--bursts N`` asks of each false finding what the supervisor would get: the view that made it
is scanned again as N camera bursts (``camera.burst_frames`` frames, each with its own sensor
noise, as ``deskwatch bench`` makes them; seeds 0..N-1) through the scan's burst analysis and
the policy, and the bursts that still report it are counted. A one-frame scan decides on one
noise pattern; a burst needs the finding in ``persistence`` of its frames. Only the views with
a false one-frame finding are scanned again (a view clear as one frame is not).

It prints one line per photo with a false finding (and what the true ones found), then
the totals per finding and per variant; ``--json`` prints the totals only. Exit status 0
either way: it is a figure, the tests hold the bars.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[2]


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, "JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"))


def _scaled(image: np.ndarray, gain: float, offset: float = 0.0) -> np.ndarray:
    return np.clip(image.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)


def _smaller(image: np.ndarray) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    return cv2.resize(image, (max(32, w * 3 // 4), max(32, h * 3 // 4)), interpolation=cv2.INTER_AREA)


def _cropped(image: np.ndarray, keep: float) -> np.ndarray:
    h, w = image.shape[:2]
    dy, dx = int(h * (1 - keep) / 2), int(w * (1 - keep) / 2)
    return image[dy : h - dy, dx : w - dx]


def _noisy(image: np.ndarray, sigma: float) -> np.ndarray:
    noise = np.random.default_rng(image.size).normal(0.0, sigma, image.shape)  # the same noise on every run
    return np.clip(image.astype(np.float32) + noise, 0, 255).astype(np.uint8)


def _blurred(image: np.ndarray, sigma: float) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(image, (0, 0), sigma)


def _tilted(image: np.ndarray, degrees: float) -> np.ndarray:
    import cv2

    h, w = image.shape[:2]
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(image, turn, (w, h), borderMode=cv2.BORDER_REFLECT)


VARIANTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "photo": lambda im: im,
    "mirrored": lambda im: im[:, ::-1],
    "darker": lambda im: _scaled(im, 0.6),
    "brighter": lambda im: _scaled(im, 1.3, 10),
    "gamma 1.6": lambda im: (255 * (im / 255.0) ** 1.6).astype(np.uint8),
    "warm light": lambda im: np.clip(im.astype(np.float32) * np.array([1.15, 1.0, 0.8], np.float32), 0, 255).astype(
        np.uint8
    ),
    "jpeg q40": lambda im: _jpeg(im, 40),
    "noise 8": lambda im: _noisy(im, 8.0),
    "blur 1.5": lambda im: _blurred(im, 1.5),
    "3/4 size": _smaller,
    "85 % crop": lambda im: _cropped(im, 0.85),
    "tilted +5": lambda im: _tilted(im, 5),
    "tilted -5": lambda im: _tilted(im, -5),
}

# ``--harsh``: a camera on a bad day, beyond what the accuracy test holds the verdicts to
# (a figure to look for the next false finding in, not a bar).
HARSH_VARIANTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "darker 0.4": lambda im: _scaled(im, 0.4),
    "jpeg q20": lambda im: _jpeg(im, 20),
    "noise 16": lambda im: _noisy(im, 16.0),
    "blur 3": lambda im: _blurred(im, 3.0),
    "70 % crop": lambda im: _cropped(im, 0.70),
    "tilted +10": lambda im: _tilted(im, 10),
    "tilted -10": lambda im: _tilted(im, -10),
}


def _radial(h: int, w: int) -> np.ndarray:
    """Each pixel's distance from the frame's centre, 1 at the corners."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.hypot((xx - (w - 1) / 2) / (w / 2), (yy - (h - 1) / 2) / (h / 2)) / np.sqrt(2.0)  # type: ignore[no-any-return]


def _noir_night(image: np.ndarray) -> np.ndarray:
    """A Pi NoIR camera at night under an IR illuminator: near monochrome (skin and fabric
    reflect the near infrared, so red-rich skin glows pale), bright at the centre where the
    illuminator points and falling off to the edges, a faint violet tint, the sensor's
    gain noise."""
    rgb = image.astype(np.float32)
    ir = 0.7 * rgb[..., 0] + 0.2 * rgb[..., 1] + 0.1 * rgb[..., 2]  # near infrared: red-rich surfaces bright
    ir = 255 * (ir / 255) ** 0.7  # the illuminator's glow lifts the mid tones (pale skin)
    falloff = np.clip(1.35 - 1.1 * _radial(*image.shape[:2]) ** 1.5, 0.15, 1.3)
    grey = ir * falloff
    out = np.stack([grey * 1.04, grey * 0.97, grey * 1.06], axis=-1)
    return _noisy(np.clip(out, 0, 255).astype(np.uint8), 6.0)


def _noir_day(image: np.ndarray) -> np.ndarray:
    """A Pi NoIR camera in daylight: no IR filter, so a strong pink-magenta cast, washed out
    (infrared adds to the red and blue channels everywhere)."""
    rgb = image.astype(np.float32)
    ir = rgb.mean(axis=-1, keepdims=True)
    out = rgb * np.array([0.75, 0.55, 0.7], np.float32) + ir * np.array([0.55, 0.25, 0.5], np.float32) + 12
    return np.clip(out, 0, 255).astype(np.uint8)


def _backlit(image: np.ndarray) -> np.ndarray:
    """The worker in front of a bright window: the camera exposes for the window, so the room
    and the worker go dark (a silhouette), what was bright clips to white and blooms, and a
    window pane (upper left) is blown out with its glare spilling into the picture."""
    import cv2

    h, w = image.shape[:2]
    rgb = image.astype(np.float32) / 255
    luma = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    dark = 255 * (rgb * 0.45) ** 1.8  # exposed for the window: the room a silhouette
    highlight = np.clip((luma - 0.75) / 0.15, 0, 1)  # what was bright clips
    window = np.zeros((h, w), np.float32)
    window[: int(h * 0.55), : int(w * 0.3)] = 1.0  # the pane, beside the worker
    light = np.maximum(highlight, window)
    glare = cv2.GaussianBlur(light, (0, 0), max(2.0, w / 40))
    lit = np.maximum(light, 0.6 * glare)[..., None]
    out = dark * (1 - lit) + 255 * lit
    return np.clip(out, 0, 255).astype(np.uint8)


def _screen_glow(image: np.ndarray, gain: float = 1.0, noise: float = 4.0) -> np.ndarray:
    """A dim room lit mainly by the monitor: blue-white light falling on one side (the
    screen's, here the right) and little on the other, low light overall, gain noise;
    ``gain`` > 1: the camera's auto exposure has brought it up, with more noise."""
    w = image.shape[1]
    rgb = image.astype(np.float32)
    side = np.linspace(0.08, 0.55, w, dtype=np.float32)[None, :, None] * gain
    out = rgb * side * np.array([0.7, 0.85, 1.25], np.float32)
    return _noisy(np.clip(out, 0, 255).astype(np.uint8), noise)


def _barrel(image: np.ndarray, k: float) -> np.ndarray:
    """A wide-angle lens's barrel distortion: the centre magnified, the edges squeezed (straight
    lines bow outwards); ``k`` 0.3 is about a 120 degree module, 0.6 a 160 degree one. The
    frame keeps the whole scene: nothing is cropped or left black."""
    import cv2

    h, w = image.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy, half = (w - 1) / 2, (h - 1) / 2, np.hypot(w, h) / 2
    dx, dy = (xx - cx) / half, (yy - cy) / half
    r2 = dx * dx + dy * dy
    pull = (1 + k * r2) / (1 + k)  # the source radius over the frame's: < 1 at the centre, 1 at the corners
    mx, my = (cx + dx * pull * half).astype(np.float32), (cy + dy * pull * half).astype(np.float32)
    return cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def _at_edge(image: np.ndarray, keep: float = 0.6) -> np.ndarray:
    """The worker at the frame's left edge, partly out of it: the scene shifted left by
    ``1 - keep`` of its width, the uncovered right a plain wall in the scene's colour."""
    w = image.shape[1]
    cut = int(w * (1 - keep))
    out = np.empty_like(image)
    out[:, : w - cut] = image[:, cut:]
    out[:, w - cut :] = np.median(image[:, -max(1, w // 20) :].reshape(-1, 3), axis=0).astype(np.uint8)
    return out


# ``--home``: what a real home desk's camera gives (a figure, as --harsh is).
HOME_VARIANTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "NoIR night": _noir_night,
    "NoIR day": _noir_day,
    "backlit": _backlit,
    "screen glow": _screen_glow,
    "screen glow, exposed": lambda im: _screen_glow(im, 2.5, 10.0),
    "wide 120": lambda im: _barrel(im, 0.3),
    "wide 160": lambda im: _barrel(im, 0.6),
    "edge left": _at_edge,
    "edge right": lambda im: _at_edge(im[:, ::-1])[:, ::-1],
    "wide 160 edge": lambda im: _barrel(_at_edge(im), 0.6),
}


def false_findings(labels: dict[str, Any], findings: set[str]) -> list[str]:
    """The findings among ``findings`` that a photo's labels contradict."""
    persons = int(labels.get("persons", 0))
    one_or_none = persons == 0 or (persons == 1 and labels.get("persons_exact", True))
    out = []
    if "phone_use" in findings and not labels.get("phone_in_use"):
        out.append("phone_use")
    if "eating" in findings and not labels.get("eating"):
        out.append("eating")
    if "extra_person" in findings and one_or_none:
        out.append("extra_person")
    if "away_from_desk" in findings and persons > 0:
        out.append("away_from_desk")
    if "presentation_attack" in findings:
        out.append("presentation_attack")
    return out


def true_findings(labels: dict[str, Any], findings: set[str]) -> list[str]:
    """The findings the labels call for that were reported."""
    want = {
        "phone_use": bool(labels.get("phone_in_use")),
        "eating": bool(labels.get("eating")),
        "extra_person": int(labels.get("persons", 0)) >= 2,
        "away_from_desk": int(labels.get("persons", 0)) == 0,  # a presence check must not fill an empty desk
    }
    return [f for f, wanted in want.items() if wanted and f in findings]


SIZES = ("file", "1280x720")


def sized(image: np.ndarray, size: str) -> np.ndarray:
    """``image`` as the file (``file``) or fitted into a 1280x720 camera frame as ``deskwatch bench`` does."""
    from deskwatch.commands.bench import fit_frame

    return image if size == "file" else fit_frame(image, 1280, 720)


def measure(
    directory: Path,
    *,
    verbose: bool = True,
    sizes: tuple[str, ...] = SIZES,
    variants: dict[str, Callable[[np.ndarray], np.ndarray]] | None = None,
    bursts: int = 0,
) -> dict[str, Any]:
    """Totals: false findings per type, per variant and per size, and the true findings per type
    (``variants``: the variations to apply, default :data:`VARIANTS`); ``bursts`` > 0: each
    false finding's view scanned again as that many bursts (``false_in_bursts``)."""
    variants = VARIANTS if variants is None else variants
    from deskwatch.app import build_policy, build_vision
    from deskwatch.domain import Frame, utcnow
    from deskwatch.policy.engine import PolicyContext
    from deskwatch_dev.phonefigures import _config, _load, scan_burst

    labels = yaml.safe_load((directory / "labels.yaml").read_text())["files"]
    false: dict[str, dict[str, int]] = {
        "by_finding": {},
        "by_variant": {name: 0 for name in variants},
        "by_size": {size: 0 for size in sizes},
    }
    found: dict[str, int] = {}
    # per variant: the views judged too dark or covered to check (no accusation, no check either)
    unchecked: dict[str, dict[str, int]] = {name: {} for name in variants}
    # per finding: the false views scanned again, and those where a burst still reported it
    in_bursts: dict[str, dict[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="deskwatch-variants-") as state:
        cfg = _config(state)
        vision, policy = build_vision(cfg), build_policy(cfg)

        def burst_findings(frame: np.ndarray, seed: int) -> set[str]:
            return {f.type for f in scan_burst(vision, policy, cfg, frame, seed).findings}

        try:
            for entry in labels:
                image = _load(directory / entry["file"])
                wrong = []
                for name, vary in variants.items():
                    varied = np.ascontiguousarray(vary(image))
                    for size in sizes:
                        frame = sized(varied, size)
                        analysis = vision.analyze(Frame(frame, utcnow(), 0))
                        context = PolicyContext(now=utcnow(), trigger="cli", confirming=True)
                        findings = {f.type for f in policy.evaluate([analysis], context).findings}
                        wrongly = false_findings(entry, findings)
                        kept = [burst_findings(frame, seed) for seed in range(bursts if wrongly else 0)]
                        for finding in wrongly:
                            said = f"{name} ({size}): {finding}"
                            if bursts:
                                held = sum(finding in k for k in kept)
                                said += f" [in {held} of {bursts} bursts]"
                                row = in_bursts.setdefault(finding, {"views": 0, "views_kept": 0, "bursts_kept": 0})
                                row["views"] += 1
                                row["views_kept"] += held > 0
                                row["bursts_kept"] += held
                            wrong.append(said)
                            false["by_finding"][finding] = false["by_finding"].get(finding, 0) + 1
                            false["by_variant"][name] += 1
                            false["by_size"][size] += 1
                        for finding in true_findings(entry, findings):
                            found[finding] = found.get(finding, 0) + 1
                        for finding in findings & {"low_light", "camera_obstructed"}:
                            unchecked[name][finding] = unchecked[name].get(finding, 0) + 1
                if verbose and wrong:
                    print(f"{entry['file']:22} false: {', '.join(wrong)}", flush=True)
        finally:
            vision.close()
    totals = {
        "photos": len(labels),
        "variants": list(variants),
        "sizes": list(sizes),
        "false": false,
        "found": found,
        "unchecked": unchecked,
    }
    if bursts:
        totals["false_in_bursts"] = {"bursts_per_view": bursts, "by_finding": in_bursts}
    return totals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deskwatch_dev.variants", description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", nargs="?", type=Path, default=REPO / "tests" / "data" / "photos")
    parser.add_argument("--json", action="store_true", help="print the totals as JSON only")
    parser.add_argument(
        "--sizes",
        default=",".join(SIZES),
        help="comma-separated: file (the photo as it is), 1280x720 (fitted into a camera frame); default both",
    )
    parser.add_argument(
        "--harsh",
        action="store_true",
        help="harsher variations (darker 0.4, JPEG q20, noise 16, blur 3, 70 %% crop, ±10°)",
    )
    parser.add_argument(
        "--home",
        action="store_true",
        help="what a home desk's camera gives (a NoIR camera at night and by day, backlit, lit by the screen, a wide-angle lens, the worker at the frame's edge)",
    )
    parser.add_argument(
        "--bursts",
        type=int,
        default=0,
        metavar="N",
        help="scan each view with a false finding again as N camera bursts: does the finding persist? (default 0: no)",
    )
    args = parser.parse_args(argv)
    if args.harsh and args.home:
        print("variants: --harsh and --home are two sets of variations: ask for one at a time", file=sys.stderr)
        return 2
    if not 0 <= args.bursts <= 100:
        print(f"variants: --bursts takes 0 to 100 bursts (got {args.bursts})", file=sys.stderr)
        return 2
    if not (args.directory / "labels.yaml").is_file():
        print(f"variants: no labels.yaml in {args.directory}: pass a labelled photo folder", file=sys.stderr)
        return 2
    sizes = tuple(s.strip() for s in args.sizes.split(",") if s.strip())
    if not sizes or any(s not in SIZES for s in sizes):
        print(
            f"variants: --sizes takes {' and/or '.join(SIZES)}, comma-separated (got {args.sizes!r})", file=sys.stderr
        )
        return 2
    totals = measure(
        args.directory,
        verbose=not args.json,
        sizes=sizes,
        variants=HARSH_VARIANTS if args.harsh else HOME_VARIANTS if args.home else None,
        bursts=args.bursts,
    )
    if args.json:
        print(json.dumps(totals, indent=1))
        return 0
    views = totals["photos"] * len(totals["variants"]) * len(sizes)
    print(
        f"\n{totals['photos']} photos x {len(totals['variants'])} variants x {len(sizes)} sizes = {views} one-frame scans"
    )
    print("false findings:", json.dumps(totals["false"]["by_finding"]) if totals["false"]["by_finding"] else "none")
    print("false findings per variant:", json.dumps(totals["false"]["by_variant"]))
    print("false findings per size:", json.dumps(totals["false"]["by_size"]))
    print("true findings reported:", json.dumps(totals["found"]))
    print("too dark or covered to check, per variant:", json.dumps({k: v for k, v in totals["unchecked"].items() if v}))
    if "false_in_bursts" in totals:
        rows = totals["false_in_bursts"]["by_finding"]
        print(
            f"false findings scanned again as {args.bursts} bursts each:",
            ", ".join(
                f"{k}: {r['views_kept']} of {r['views']} views kept in a burst ({r['bursts_kept']} bursts)"
                for k, r in rows.items()
            )
            or "none to scan",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
