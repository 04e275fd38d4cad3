"""Synthetic presentation attacks: a real face photo shown to the camera again.

SYNTHETIC. Photographing a printed or on-screen face is impossible here, so these
images simulate the re-capture of one of the repository's real face photos:

* ``screen``: a monitor showing the photo, filling most of the frame: the picture is
  drawn as RGB sub-pixel stripes with dark gaps between pixel rows (an LCD), warped
  onto the camera's pixel grid at 1.1-2.6 camera pixels per screen pixel (where the
  two grids beat: moire), a cool white point, backlight, glare and a dark bezel;
* ``print``: a photo printed as a CMY halftone (rotated dot screens, 1.6-3.5 camera
  pixels per cell) on textured, slightly warm paper with a white margin, with its
  limited contrast, held up slightly tilted, with glare;
* ``phone``: a phone screen (sub-pixel stripes again) in a black bezel with rounded
  corners, held up in front of an empty room.

Each is placed over a real empty-room photo with a perspective tilt and goes through
the camera: optics blur, sensor noise, and MJPEG encoding (4:2:0 chroma) as a
webcam would deliver it. Everything is seeded: the same seed gives the same image.
The cues a liveness check reads in these images are the physical traces above, but
how real re-captures look (other screens, papers, cameras, light) is not measured
here: catch rates on these images are an upper bound of what to expect.

``python -m deskwatch_dev.attacks --out DIR`` writes a set of them (with the repo's
test photos) and prints what the liveness check makes of them.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

FRAME_W, FRAME_H = 1280, 720


@dataclass(frozen=True)
class Attack:
    kind: str  # "screen", "print", "phone"
    image: np.ndarray  # RGB uint8 frame
    note: str


def _srgb_to_lin(x: np.ndarray) -> np.ndarray:
    return np.power(np.clip(x, 0, 1), 2.2)


def _lin_to_srgb(x: np.ndarray) -> np.ndarray:
    return np.power(np.clip(x, 0, 1), 1 / 2.2)


def _portrait(photo: np.ndarray, face_box: tuple[int, int, int, int], aspect: float) -> np.ndarray:
    """The part of the photo an attacker would show: the face with head and shoulders."""
    x0, y0, x1, y1 = face_box
    fw = x1 - x0
    ch = int(fw * 2.6)
    cw = int(ch * aspect)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2 + int(fw * 0.25)
    m = np.array([[1, 0, cw / 2 - cx], [0, 1, ch / 2 - cy]], np.float32)
    return cv2.warpAffine(photo, m, (cw, ch), borderMode=cv2.BORDER_REPLICATE)


def _perspective(img: np.ndarray, quad: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    m = cv2.getPerspectiveTransform(src, np.asarray(quad, np.float32))
    warped = cv2.warpPerspective(img, m, size, flags=cv2.INTER_AREA if w > size[0] else cv2.INTER_LINEAR)
    mask = cv2.warpPerspective(np.ones((h, w), np.float32), m, size, flags=cv2.INTER_LINEAR)
    return warped, mask


def _quad(rng: np.random.Generator, cx: float, cy: float, w: float, h: float, tilt: float) -> np.ndarray:
    """A rectangle seen slightly off-axis: rotated a little, one side nearer the camera."""
    a = math.radians(rng.uniform(-6, 6))
    k = 1 + rng.uniform(-tilt, tilt)  # left/right edge height ratio
    pts = np.array([[-w / 2, -h / 2 / k], [w / 2, -h / 2 * k], [w / 2, h / 2 * k], [-w / 2, h / 2 / k]])
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    return pts @ rot.T + [cx, cy]


def _camera(frame_lin: np.ndarray, rng: np.random.Generator, blur: float) -> np.ndarray:
    """Optics blur, sensor noise, sRGB encoding, JPEG-free uint8 output."""
    out = cv2.GaussianBlur(frame_lin, (0, 0), blur)
    out = out + np.asarray(rng.normal(0, 0.004, out.shape), np.float32) * np.sqrt(out + 0.01)
    rgb = (np.clip(_lin_to_srgb(out), 0, 1) * 255 + 0.5).astype(np.uint8)
    # webcams deliver MJPEG (4:2:0 chroma): encode and decode as the camera would
    quality = int(rng.integers(75, 93))
    ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    decoded = cv2.imdecode(jpg, cv2.IMREAD_COLOR) if ok else None
    if decoded is None:
        raise RuntimeError("JPEG round trip failed")
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)


def _glare(h: int, w: int, rng: np.random.Generator, strength: float) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.1, 0.6) * h
    sx, sy = rng.uniform(0.15, 0.35) * w, rng.uniform(0.1, 0.25) * h
    return (strength * np.exp(-(((xx - cx) / sx) ** 2 + ((yy - cy) / sy) ** 2))).astype(np.float32)


def screen_texture(content: np.ndarray, pitch: float, rng: np.random.Generator) -> np.ndarray:
    """The content as an LCD shows it, sampled at 3 sub-pixels per screen pixel:
    returns a linear-light image 3x wider and taller than (h/pitch, w/pitch) screen pixels
    would need, to be warped down onto the camera grid (that resampling makes the moire)."""
    h, w = content.shape[:2]
    sw, sh = max(8, int(w / pitch)), max(8, int(h / pitch))
    pix = _srgb_to_lin(cv2.resize(content, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32) / 255)
    up = np.repeat(np.repeat(pix, 3, axis=0), 3, axis=1)  # 3x3 camera-independent sub-grid
    stripe = np.zeros((3, 3, 3), np.float32)
    for c in range(3):
        stripe[:, c, c] = 1.0  # vertical R, G, B stripes
    stripe[2, :, :] *= 0.35  # the dark gap between pixel rows
    grid = np.tile(stripe, (sh, sw, 1))
    return up * grid * 2.4  # the stripes cover a third of the area: bring the mean back up


def attack_screen(
    photo: np.ndarray, face_box: tuple[int, int, int, int], bg: np.ndarray, rng: np.random.Generator
) -> Attack:
    """A monitor or laptop screen showing the photo, filling much of the frame."""
    content = _portrait(photo, face_box, 16 / 10)
    h_px = rng.uniform(0.75, 0.95) * FRAME_H
    pitch_cam = rng.uniform(1.1, 2.6)  # camera pixels per screen pixel: moire beats
    screen_px = h_px / pitch_cam
    tex = screen_texture(content, content.shape[0] / screen_px, rng)
    quad = _quad(rng, FRAME_W / 2 + rng.uniform(-80, 80), FRAME_H / 2, h_px * 1.6, h_px, 0.05)
    warped, mask = _perspective(tex, quad, (FRAME_W, FRAME_H))
    base = _srgb_to_lin(cv2.resize(bg, (FRAME_W, FRAME_H)).astype(np.float32) / 255) * 0.6
    backlight = rng.uniform(0.9, 1.3)
    tint = np.array([0.92, 0.98, 1.08], np.float32)  # cool white point
    lin = base * (1 - mask[..., None]) + (warped * backlight * tint + 0.01) * mask[..., None]
    lin = lin + _glare(FRAME_H, FRAME_W, rng, rng.uniform(0.05, 0.25))[..., None] * mask[..., None]
    # bezel: a dark frame around the screen
    border = cv2.dilate(mask, np.ones((25, 25), np.uint8)) - mask
    lin = lin * (1 - border[..., None]) + 0.01 * border[..., None]
    return Attack(
        "screen",
        _camera(lin.astype(np.float32), rng, rng.uniform(0.5, 0.9)),
        f"screen re-capture, {pitch_cam:.2f} camera px per screen pixel",
    )


def halftone(content_lin: np.ndarray, cell: float, rng: np.random.Generator) -> np.ndarray:
    """CMY halftone with rotated dot screens (15/75/0 degrees), on paper."""
    h, w = content_lin.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ink = 1.0 - _lin_to_srgb(content_lin)  # C, M, Y coverage from R, G, B
    out = np.ones_like(content_lin)
    for c, angle in enumerate((15, 75, 0)):
        a = math.radians(angle + rng.uniform(-2, 2))
        u = (xx * math.cos(a) + yy * math.sin(a)) / cell
        v = (-xx * math.sin(a) + yy * math.cos(a)) / cell
        dots = 0.5 + 0.25 * (np.cos(2 * np.pi * u) + np.cos(2 * np.pi * v))  # 0..1 threshold screen
        covered = (ink[..., c] > dots).astype(np.float32)
        out[..., c] = 1.0 - 0.85 * covered
    return out


def paper_texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    fibres = rng.normal(0, 1, (h, w)).astype(np.float32)
    fibres = cv2.GaussianBlur(fibres, (0, 0), 1.2) * 0.06 + cv2.GaussianBlur(fibres, (0, 0), 6) * 0.15
    return 1.0 + fibres


def attack_print(
    photo: np.ndarray, face_box: tuple[int, int, int, int], bg: np.ndarray, rng: np.random.Generator
) -> Attack:
    """A printed photo (inkjet/laser halftone on paper, white margin) held up to the camera."""
    content = _portrait(photo, face_box, 3 / 4)
    h_px = rng.uniform(0.55, 0.85) * FRAME_H
    cell_cam = rng.uniform(1.6, 3.5)  # halftone cell in camera pixels
    scale = 3  # render the print at 3x the camera resolution, then warp down
    ph, pw = int(h_px * scale), int(h_px * scale * 3 / 4)
    lin = _srgb_to_lin(cv2.resize(content, (pw, ph), interpolation=cv2.INTER_AREA).astype(np.float32) / 255)
    lin = 0.08 + 0.8 * lin  # paper white and ink black limit the range
    printed = _srgb_to_lin(halftone(lin, cell_cam * scale, rng))
    margin = int(0.06 * pw)
    sheet = np.full((ph + 2 * margin, pw + 2 * margin, 3), 0.85, np.float32)
    sheet[margin : margin + ph, margin : margin + pw] = printed
    sheet *= paper_texture(*sheet.shape[:2], rng)[..., None]
    sheet *= np.array([1.0, 0.98, 0.93], np.float32)  # warm paper
    quad = _quad(
        rng,
        FRAME_W / 2 + rng.uniform(-150, 150),
        FRAME_H / 2 + rng.uniform(-30, 30),
        (h_px + 2 * margin / scale) * 3 / 4,
        h_px + 2 * margin / scale,
        0.08,
    )
    warped, mask = _perspective(sheet, quad, (FRAME_W, FRAME_H))
    base = _srgb_to_lin(cv2.resize(bg, (FRAME_W, FRAME_H)).astype(np.float32) / 255)
    light = rng.uniform(0.7, 1.1)
    lin = base * (1 - mask[..., None]) + warped * light * mask[..., None]
    lin = lin + _glare(FRAME_H, FRAME_W, rng, rng.uniform(0.0, 0.3))[..., None] * mask[..., None]
    return Attack(
        "print",
        _camera(lin.astype(np.float32), rng, rng.uniform(0.6, 1.0)),
        f"printed photo, halftone cell {cell_cam:.1f} camera px",
    )


def attack_phone(
    photo: np.ndarray, face_box: tuple[int, int, int, int], bg: np.ndarray, rng: np.random.Generator
) -> Attack:
    """A phone held up with the photo on its screen: black bezel, rounded corners."""
    content = _portrait(photo, face_box, 9 / 16)
    h_px = rng.uniform(0.5, 0.8) * FRAME_H
    pitch_cam = rng.uniform(0.9, 1.8)
    tex = screen_texture(content, content.shape[0] / (h_px / pitch_cam), rng)
    bez = int(tex.shape[0] * 0.04)
    th, tw = tex.shape[:2]
    phone = np.full((th + 2 * bez, tw + 2 * bez, 3), 0.01, np.float32)
    phone[bez : bez + th, bez : bez + tw] = tex * rng.uniform(0.9, 1.3)
    # rounded corners: outside them the background shows
    r = int(0.09 * phone.shape[1])
    corner = np.zeros(phone.shape[:2], np.float32)
    cv2.rectangle(corner, (r, 0), (phone.shape[1] - r, phone.shape[0]), 1.0, -1)
    cv2.rectangle(corner, (0, r), (phone.shape[1], phone.shape[0] - r), 1.0, -1)
    for cx, cy in ((r, r), (phone.shape[1] - r, r), (r, phone.shape[0] - r), (phone.shape[1] - r, phone.shape[0] - r)):
        cv2.circle(corner, (cx, cy), r, 1.0, -1)
    phone = np.dstack([phone, corner])
    quad = _quad(
        rng,
        FRAME_W / 2 + rng.uniform(-200, 200),
        FRAME_H / 2 + rng.uniform(-20, 40),
        (h_px + 2 * bez / 3) * 9 / 16,
        h_px + 2 * bez / 3,
        0.06,
    )
    warped, mask = _perspective(phone, quad, (FRAME_W, FRAME_H))
    alpha = warped[..., 3] * mask
    base = _srgb_to_lin(cv2.resize(bg, (FRAME_W, FRAME_H)).astype(np.float32) / 255)
    lin = base * (1 - alpha[..., None]) + warped[..., :3] * alpha[..., None]
    lin = lin + _glare(FRAME_H, FRAME_W, rng, rng.uniform(0.05, 0.3))[..., None] * alpha[..., None]
    return Attack(
        "phone",
        _camera(lin.astype(np.float32), rng, rng.uniform(0.5, 0.9)),
        f"phone screen held up, {pitch_cam:.2f} camera px per screen pixel",
    )


MAKERS = {"screen": attack_screen, "print": attack_print, "phone": attack_phone}


def make_attacks(
    photo: np.ndarray, face_box: tuple[int, int, int, int], bg: np.ndarray, seed: int, per_kind: int = 2
) -> list[Attack]:
    rng = np.random.default_rng(seed)
    return [MAKERS[k](photo, face_box, bg, rng) for k in MAKERS for _ in range(per_kind)]


# -- the set used by the tests and the report ---------------------------------------------
REPO = Path(__file__).resolve().parents[2]
PHOTOS = REPO / "tests" / "data" / "photos"
BACKGROUNDS = ("empty_04.jpg", "empty_05.jpg")  # empty rooms from the repository's photos


def load_rgb(path: Path) -> np.ndarray:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"cannot read {path}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def attack_set(
    sources: list[tuple[str, np.ndarray, tuple[int, int, int, int]]], per_kind: int = 2
) -> list[tuple[str, Attack]]:
    """(name, attack) for each source photo (name, RGB image, face box in pixels)."""
    backgrounds = [load_rgb(PHOTOS / b) for b in BACKGROUNDS]
    out = []
    for i, (name, image, box) in enumerate(sources):
        for j, attack in enumerate(make_attacks(image, box, backgrounds[i % len(backgrounds)], 100 + i, per_kind)):
            out.append((f"{Path(name).stem}-{attack.kind}-{j % per_kind}", attack))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the attack images here (PNG)")
    parser.add_argument("--per-kind", type=int, default=2, help="images per kind of attack and photo (default 2)")
    args = parser.parse_args()
    from deskwatch.vision.config import VisionConfig
    from deskwatch.vision.faces import FaceDetector
    from deskwatch.vision.liveness import LivenessChecker
    from deskwatch.vision.pipeline import FACE_MODELS
    from deskwatch.vision.runtime import ModelStore

    cfg = VisionConfig()
    detector = FaceDetector(ModelStore(cfg).load(FACE_MODELS[cfg.face_model]))
    checker = LivenessChecker(cfg.liveness)
    sources = []
    for path in sorted(PHOTOS.glob("*.jpg")):
        image = load_rgb(path)
        h, w = image.shape[:2]
        faces = [f for f in detector.detect(image) if f.box.height * h >= 60 and f.facing >= 0.3]
        for face in faces[:1]:
            sources.append((path.name, image, face.box.to_pixels(w, h)))
    counts: dict[str, list[int]] = {}
    for name, attack in attack_set(sources, args.per_kind):
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(args.out / f"{name}.png"), cv2.cvtColor(attack.image, cv2.COLOR_RGB2BGR))
        h = attack.image.shape[0]
        faces = [f for f in detector.detect(attack.image) if f.box.height * h >= cfg.liveness.min_face_px]
        tally = counts.setdefault(attack.kind, [0, 0, 0])  # images, with a face, caught
        tally[0] += 1
        if faces:
            tally[1] += 1
            face = max(faces, key=lambda f: f.box.area)
            tally[2] += checker.check(attack.image, [face])[0].live is False
    for kind, (n, with_face, caught) in counts.items():
        print(f"{kind:<7} {n:3d} synthetic images, {with_face:3d} with a face found, {caught:3d} of them caught")
    return 0


if __name__ == "__main__":
    sys.exit(main())
