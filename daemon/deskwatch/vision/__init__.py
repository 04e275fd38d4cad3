"""On-device vision: light/obstruction statistics, object and face detectors, identity.

- ``runtime``: the one TFLite loader (ai-edge-litert, else tflite-runtime), models
  verified against ``models/manifest.yaml`` before loading.
- ``objects``: NanoDet-g-416 COCO detector (int8 by default) and the phone pass.
- ``faces``: BlazeFace short range: boxes, keypoints, facing estimate.
- ``identity``: face_recognition's encoder on BlazeFace crops; templates (0600).
- ``light``: pixel statistics that gate every other check.
- ``pipeline``: ``build_vision(cfg).analyze(frame) -> FrameAnalysis`` for the scan loop.

Heavy imports (TFLite, dlib, OpenCV) happen when a detector is built, not here.
"""
