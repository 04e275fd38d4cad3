"""The vision stage the scan loop calls: ``Vision(cfg.vision, identity=...).analyze(frame)``.

Per frame: light/obstruction statistics first; a dark or covered frame skips the
detectors (their silence would prove nothing). Otherwise the object detector,
BlazeFace on the whole frame and on each person's upper body; where both found
nobody, the presence check (CenterNet looking for a person, and failing that MediaPipe
looking for hands, before the desk is called empty: ``vision.presence_check``,
``vision.hand_check``, see ``hands``); the phone stage (a
second look at each person's hands and head by two detectors, see ``crops``:
confirmed phones with their behaviour, food or drink at the mouth); and - when the
profile allows it and the worker is enrolled - the identity check on the live faces
found (the liveness check first marks pictures of faces held up to the camera, see
``liveness``). Whether identity runs at all is the policy's
decision, passed in by the composition root (``deskwatch.app.build_vision``) as an
:class:`IdentityTarget` or None.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from deskwatch.domain import FOOD_AND_DRINK, Box, Detection, Face, Frame, FrameAnalysis
from deskwatch.vision.centernet import CenterNet
from deskwatch.vision.config import VisionConfig
from deskwatch.vision.crops import Look, SecondLook, View
from deskwatch.vision.eating import food_at_mouth
from deskwatch.vision.faces import FaceAligner, FaceDetector, merge_faces
from deskwatch.vision.hands import HandCheck
from deskwatch.vision.identity import (
    DlibEmbedder,
    FaceEmbedder,
    IdentityChecker,
    IdentityTarget,
    IdentityUnavailable,
    TemplateMismatch,
    TfliteEmbedder,
    check_compatible,
    read_templates,
)
from deskwatch.vision.light import measure_light, nobody_seen
from deskwatch.vision.liveness import LivenessChecker
from deskwatch.vision.memory import trim_heap
from deskwatch.vision.objects import COCO_LABELS, PHONE, ObjectDetector
from deskwatch.vision.phones import IN_HAND, VISIBLE, confirmed_phones
from deskwatch.vision.pose import Pose, PoseEstimator
from deskwatch.vision.runtime import Model, ModelError, ModelStore

log = logging.getLogger(__name__)

FACE_MODELS = {"short_range": "face_detection_short_range.tflite", "full_range": "face_detection_full_range.tflite"}
FACE_MODEL = FACE_MODELS["short_range"]
LABELS_FILE = "coco_labels.txt"
OBJECT_MODELS = {"int8": "nanodet_g416_int8.tflite", "float": "nanodet_g416_fp32.tflite"}
POSE_MODEL = "pose_landmark_full_pruned.tflite"  # the landmarks and presence only (models/manifest.yaml)
FACE_MESH_MODEL = "face_landmark.tflite"  # identity backend tflite: alignment
FACE_EMBEDDER_MODEL = "face_embedder_dlib_resnet.tflite"  # identity backend tflite: descriptor
CENTERNET_MODEL = "centernet_mb3_384_person_phone_food.tflite"  # the phone stage's second detector; presence
FACE_CROP_MAX_PERSONS = 4
# person boxes scoring at least this are never dropped as loose doubles (nested ones are). 0.5 let
# a tilted camera's second, faceless box on the worker (0.551, 89 % inside their 0.82 box; 0.50, 73 %
# inside 0.55) stand as an extra_person: 3 of the harsh sweep's 4 false ones (deskwatch_dev.variants
# --harsh, 728 views: true extra_person 107 either way); over the 1352 ordinary views, true 232 -> 231
# (an 85 % crop of a crowded street, phone_01).
PERSON_STRONG = 0.6
PERSON_CONTAINED = 0.5  # share of a weak box inside a stronger one that makes it a duplicate
PERSON_NESTED = 0.9  # share of one box inside another that makes them one person (when the weaker owns no face)
FACE_CROP_SMALL = 0.6  # people taller than this share of the frame: the whole-frame pass sees their face


def check_labels(store: ModelStore) -> None:
    """The shipped label file (when the manifest lists it) must name the classes in the
    order the decoder uses; a mismatch would report cups as phones."""
    if LABELS_FILE not in store.manifest:
        return
    _entry, content = store.verify(LABELS_FILE)
    shipped = [line.strip() for line in content.decode("utf-8").splitlines() if line.strip()]
    if tuple(shipped) != COCO_LABELS:
        raise ModelError(
            f"{store.directory / LABELS_FILE} does not list the 80 COCO classes in the detector's order: "
            "reinstall the models",
            path=store.directory / LABELS_FILE,
            what=f"{store.directory / LABELS_FILE} does not list the 80 COCO classes in the detector's order",
        )


def object_precision(configured: str, runtime: str) -> str:
    """int8 or float: ``auto`` picks int8 only where it is fast (ai-edge-litert)."""
    if configured != "auto":
        return configured
    return "int8" if runtime == "ai-edge-litert" else "float"


class Vision:
    """Every detector, built once from the validated config."""

    def __init__(
        self,
        vision: VisionConfig,
        *,
        identity: IdentityTarget | None = None,
        store: ModelStore | None = None,
        runtime: str | None = None,
        food: bool = True,
        presence: bool = True,
        counts_from: tuple[float, float] = (0.4, 0.5),
    ):
        """``identity``: whose face to check, or None (the policy's decision); ``food``: look for
        food or drink at the mouth too (False where no rule counts eating: phones only);
        ``presence``: run the presence check (False where no rule counts an empty desk);
        ``counts_from``: the person and face scores from which the away rule counts somebody
        at the desk (policy.rules.away_from_desk): where nobody reaches them, the check looks."""
        self.cfg = vision
        self.identity_target = identity
        v = vision
        self.store = store or ModelStore(v, runtime=runtime)
        check_labels(self.store)
        self.precision = object_precision(v.object_precision, self.store.runtime_name())
        self.objects = ObjectDetector(
            self.store.load(OBJECT_MODELS[self.precision]),
            thresholds=v.label_thresholds,
            default_threshold=v.object_threshold,
            nms_iou=v.object_nms_iou,
            # weak candidates kept for the phone stage: only what it will look at
            hint_labels=((PHONE, *FOOD_AND_DRINK) if food else (PHONE,)) if v.phones.enabled else (),
            hint_threshold=v.phones.vote_threshold,
        )
        self.second_look: SecondLook | None = None
        confirm: CenterNet | None = None
        if v.phones.enabled or (presence and v.presence_check):
            confirm = CenterNet(self.store.load(CENTERNET_MODEL), heat_classes(self.store, CENTERNET_MODEL))
        if v.phones.enabled and confirm is not None:
            self.second_look = SecondLook(
                v.phones,
                self.objects,
                PoseEstimator(self.store.load(POSE_MODEL), reload=self._pose_again),
                confirm,
                food=food,
            )
        # the presence check's detector (CenterNet: one interpreter for both), or None
        self.presence = confirm if presence and v.presence_check else None
        self.counts_from = counts_from
        if self.presence is not None and "person" not in self.presence.classes:
            where = self.store.directory / CENTERNET_MODEL
            raise ModelError(
                f"{where} has no person heat: reinstall the models", path=where, what=f"{where} has no person heat"
            )
        # its last step: hands (models loaded when a frame needs them, kept while the pose's is let go), or None
        self.hands = HandCheck(self.store, v.hand_threshold) if self.presence is not None and v.hand_check else None
        self.last_look: Look | None = None  # the phone stage's view of the last analyze() (scan --annotate draws it)
        self.faces = FaceDetector(
            self.store.load(FACE_MODELS[v.face_model]), threshold=v.face_threshold, nms_iou=v.face_nms_iou
        )
        self.liveness = LivenessChecker(v.liveness) if v.liveness.enabled else None
        self._embedder: FaceEmbedder | None = None
        if identity is not None and v.identity_backend == "tflite":
            self._embedder = build_embedder(v, self.store)  # loaded up front: a missing model fails the start
        self._identity: IdentityChecker | None = None
        self._templates_key: tuple[float, ...] | None = None  # the templates file as last read
        # why the identity check is off although the worker is enrolled (status reasons)
        self.identity_problem: str | None = None
        self.last_model_ms = 0.0  # TFLite invoke() + dlib encoder time of the last analyze()
        self.refresh_identity()

    # -- identity --------------------------------------------------------------------------
    def refresh_identity(self) -> None:
        """(Re)load the enrolled worker's templates when they appeared or changed."""
        # None when the profile or the rule switches need no identity check (uk,
        # minimal, unrecognized_person off): then no face is encoded at all
        target = self.identity_target
        if target is None:
            self._identity = None
            return
        path = target.path
        try:
            st = path.stat()
            key: tuple[float, ...] | None = (st.st_mtime, st.st_size, st.st_ino, st.st_mode)
        except FileNotFoundError:
            key = None
        except OSError as exc:  # not this user's to look at: read_templates says so
            key = (-1.0, float(exc.errno or 0))
        if key == self._templates_key:
            return
        self._templates_key = key
        self.identity_problem = None
        templates, problem = read_templates(target.state_dir, target.worker_id)
        if templates is None:
            self._identity, self.identity_problem = None, problem
            return
        if self._embedder is None:
            try:
                self._embedder = build_embedder(self.cfg, self.store)
            except (IdentityUnavailable, ModelError) as exc:
                log.error("identity check unavailable, the other checks go on: %s", exc)
                self._identity, self.identity_problem = None, f"check unavailable ({str(exc)[:160]})"
                return
        try:
            check_compatible(templates, self._embedder, target.worker_id)
        except TemplateMismatch as exc:
            log.error("%s", exc)
            self._identity = None
            self.identity_problem = (
                f"the templates are from another backend or model: enrol worker {target.worker_id} again"
            )
            return
        v = self.cfg
        self._identity = IdentityChecker(
            self._embedder,
            templates.encodings,
            v.identity_tolerance,
            v.identity_min_face_px,
            v.identity_max_faces,
            v.identity_reuse_seconds,
            unknown_distance=v.unknown_distance,
        )
        log.info(
            "identity check on: %d templates for worker %s (backend %s)",
            len(templates.encodings),
            target.worker_id,
            self._embedder.backend,
        )

    @property
    def identity_enabled(self) -> bool:
        return self._identity is not None

    # -- one frame ---------------------------------------------------------------------------
    def analyze(self, frame: Frame | np.ndarray, *, look_closer: bool = True) -> FrameAnalysis:
        """What the detectors see in one frame (a Frame, or a bare RGB array).

        ``look_closer=False`` leaves out the phone stage: the scan loop asks for it only while
        phone_use or eating can still persist through the burst (``policy.closer_look_needed``);
        the frame's phones, food and drink then carry no behaviour (as with the stage switched off)."""
        image = frame.image if isinstance(frame, Frame) else frame
        index = frame.index if isinstance(frame, Frame) else 0
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        light = measure_light(image, self.cfg.light)
        t1 = time.perf_counter()
        timings["light"] = (t1 - t0) * 1000
        analysis = FrameAnalysis(frame_index=index, light=light, timings_ms=timings)
        self.last_model_ms = 0.0
        if light.low_light or light.obstructed:
            timings["total"] = timings["light"]
            return analysis
        detections = self.objects.detect(image)
        t2 = time.perf_counter()
        timings["objects"] = (t2 - t1) * 1000
        model_ms = self.objects.invoke_ms
        faces, face_ms = self.find_faces(image, detections)
        t3 = time.perf_counter()
        timings["faces"] = (t3 - t2) * 1000
        model_ms += face_ms
        detections = drop_duplicate_persons(detections, faces)
        if self.presence is not None and self.nobody_counted(detections, faces):
            found, presence_ms = self.somebody(image, detections)
            detections = detections + found
            model_ms += presence_ms
            t4 = time.perf_counter()
            timings["presence"] = (t4 - t3) * 1000
            t3 = t4
        self.last_look = None
        if self.nobody_counted(detections, faces):
            analysis.light = nobody_seen(light, image, self.cfg.light)
            if analysis.light.low_light or analysis.light.obstructed:  # as a dark or covered frame
                analysis.detections, analysis.faces = detections, faces
                timings["total"] = (time.perf_counter() - t0) * 1000
                self.last_model_ms = model_ms
                return analysis
        if look_closer and self.second_look is not None:
            detections, look_ms = self.look_closer(image, detections, faces)
            model_ms += look_ms
            t4 = time.perf_counter()
            timings["phones"] = (t4 - t3) * 1000
            t3 = t4
        if self.liveness is not None and faces:
            person_min = self.counts_from[0]
            bodies = [d.box for d in detections if d.label == "person" and d.score >= person_min]
            # somebody besides each face: only there can a picture on the wall be taken for a second person
            beside = [len(faces) > 1 or any(not b.contains(*f.box.centre) for b in bodies) for f in faces]
            faces = self.liveness.check(image, faces, beside)
            t4 = time.perf_counter()
            timings["liveness"] = (t4 - t3) * 1000
            t3 = t4
        self.refresh_identity()
        if self._identity is not None and faces:
            faces = self._identity.check(image, faces, frame.captured_at if isinstance(frame, Frame) else None)
            model_ms += self._identity.last_ms
            timings["identity"] = (time.perf_counter() - t3) * 1000
        timings["total"] = (time.perf_counter() - t0) * 1000
        self.last_model_ms = model_ms
        analysis.detections = detections
        analysis.faces = faces
        return analysis

    def nobody_counted(self, detections: list[Detection], faces: list[Face]) -> bool:
        """No person and no face the away rule would count (a person NanoDet scored 0.36-0.39, a
        pair of hands on a table, is below its 0.4: the desk would be called empty)."""
        person_min, face_min = self.counts_from
        return not any(f.score >= face_min for f in faces) and not any(
            d.label == "person" and d.score >= person_min for d in detections
        )

    def somebody(self, image: np.ndarray, detections: list[Detection]) -> tuple[list[Detection], float]:
        """The presence check, on a frame where the object detector and BlazeFace found nobody
        the away rule counts (:meth:`nobody_counted`), and its model time: the stronger of CenterNet's strongest
        person and the surest hand (as a person with the hand's box: at a desk, a hand on it
        is somebody there), or nobody. At most one: it can keep a desk from being called
        empty, it never makes a crowd.

        By default the hands are looked for on every such frame: a desk is not called empty
        before the hand models have looked at it. ``vision.hand_check_from`` above 0 looks only
        where there is a trace of somebody that does not count by itself (a person box under the
        away rule's bar, or a CenterNet person from that score), which saves the hand models on
        an empty room but misses hands with no trace: typing hands seen from above, mirrored, at
        1280x720, had CenterNet's person at 0.149 and no person box, and were called an empty
        desk under the former 0.15, while the hand models found both hands at 0.99."""
        assert self.presence is not None
        v = self.cfg
        gated = v.hand_check_from > 0  # hands only where there is a trace of somebody
        floor = min(v.presence_threshold, v.hand_check_from) if gated else v.presence_threshold
        traces = self.presence.detect(image, ("person",), floor)[:1]
        model_ms = self.presence.model.invoke_ms
        found = [d for d in traces if d.score >= v.presence_threshold]
        if found and found[0].score >= self.counts_from[0]:
            return found, model_ms
        trace = any(d.label == "person" for d in detections) or any(d.score >= v.hand_check_from for d in traces)
        if self.hands is not None and (trace or not gated):
            self.let_go_of_pose()
            hands = self.hands.find(image)
            model_ms += self.hands.model_ms
            found += [Detection("person", hand.score, hand.box) for hand in hands[:1]]
        return sorted(found, key=lambda d: -d.score)[:1], model_ms

    def let_go_of_pose(self) -> None:
        """While nobody is in view the phone stage's pose model (~26 MB) is not needed: it is let
        go before the hand models (~24 MB together) are loaded, so that looking for hands on an
        empty desk holds no more memory than a frame with a person does, and loaded again
        (verified, ~15 ms here) at the next person's pose (:meth:`_pose_again`)."""
        if self.second_look is not None and self.second_look.pose.release():
            self.store.forget(POSE_MODEL)
            trim_heap()

    def _pose_again(self) -> Model:
        """The pose model, loaded again for a person after an empty desk let it go: the hand
        models, kept while the desk was empty, go first (the two are never held together)."""
        if self.hands is not None:
            self.hands.release()
        return self.store.load(POSE_MODEL)

    def find_faces(self, image: np.ndarray, detections: list[Detection]) -> tuple[list[Face], float]:
        """Faces in the whole frame, plus (short range) in the upper body of each person."""
        h, w = image.shape[:2]
        faces = self.faces.detect(image)
        model_ms = self.faces.model.invoke_ms
        if self.cfg.face_in_persons and self.cfg.face_model == "short_range":
            persons = sorted((d for d in detections if d.label == "person"), key=lambda d: -d.box.area)
            for person in persons[:FACE_CROP_MAX_PERSONS]:
                if person.box.height > FACE_CROP_SMALL and len(persons) == 1 and faces:
                    continue
                region = upper_body(person, w, h)
                faces += self.faces.detect(image, region)
                model_ms += self.faces.model.invoke_ms
            faces = merge_faces(faces, self.cfg.face_nms_iou)
        return faces, model_ms

    def look_closer(
        self, image: np.ndarray, detections: list[Detection], faces: list[Face]
    ) -> tuple[list[Detection], float]:
        """The phone stage: the whole-frame phones, food and drink (what the stage looks for)
        are replaced by what the second look confirms (phones with their behaviour, food or
        drink at the mouth of one of ``faces``)."""
        assert self.second_look is not None
        h, w = image.shape[:2]
        held = set(self.second_look.held)
        persons = [d for d in detections if d.label == "person"]
        votes = [d for d in detections if d.label in held] + self.objects.weak
        cfg = self.cfg.phones

        def judge(view: View, poses: list[Pose]) -> list[Detection]:
            phones = confirmed_phones(view.phone_places, poses, w, h, cfg)
            return phones + food_at_mouth(view.food_places, poses, faces, w, h, cfg)

        look = self.second_look.look(image, persons, votes, judge)
        self.last_look = look
        found, hand_ms = self.somebody_holds(image, self.second_look.found(look), persons, faces)
        return [d for d in detections if d.label not in held] + found, look.model_ms + hand_ms

    def somebody_holds(
        self, image: np.ndarray, found: list[Detection], persons: list[Detection], faces: list[Face]
    ) -> tuple[list[Detection], float]:
        """The phones ``in_hand`` where somebody is seen to hold them: a face in the frame, a person
        NanoDet is sure of (``PERSON_STRONG``), or a hand the hand landmark model confirms in the
        frame; else they are ``visible`` (and the model time this took).

        The pose model is given a person box and draws a body in it, whether or not one is there:
        on an empty bed seen from above (a laptop, a book, a cup and a phone; review34a's
        phonedesk_01, backlit) NanoDet's weak 0.45 box covered the whole frame, the pose model put
        a head on the cup (presence 0.97, every hand point visible 0.79-0.96) and its hands on
        the phone: "in hand", phone_use in 7 of 10 bursts (5 of 10 as a 1280x720 frame). Nobody's
        face or hand was in the picture, and the models made for them say so (no face; hand
        presence 0.00). A phone really held shows the person holding it. A hand looked for at the
        phone itself is mostly hidden by it (the landmark model gave real held phones 0.00), so
        the hand check looks at the whole frame, and only where neither a face nor a sure person
        vouches: a worker typing on a phone at the waist, head out of the picture, through a
        160 degree lens showed no palm (phone_hand_02), but NanoDet was sure of the torso (0.71-0.85).
        Over the phone, hand and hard-negative photos (29) in ``deskwatch_dev.variants``'s 13
        camera variations and its 10 home ones, both sizes: true phone_use 45 and 11 as before,
        false phone_use 0 and 2 -> 1. A phone at the ear is left as it is (the hand holding it is
        hidden by the head and the phone). Only a frame with a phone in hand, no face and no sure
        person pays for it: the pose model is let go for the hand models, as on an empty desk
        (:meth:`let_go_of_pose`), and loaded again for the next frame. Without the hand check
        (``vision.hand_check`` off, or no away rule) such a phone is left as the pose put it."""
        strong = any(p.score >= PERSON_STRONG for p in persons)
        if faces or strong or self.hands is None or not any(d.behaviour == IN_HAND for d in found):
            return found, 0.0
        self.let_go_of_pose()
        held = bool(self.hands.find(image))
        if held:
            return found, self.hands.model_ms
        unheld = [Detection(d.label, d.score, d.box, VISIBLE) if d.behaviour == IN_HAND else d for d in found]
        return unheld, self.hands.model_ms

    def model_hashes(self) -> dict[str, str]:
        """file name -> sha256 of every model in use (published in health/status)."""
        return self.store.loaded()

    def close(self) -> None:
        self.store.close()
        self._identity = None
        self._embedder = None


def heat_classes(store: ModelStore, file: str) -> tuple[str, ...]:
    """The classes of a CenterNet file's heat channels, as its manifest entry lists them
    (``outputs.heat.classes``); all 80 COCO classes where it lists none."""
    listed = store.entry(file).info.get("outputs", {}).get("heat", {}).get("classes")
    if listed is None:
        return COCO_LABELS
    if not isinstance(listed, list) or not all(isinstance(c, str) for c in listed):
        raise ModelError(f"{store.directory / file}: outputs.heat.classes in the manifest is not a list of names")
    return tuple(listed)


def build_embedder(cfg: VisionConfig, store: ModelStore) -> FaceEmbedder:
    """The configured identity backend; raises ModelError or IdentityUnavailable."""
    if cfg.identity_backend == "face_recognition":
        return DlibEmbedder()
    return TfliteEmbedder(FaceAligner(store.load(FACE_MESH_MODEL)), store.load(FACE_EMBEDDER_MODEL))


def upper_body(person: Detection, width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel region of a person's head and shoulders (where the face is)."""
    x0, y0, x1, y1 = person.box.x0 * width, person.box.y0 * height, person.box.x1 * width, person.box.y1 * height
    pw = x1 - x0
    side = min(max(pw, 8.0), y1 - y0) if y1 - y0 > 8 else max(pw, 8.0)
    cx = (x0 + x1) / 2
    rx0, rx1 = cx - side * 0.6, cx + side * 0.6
    ry0, ry1 = y0 - side * 0.1, y0 + side * 1.0
    return (max(0, int(rx0)), max(0, int(ry0)), min(width, int(rx1) + 1), min(height, int(ry1) + 1))


def _contained(inner: Box, outer: Box) -> float:
    """Share of ``inner``'s area that lies inside ``outer``."""
    ix = max(0.0, min(inner.x1, outer.x1) - max(inner.x0, outer.x0))
    iy = max(0.0, min(inner.y1, outer.y1) - max(inner.y0, outer.y0))
    return ix * iy / inner.area if inner.area > 0 else 1.0


def _owns(person: Box, face: Face) -> bool:
    """The face's centre is in the upper half of the person's box."""
    fx, fy = face.box.centre
    return person.x0 <= fx <= person.x1 and person.y0 <= fy <= person.y0 + 0.5 * person.height


def drop_duplicate_persons(detections: list[Detection], faces: list[Face]) -> list[Detection]:
    """Remove weak person boxes that are a fragment or a loose double of a stronger one.

    NanoDet often adds a weak, looser second box around someone already found (or
    around two people at once). Such a box is dropped when it is weak
    (< PERSON_STRONG), mostly inside a stronger person box (>= PERSON_CONTAINED) and
    owns no face of its own; a face belongs to the first (strongest) person box
    whose upper half contains its centre. A weak box around a face nobody owns yet
    is kept: that is a real person partly hidden behind another.

    Two boxes one of which lies (almost) wholly inside the other (>= PERSON_NESTED),
    whatever their scores, are one person when the weaker owns no face: a fragment
    inside a stronger box, or a loose box around a stronger one. Seen from above, a
    worker's arms and back gave two strong boxes, one the right half of the other
    (0.56 inside 0.58), and a darkened photo of a man eating a loose 0.51 box around
    his own 0.84 one: each made an ``extra_person``; so did a tilted camera's faceless 0.551
    box 89 % inside the worker's 0.82 one (hence a weak box is one under 0.6). A second person hidden inside
    another's box (or around it) with no face of their own cannot be told from such
    a double; leaving them out misses an extra person rather than accusing the worker
    of one.
    """
    persons = sorted((d for d in detections if d.label == "person"), key=lambda d: -d.score)
    if len(persons) < 2:
        return detections
    kept: list[Detection] = []
    claimed: set[int] = set()
    for person in persons:
        own = [i for i, f in enumerate(faces) if i not in claimed and _owns(person.box, f)]
        inside = max((_contained(person.box, k.box) for k in kept), default=0.0)
        around = max((_contained(k.box, person.box) for k in kept), default=0.0)
        nested = max(inside, around) >= PERSON_NESTED
        if not own and (nested or (person.score < PERSON_STRONG and inside >= PERSON_CONTAINED)):
            continue
        kept.append(person)
        claimed.update(own)
    dropped = {id(p) for p in persons} - {id(k) for k in kept}
    return [d for d in detections if id(d) not in dropped]
