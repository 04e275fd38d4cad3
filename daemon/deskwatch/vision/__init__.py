"""On-device vision: light/obstruction statistics, object and face detectors, identity.

- ``runtime``: the one TFLite loader (ai-edge-litert, else tflite-runtime), models
  verified against ``models/manifest.yaml`` before loading.
- ``objects``: NanoDet-g-416 COCO detector (int8 by default); keeps weak phone votes.
- ``faces``: BlazeFace (full range by default): boxes, keypoints, facing estimate.
- ``pose``: MediaPipe BlazePose landmarks on a person box (ears where the face is hidden).
- ``phones``: weak phone votes fused at each ear: phones held to the ear.
- ``identity``: face_recognition's encoder on BlazeFace crops; templates (0600).
- ``light``: pixel statistics that gate every other check.
- ``pipeline``: ``Vision(vision_cfg, identity=...).analyze(frame) -> FrameAnalysis`` for the scan loop.

Heavy imports (TFLite, dlib, OpenCV) happen when a detector is built, not here.
"""
