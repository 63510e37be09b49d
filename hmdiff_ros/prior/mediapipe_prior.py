"""MediaPipe BlazePose (``mediapipe==0.10.14``, models inside the wheel) as the pose prior.

33 landmarks with image coordinates, visibilities and metric "world" coordinates (metres,
origin between the hips, camera-aligned axes), and a person segmentation mask. They are
mapped to the prior joint set with :func:`hmdiff_ros.body.joints.mediapipe_to_joints_matrix`
(combined joints take the lowest visibility of their landmarks).

MediaPipe's start-up lines (TFLite, absl, protobuf) are kept off stderr: see
:mod:`hmdiff_ros.quiet` (``HMDIFF_VERBOSE=1`` or ``quiet_third_party(True)`` shows them).
"""

from __future__ import annotations

import logging
from typing import Dict

import numpy as np

from hmdiff_ros.body.joints import JOINT_INDEX, PRIOR_JOINT_INDICES, mediapipe_to_joints_matrix
from hmdiff_ros.image import check_image
from hmdiff_ros.observation import BOX_EXPAND, PriorPerson
from hmdiff_ros.quiet import quiet_third_party, third_party_output

quiet_third_party()  # before mediapipe is imported; keeps an earlier explicit choice
log = logging.getLogger(__name__)
VIDEO_GRAPHS = 3  # video mode: graphs kept, one per image size (a camera switching resolutions)

_MAP = mediapipe_to_joints_matrix()[0][list(PRIOR_JOINT_INDICES)]  # (24, 33)
_ROOT = list(PRIOR_JOINT_INDICES).index(JOINT_INDEX["pelvis"])


