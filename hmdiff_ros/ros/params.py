"""The node's parameters (ROS-free, so tests and the params file can be checked without ROS).

``launch/hmdiff_params.yaml`` lists the same names with the same defaults.
"""

from __future__ import annotations

import re

from hmdiff_ros import defaults

# name: (default, description, read_only, range)
PARAMETERS = {
    "backend": (defaults.BACKEND, "model backend: torch, onnxruntime, tensorrt or auto", True, None),
    "checkpoint": ("", "checkpoint folder ('' = the shipped one)", True, None),
    "engines": (defaults.ENGINES, "folder of the ONNX export / TensorRT engines", True, None),
    "compressed": (False, "subscribe image/compressed (sensor_msgs/CompressedImage)", True, None),
    "use_detections": (False, "one person per box of 'detections' (vision_msgs/Detection2DArray)", True, None),
    "image_qos": (
        "sensor_data",
        "QoS of the image and camera_info subscriptions: sensor_data (best effort, "
        "receives from any publisher) or reliable",
        True,
        None,
    ),
    "target_frame": (
        "",
        "publish humans, markers and TF in this frame, through TF at the image stamp ('' = the image's optical frame)",
        True,
        None,
    ),
    "tf_timeout_s": (0.1, "wait at most this long for the transform to target_frame", False, (0.0, 2.0)),
    "ddim_steps": (defaults.STEPS, "DDIM steps", False, defaults.STEPS_RANGE),
    "dat_mode": (defaults.DAT_MODE, "DAT gradient mode: off, fast or full (full: torch backend only)", False, None),
    "dat_tau": (defaults.DAT_TAU, "DAT: align while the relative gap exceeds tau", False, defaults.DAT_TAU_RANGE),
    "dat_lambda": (
        defaults.DAT_LAMBDA,
        "DAT: fraction of the gap one aligned step removes",
        False,
        defaults.DAT_LAMBDA_RANGE,
    ),
    "hypotheses": (defaults.HYPOTHESES, "diffusion samples per person (per-joint uncertainty)", False, (1, 16)),
    "max_people": (4, "most people processed per frame (with detections)", False, (1, 16)),
    "hfov_deg": (defaults.HFOV_DEG, "horizontal field of view used until camera_info arrives", False, (10.0, 170.0)),
    "mesh_resolution": (
        defaults.MESH_RESOLUTION,
        "mesh in the markers: none, coarse (600 vertices) or full",
        False,
        None,
    ),
    "mesh_every_n": (1, "publish the mesh marker every n-th frame (bandwidth)", False, (1, 100)),
    "publish_markers": (True, "publish ~/markers", False, None),
    "publish_debug_image": (True, "publish ~/debug_image", False, None),
    "publish_tf": (True, "publish a TF frame per person", False, None),
    "publish_joint_tf": (False, "also publish a TF frame per joint", False, None),
    "tf_prefix": (defaults.TF_PREFIX, "TF frames are <tf_prefix>_<id> ('body' gives REP-155 names)", False, None),
    "publish_hri": (
        False,
        "also publish REP-155 bodies (needs hri_msgs): /humans/bodies/tracked, per body skeleton2d, roi, "
        "joint_states, its URDF (parameter human_description_<id>) and a robot_state_publisher where "
        "installed; body frames are then body_<id>",
        True,
        None,
    ),
    "publish_vertices": (False, "fill coarse_vertices in ~/humans", False, None),
    "tracking": (True, "track ids and One-Euro smoothing across frames", False, None),
    "max_rate_hz": (0.0, "process at most this many frames per second (0: as fast as possible)", False, (0.0, 120.0)),
    "marker_lifetime_s": (
        0.5,
        "markers of people no longer seen expire after this, or after 2.5 frame intervals of a slower node",
        False,
        (0.0, 10.0),
    ),
    "autostart": (True, "configure and activate on start (no lifecycle manager needed)", True, None),
}

MARKER_FRAMES = 2.5  # frame intervals a marker outlives (frame_options)

CHOICES = {
    "backend": defaults.BACKENDS,
    "dat_mode": defaults.DAT_MODES,
    "mesh_resolution": defaults.MESH_RESOLUTIONS,
    "image_qos": ("sensor_data", "reliable"),
}


