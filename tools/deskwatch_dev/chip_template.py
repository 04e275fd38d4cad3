"""Derive ``CHIP_TEMPLATE`` (deskwatch/vision/faces.py): where dlib's aligner puts the
five face mesh points the identity check aligns with.

For each face in the photos given (use registry-package photos, never the test photos:
the shipped template came from skimage's astronaut, matplotlib's grace_hopper,
insightface's t1 and Tom_Hanks_54745, ultralytics' bus and zidane, OpenCV's messi5 and
face_recognition's test images), dlib's 5-point shape predictor and
``get_face_chip_details(shape, 150, 0.25)`` give the image -> chip transform dlib's own
encoder uses; the face mesh points 33, 133, 362, 263, 2 are mapped through it. The
template is the median over frontal faces (facing >= 0.5, mesh presence >= 0.5), made
left-right symmetric.

    PYTHONPATH=tools .venv/bin/python -m deskwatch_dev.chip_template PHOTO_DIR
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np


def chip_matrix(details: object, size: int = 150) -> np.ndarray:
    """dlib chip_details (rect, angle) as the 2x3 image -> chip affine matrix."""
    import cv2

    r, a = details.rect, details.angle  # type: ignore[attr-defined]
    cx, cy = (r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2
    sx, sy = (r.right() - r.left()) / (size - 1), (r.bottom() - r.top()) / (size - 1)
    c, s = math.cos(a), math.sin(a)
    to_image = np.array([[c * sx, -s * sy], [s * sx, c * sy]])
    shift = np.array([cx, cy]) - to_image @ np.array([(size - 1) / 2, (size - 1) / 2])
    return cv2.invertAffineTransform(np.hstack([to_image, shift[:, None]]))  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photos", type=Path, help="a directory of photos with faces (not the test photos)")
    args = parser.parse_args()
    import dlib  # type: ignore[import-untyped]
    from PIL import Image

    from deskwatch.vision.config import VisionConfig
    from deskwatch.vision.faces import CHIP_MESH_POINTS, CHIP_TEMPLATE, FaceAligner, FaceDetector
    from deskwatch.vision.identity import _model_path, face_pixels
    from deskwatch.vision.pipeline import FACE_MESH_MODEL, FACE_MODELS
    from deskwatch.vision.runtime import ModelStore

    cfg = VisionConfig()
    store = ModelStore(cfg)
    detector = FaceDetector(store.load(FACE_MODELS[cfg.face_model]))
    aligner = FaceAligner(store.load(FACE_MESH_MODEL))
    predictor = dlib.shape_predictor(str(_model_path("shape_predictor_5_face_landmarks.dat")))
    points = []
    for path in sorted(p for p in args.photos.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"}):
        with Image.open(path) as im:
            image = np.ascontiguousarray(np.asarray(im.convert("RGB")))
        h, w = image.shape[:2]
        for face in detector.detect(image):
            if face.box.height * h < 40 or face.facing < 0.5:
                continue
            mesh, presence = aligner.landmarks(image, face)
            if presence < 0.5:
                continue
            x0, y0, x1, y1 = face_pixels(face, w, h)
            grow = (x1 - x0) // 5
            shape = predictor(image, dlib.rectangle(x0 - grow, y0 - grow, x1 + grow, y1 + grow))
            m = chip_matrix(dlib.get_face_chip_details(shape, 150, 0.25))
            pts = mesh[list(CHIP_MESH_POINTS)]
            points.append(pts @ m[:, :2].T + m[:, 2])
            print(f"{path.name}: {np.round(points[-1], 1).tolist()}")
    if not points:
        print("no usable face found", file=sys.stderr)
        return 1
    median = np.median(np.array(points), axis=0)
    mirrored = median.copy()
    mirrored[:, 0] = 149 - mirrored[:, 0]
    template = (median + mirrored[[3, 2, 1, 0, 4]]) / 2  # eye corners swap sides, the nose stays
    print(f"{len(points)} faces; CHIP_TEMPLATE = {np.round(template, 2).tolist()}")
    print(f"shipped:           {[[round(float(v), 2) for v in row] for row in CHIP_TEMPLATE]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