class MediaPipePrior:
    """BlazePose Full (``model_complexity=1``: the heavy and lite models are not in the wheel)."""

    def __init__(self, static_image_mode: bool = True, min_detection_confidence: float = 0.5) -> None:
        """``static_image_mode=False`` is MediaPipe's video mode: it follows the person from
        the previous frame (steadier, and it skips the detector while tracking). Calls with
        a ``box`` always use a separate still-image instance (crops of different people must
        not be tracked as one); :meth:`reset` starts a new video."""
        try:
            from mediapipe.python.solutions import pose as mp_pose
        except ImportError as exc:  # pragma: no cover - depends on the environment
            cause = exc
            while cause is not None:  # Ctrl-C inside MediaPipe's import can surface as an ImportError
                if isinstance(cause, KeyboardInterrupt):
                    raise cause from None
                cause = cause.__cause__ or cause.__context__
            raise ImportError("the pose prior needs mediapipe==0.10.14 (pip install 'mediapipe==0.10.14')") from exc
        self.static_image_mode = static_image_mode
        self._fresh: set = set()  # ids of graphs that have not run yet: their first call prints start-up lines

        def make(still: bool):
            with third_party_output():
                pose = mp_pose.Pose(
                    static_image_mode=still,
                    model_complexity=1,
                    enable_segmentation=True,
                    min_detection_confidence=min_detection_confidence,
                )
                # the graph opens its calculators (and prints) in worker threads: wait for that
                # inside the block, or the lines race past it
                graph = getattr(pose, "_graph", None)
                if hasattr(graph, "wait_until_idle"):
                    graph.wait_until_idle()
            self._fresh.add(id(pose))
            return pose

        self._make = make
        self._pose = self._make(static_image_mode)
        self._still = self._pose if static_image_mode else None
        self._size = None  # video mode: the (h, w) of the stream's frames
        self._videos: Dict[tuple, object] = {}  # video mode: a graph per image size, oldest first

    def reset(self) -> None:
        """Forget the tracked person (a new video or camera stream)."""
        if not self.static_image_mode:
            for pose in {id(p): p for p in (*self._videos.values(), self._pose)}.values():
                _close(pose)
            self._pose, self._videos, self._size = self._make(False), {}, None

    def _video_for(self, size: tuple):
        """The video graph for frames of ``size``: MediaPipe's video graph smooths the mask
        against the last frame's and fails on a new size (then on every frame), so each size
        has its own, kept for when the stream comes back to it (MediaPipe re-detects a person
        who is no longer where it was). A new graph each time would keep ~0.5 MiB per change:
        at most :data:`VIDEO_GRAPHS` are kept, the oldest closed."""
        if self._size is None and not self._videos:  # the first frame: the graph made at start
            self._videos[size] = self._pose
        if size not in self._videos:
            self._videos[size] = self._make(False)
            while len(self._videos) > VIDEO_GRAPHS:
                _close(self._videos.pop(next(iter(self._videos))))
        self._videos[size] = self._videos.pop(size)  # the most recent last
        return self._videos[size]

    def detect(self, image: np.ndarray, box: np.ndarray | None = None) -> PriorPerson | None:
        """The person in ``image``, or in ``box`` (u0, v0, u1, v1 pixels) when given: the box
        is squared and expanded by ``BOX_EXPAND`` (as training crops are), padded with black
        where it leaves the image, and the results are mapped back to image pixels."""
        image = check_image(image)
        h, w = image.shape[:2]
        u0 = v0 = 0
        if box is not None:
            box = np.asarray(box, dtype=np.float64).reshape(-1)
            if box.shape != (4,) or not np.isfinite(box).all() or box[2] <= box[0] or box[3] <= box[1]:
                raise ValueError(f"box must be finite (u0, v0, u1, v1) with u1 > u0 and v1 > v0, got {box.tolist()}")
            side = int(np.ceil(max(box[2] - box[0], box[3] - box[1]) * BOX_EXPAND))
            u0 = int(np.floor((box[0] + box[2] - side) / 2))
            v0 = int(np.floor((box[1] + box[3] - side) / 2))
            a0, b0, a1, b1 = max(0, u0), max(0, v0), min(w, u0 + side), min(h, v0 + side)
            if side < 8 or a1 - a0 < 8 or b1 - b0 < 8:
                return None  # too small, or outside the image
            crop = np.zeros((side, side, 3), np.uint8)
            crop[b0 - v0 : b1 - v0, a0 - u0 : a1 - u0] = image[b0:b1, a0:a1]
            image = crop
        if box is None:
            if not self.static_image_mode and self._size != image.shape[:2]:
                self._pose = self._video_for(image.shape[:2])
                self._size = image.shape[:2]
            pose = self._pose
        else:
            if self._still is None:
                self._still = self._make(True)
            pose = self._still
        if id(pose) in self._fresh:
            with third_party_output():
                result = pose.process(image)
            self._fresh.discard(id(pose))
        else:
            result = pose.process(image)
        if result.pose_landmarks is None or result.pose_world_landmarks is None:
            return None
        ch, cw = image.shape[:2]
        lm = np.array([(p.x * cw + u0, p.y * ch + v0, p.visibility) for p in result.pose_landmarks.landmark])
        world = np.array([(p.x, p.y, p.z) for p in result.pose_world_landmarks.landmark])  # metres
        uv = _MAP @ lm[:, :2]
        vis = np.array([lm[row > 0, 2].min() for row in _MAP])
        xyz = _MAP @ world
        xyz -= xyz[_ROOT]  # root: the pelvis (mean of the hips), as MediaPipe's origin
        mask = None
        if result.segmentation_mask is not None:
            mask = np.zeros((h, w), np.float32)
            if box is None:
                mask[:] = result.segmentation_mask
            else:
                mask[b0:b1, a0:a1] = result.segmentation_mask[b0 - v0 : b1 - v0, a0 - u0 : a1 - u0]
        return PriorPerson(uv=uv, visibility=vis, xyz=xyz, mask=mask, score=float(np.mean(lm[:, 2])))

    def close(self) -> None:
        graphs = (*self._videos.values(), self._pose, *([self._still] if self._still is not None else []))
        for pose in {id(p): p for p in graphs}.values():
            _close(pose)


def _close(pose) -> None:
    """Close a MediaPipe graph; one that has failed raises its error again on close, which is
    logged, not raised (it is being let go of anyway)."""
    try:
        pose.close()
    except Exception as exc:  # MediaPipe raises RuntimeError, or ValueError for a closed graph
        log.debug("closing a MediaPipe pose graph: %s: %s", type(exc).__name__, exc)