def parameter_error(name: str, value, values: dict) -> str | None:
    """Why ``name = value`` is not accepted given the other current ``values``, or None.
    Ranges are checked by ROS from the descriptors; this checks choices and combinations."""
    if name in CHOICES and value not in CHOICES[name]:
        return f"{name} must be one of {', '.join(CHOICES[name])}, got {value!r}"
    if name == "tf_prefix" and (not value or value.startswith("/") or any(c.isspace() for c in value)):
        return f"tf_prefix must be a frame name without a leading '/' or spaces, got {value!r}"
    backend = value if name == "backend" else values.get("backend")
    dat = value if name == "dat_mode" else values.get("dat_mode")
    if dat == "full" and backend not in ("torch", "auto"):  # auto loads torch for full DAT
        return "dat_mode full needs backend torch or auto (the exported graphs use fast DAT)"
    return None


def namespace_error(namespace: str) -> str | None:
    """Why ``namespace`` cannot prefix ROS topic names, or None: tokens of letters, digits and
    underscores that do not start with a digit, separated by single '/' ('' or '/': none)."""
    tokens = namespace.strip("/").split("/") if namespace.strip("/") else []
    if "//" in namespace or not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", t) for t in tokens):
        return (
            f"--namespace must be a ROS namespace such as /hmdiff (letters, digits and '_' between single '/', "
            f"no token starting with a digit), got {namespace!r}"
        )
    return None


def pipeline_config_of(values: dict, debug_image_watched: bool = True):
    """The pipeline's :class:`~hmdiff_ros.pipeline.config.PipelineConfig` for the node's
    parameter ``values``: the full mesh for ``mesh_resolution: full``, and for the debug overlay
    while someone watches it (``debug_image_watched``); otherwise no up-sampling at all."""
    from hmdiff_ros.pipeline.config import pipeline_config

    return pipeline_config(
        steps=values["ddim_steps"],
        dat_mode=values["dat_mode"],
        dat_tau=values["dat_tau"],
        dat_lambda=values["dat_lambda"],
        hypotheses=values["hypotheses"],
        hfov_deg=values["hfov_deg"],
        full_mesh=values["mesh_resolution"] == "full" or (values["publish_debug_image"] and debug_image_watched),
        backend=values["backend"],
        engines=values["engines"],
    )


def parameters_error(
    values: dict, changes: dict | None = None, batch_limit: int | None = None, backend: str = ""
) -> str | None:
    """Why the parameter ``values`` are refused, or None; with ``changes`` (name: value), why
    setting those on top of ``values`` is (each checked against the values with the earlier
    ones set, as a set-parameters callback must). ``hypotheses`` must also fit the ``backend``'s
    largest batch ``batch_limit`` (None: not known yet)."""
    changes, values, before = (values if changes is None else changes), dict(values), values.get("dat_mode")
    for name, value in changes.items():
        why = parameter_error(name, value, values)
        if why:
            return why
        values[name] = value
    if batch_limit and values["hypotheses"] > batch_limit:
        return f"hypotheses {values['hypotheses']} exceed the {backend} backend's largest batch of {batch_limit}"
    if backend and backend != "torch" and values["dat_mode"] == "full" and values["dat_mode"] != before:
        return f"dat_mode full needs the torch backend; {backend} runs (backend {values['backend']}; set at start)"
    return None


def frame_options(
    values: dict, frame: int, hri: bool, debug_image: bool, markers: bool = True, frame_interval_s: float = 0.0
):
    """What the node publishes for its ``frame``-th frame (from 1) under the parameter
    ``values``, as :class:`~hmdiff_ros.ros.convert.FrameOptions`: the mesh marker every
    ``mesh_every_n``-th frame; ``hri``: the ids have a publisher; ``debug_image`` and
    ``markers``: the overlay and the markers have a subscriber (nothing is drawn or built for
    nobody). Markers live ``marker_lifetime_s`` but at least ``MARKER_FRAMES`` times the node's
    recent ``frame_interval_s`` (at most 10 s): each frame's DELETEALL removes people who left, the
    lifetime only clears them when frames stop, and a shorter one than the frame interval made a
    slow node's markers flicker (the full mesh beside RViz on 2 cores)."""
    from hmdiff_ros.ros.convert import FrameOptions

    return FrameOptions(
        vertices=values["publish_vertices"],
        markers=values["publish_markers"] and markers,
        mesh=values["mesh_resolution"] if frame % values["mesh_every_n"] == 0 else "none",
        marker_lifetime_s=max(values["marker_lifetime_s"], min(MARKER_FRAMES * frame_interval_s, 10.0)),
        tf=values["publish_tf"],
        joint_tf=values["publish_joint_tf"],
        tf_prefix=values["tf_prefix"],
        hri=hri,
        debug_image=values["publish_debug_image"] and debug_image,
    )
