"""Defaults and limits of the frame pipeline's options, defined once (no heavy imports).

The command line, the node's parameters and :class:`~hmdiff_ros.pipeline.pipeline.PipelineConfig`
read them from here, so a default or a limit cannot differ between them.
"""

from __future__ import annotations

STEPS = 2  # DDIM steps (chosen on the validation split and the prior study: docs/model_card.md)
STEPS_RANGE = (1, 50)
DAT_MODES = ("off", "fast", "full")
DAT_MODE = "off"
DAT_TAU = 0.3  # DAT aligns while the relative gap exceeds tau
DAT_TAU_RANGE = (0.0, 1.0)
DAT_LAMBDA = 0.5  # DAT: fraction of the gap one aligned step removes
DAT_MAX_FRACTION = 0.5  # DAT acts in this first fraction of the steps (at least one)
DAT_LAMBDA_RANGE = (0.0, 2.0)
HYPOTHESES = 4  # diffusion samples per person
HYPOTHESES_RANGE = (1, 64)
# people x hypotheses in one model call; more people are sampled in chunks of this size
# (a call's memory grows with it: 10,000 rows took 8.5 GB)
MAX_BATCH = 256
# Without CameraInfo, intrinsics come from this horizontal field of view (a typical webcam /
# RealSense colour stream) with the principal point at the image centre.
HFOV_DEG = 65.0
HFOV_RANGE = (1.0, 179.0)  # exclusive bounds, degrees
BACKENDS = ("torch", "onnxruntime", "tensorrt", "auto")
# the default: the fastest that loads here (tensorrt, then onnxruntime on an export made once in
# the user's cache, then torch), see hmdiff_ros/runtime/backends.py
BACKEND = "auto"
ENGINES = "engines"  # folder of the ONNX export / TensorRT engines
EXPORT_DAT_MODES = ("off", "fast")  # DAT inside the exported graphs (full needs autograd)
# outputs: mesh resolution in the markers, and TF frames <TF_PREFIX>_<id> ('body': REP-155 names)
MESH_RESOLUTIONS = ("none", "coarse", "full")
MESH_RESOLUTION = "coarse"
TF_PREFIX = "hmdiff_body"
# a person whose pelvis lands nearer than this or farther than MAX_DEPTH_M from the camera is
# not a plausible result (absurd intrinsics, a failed prior): it is rejected, never published
MIN_DEPTH_M = 0.2
MAX_DEPTH_M = 100.0


def range_error(name: str, value, bounds, integer: bool = False, exclusive: bool = False) -> str | None:
    """Why ``value`` is not an acceptable ``name`` within ``bounds``, or None."""
    lo, hi = bounds
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        return f"{name} must be {kind}, got {value!r}"
    if value != value or (value <= lo or value >= hi if exclusive else value < lo or value > hi):
        span = f"between {lo} and {hi} (exclusive)" if exclusive else f"in {lo}..{hi}"
        return f"{name} must be {kind} {span}, got {value!r}"
    return None
