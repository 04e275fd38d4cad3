"""Identity and liveness figures for ``deskwatch bench``, on labelled photos.

Every face BlazeFace finds (at least ``min_face_px`` tall) in the photos is described
by both identity backends, in turn, so both see the same faces under the same load:
time per face (p50/p95, median of a few runs per face), the distances between
photos of the same person (genuine) and of different people (impostor), and the
false-accept and false-reject rates at a few tolerances. Who is who comes from
``labels.yaml`` beside the photos (``same_person_as``: one file or a list); in a
photo with several faces each linked person is the face closest to that person's
faces in the photos of one face.

The liveness check runs on the same faces: every one is a real face, so every face
it calls a picture is a live face wrongly rejected.
"""

from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from deskwatch.domain import Face
from deskwatch.vision.identity import FaceEmbedder

REPEATS = 3


@dataclass
class LabelledFace:
    file: str
    index: int
    face: Face
    who: str
    descriptors: dict[str, np.ndarray] = field(default_factory=dict)
    times_ms: dict[str, float] = field(default_factory=dict)


def read_links(photos: Path) -> list[tuple[str, str]]:
    """The labelled ``same_person_as`` links: (file, other file) pairs. An entry names one
    file or a list of them (a group photo can show several people of other photos)."""
    import yaml

    try:
        doc = yaml.safe_load((photos / "labels.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return []
    links: list[tuple[str, str]] = []
    for item in doc.get("files") or []:
        others = item.get("same_person_as") if isinstance(item, dict) else None
        for other in [others] if isinstance(others, str) else others or []:
            links.append((str(item["file"]), str(other)))
    return links


class _People:
    """Union-find over faces (``file#index``): who is the same person."""

    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def root(self, key: str) -> str:
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def join(self, a: str, b: str) -> None:
        self.parent[self.root(a)] = self.root(b)


def assign_people(faces: list[LabelledFace], links: list[tuple[str, str]], backend: str) -> None:
    """Set ``who`` for every face. A link between two photos of one face each joins their
    people. A link between a group photo and a photo of one face names the group's face
    closest (by ``backend``'s descriptors) to that person's faces; a group photo linked to
    several people gets a different face for each, the closest pairs first. A link between
    two group photos says nothing on its own (which face?) and is left out. Everyone not
    linked is somebody new."""
    by_file: dict[str, list[LabelledFace]] = {}
    for f in faces:
        f.who = f"{f.file}#{f.index}"
        by_file.setdefault(f.file, []).append(f)
    people = _People()
    single = {file: fs[0] for file, fs in by_file.items() if len(fs) == 1}
    for a, b in links:
        if a in single and b in single:
            people.join(single[a].who, single[b].who)
    # each group photo: the people of the single-face photos it is linked to
    wanted: dict[str, set[str]] = {}
    for a, b in links:
        for group, other in ((a, b), (b, a)):
            if group in by_file and group not in single and other in single:
                wanted.setdefault(group, set()).add(people.root(single[other].who))
    for group, persons in wanted.items():
        usable = [f for f in by_file[group] if backend in f.descriptors]
        choices = []
        for person in persons:
            refs = [s for s in single.values() if people.root(s.who) == person and backend in s.descriptors]
            for f in usable:
                if refs:
                    d = min(float(np.linalg.norm(f.descriptors[backend] - r.descriptors[backend])) for r in refs)
                    choices.append((d, person, f))
        taken_people: set[str] = set()
        taken_faces: set[str] = set()
        for _d, person, f in sorted(choices, key=lambda c: c[0]):
            if person in taken_people or f.who in taken_faces:
                continue
            taken_people.add(person)
            taken_faces.add(f.who)
            people.join(f.who, person)
    for f in faces:
        f.who = people.root(f.who)


def collect_faces(photos: Path, detect: Any, min_face_px: int) -> list[tuple[LabelledFace, np.ndarray]]:
    """Each face of at least ``min_face_px`` in each photo, with its image."""
    from PIL import Image

    out = []
    for path in sorted(p for p in photos.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"}):
        with Image.open(path) as im:
            image = np.ascontiguousarray(np.asarray(im.convert("RGB")))
        h = image.shape[0]
        faces = [f for f in detect(image) if f.box.height * h >= min_face_px]
        for i, face in enumerate(sorted(faces, key=lambda f: (f.box.x0, f.box.y0))):
            out.append((LabelledFace(path.name, i, face, ""), image))
    return out


def describe(
    items: list[tuple[LabelledFace, np.ndarray]], embedders: dict[str, FaceEmbedder], repeats: int = REPEATS
) -> None:
    """Each backend's descriptor and time per face (median of ``repeats`` runs); the
    backends take turns on each face, so both see the same load."""
    for lf, image in items:
        for name, emb in embedders.items():
            runs = []
            for _ in range(max(1, repeats)):
                t0 = time.perf_counter()
                d = emb.embed(image, lf.face)
                runs.append((time.perf_counter() - t0) * 1000.0)
            lf.times_ms[name] = statistics.median(runs)
            if d is not None:
                lf.descriptors[name] = d


def separation(
    faces: list[LabelledFace], backend: str, tolerances: list[float], band: tuple[float, float] | None = None
) -> dict[str, Any]:
    """Genuine and impostor distances of one backend, FAR/FRR at each tolerance, and with
    ``band`` (the tolerance, the unknown distance) what the undecided band between the two
    does: the genuine pairs still called somebody else (a false accusation's first step)
    and the impostor pairs judged neither way instead of unknown."""
    usable = [f for f in faces if backend in f.descriptors]
    genuine: list[float] = []
    impostor: list[float] = []
    for a, b in itertools.combinations(usable, 2):
        d = float(np.linalg.norm(a.descriptors[backend] - b.descriptors[backend]))
        (genuine if a.who == b.who else impostor).append(d)
    g, i = np.sort(np.asarray(genuine)), np.sort(np.asarray(impostor))
    out: dict[str, Any] = {
        "faces": len(usable),
        "not_described": len(faces) - len(usable),
        "genuine_pairs": len(g),
        "impostor_pairs": len(i),
        "genuine": [round(float(x), 3) for x in g],
        "impostor_min": round(float(i[0]), 3) if len(i) else None,
        "impostor_p1": round(float(np.percentile(i, 1)), 3) if len(i) else None,
        "impostor_p5": round(float(np.percentile(i, 5)), 3) if len(i) else None,
        "impostor_median": round(float(np.median(i)), 3) if len(i) else None,
        "impostor_lowest": [round(float(x), 3) for x in i[:10]],
    }
    if len(g) > 1 and len(i) > 1:
        out["d_prime"] = round(float((i.mean() - g.mean()) / np.sqrt((i.var() + g.var()) / 2)), 2)
    out["at_tolerance"] = {
        f"{t:g}": {
            "far": round(float((i <= t).mean()), 4) if len(i) else None,
            "false_accepts": int((i <= t).sum()),
            "frr": round(float((g > t).mean()), 4) if len(g) else None,
            "false_rejects": int((g > t).sum()),
        }
        for t in tolerances
    }
    if band is not None:
        low, high = band
        out["undecided_band"] = {
            "from": low,
            "to": high,
            "genuine_called_unknown": int((g > high).sum()),
            "genuine_not_judged": int(((g > low) & (g <= high)).sum()),
            "impostors_not_judged": int(((i > low) & (i <= high)).sum()),
        }
    return out


def timing(faces: list[LabelledFace], backend: str) -> dict[str, Any]:
    times = [f.times_ms[backend] for f in faces if backend in f.times_ms]
    if not times:
        return {}
    return {
        "faces": len(times),
        "p50_ms": round(float(np.percentile(times, 50)), 2),
        "p95_ms": round(float(np.percentile(times, 95)), 2),
        "mean_ms": round(statistics.fmean(times), 2),
    }


def liveness_on_real_faces(items: list[tuple[LabelledFace, np.ndarray]], checker: Any) -> dict[str, Any]:
    """Every face here is a real one: each one called a picture is a live face rejected."""
    checked = rejected = 0
    rejected_faces = []
    times = []
    for lf, image in items:
        t0 = time.perf_counter()
        face = checker.check(image, [lf.face])[0]
        times.append((time.perf_counter() - t0) * 1000.0)
        if face.live is None:
            continue
        checked += 1
        if face.live is False:
            rejected += 1
            rejected_faces.append(f"{lf.file}#{lf.index} ({face.spoof_cues})")
    return {
        "live_faces_checked": checked,
        "live_faces_rejected": rejected,
        "rejected": rejected_faces,
        "p50_ms": round(float(np.percentile(times, 50)), 2) if times else None,
    }


def identity_figures(
    photos: Path,
    detect: Any,
    embedders: dict[str, FaceEmbedder],
    liveness: Any,
    *,
    min_face_px: int,
    tolerance: float,
    unknown_distance: float | None = None,
    repeats: int = REPEATS,
) -> dict[str, Any]:
    """Both backends on the same faces: speed, separation, FAR/FRR; liveness on real faces."""
    items = collect_faces(photos, detect, min_face_px)
    describe(items, embedders, repeats)
    faces = [lf for lf, _ in items]
    links = read_links(photos)
    assign_people(faces, links, "face_recognition" if "face_recognition" in embedders else next(iter(embedders)))
    tolerances = sorted({0.5, 0.55, round(tolerance, 3)})
    result: dict[str, Any] = {
        "photos": str(photos),
        "faces": len(faces),
        "labelled_links": len(links),
        "tolerance": tolerance,
        "unknown_distance": unknown_distance,
        "backends": {
            name: {
                "per_face": timing(faces, name),
                "separation": separation(
                    faces, name, tolerances, None if unknown_distance is None else (tolerance, unknown_distance)
                ),
            }
            for name in embedders
        },
    }
    if "tflite" in embedders and "face_recognition" in embedders:
        fast = result["backends"]["tflite"]["per_face"]
        slow = result["backends"]["face_recognition"]["per_face"]
        if fast and slow:
            result["speedup_p50"] = round(slow["p50_ms"] / max(fast["p50_ms"], 1e-9), 1)
    if liveness is not None:
        result["liveness"] = liveness_on_real_faces(items, liveness)
    return result
