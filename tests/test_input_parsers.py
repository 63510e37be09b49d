"""Property-based tests of the parsers that take user data: boxes JSON, camera intrinsics,
image arrays of any shape and dtype. Whatever they are given, they return a value that keeps
their promise or raise ``ValueError`` (which the CLI turns into one line), nothing else."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hmdiff_ros.camera import check_intrinsics, intrinsics_from_fov
from hmdiff_ros.defaults import HFOV_RANGE
from hmdiff_ros.image import to_rgb8
from hmdiff_ros.pipeline.run import box_list_error, load_boxes

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(10**6), 10**6) | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=20,
)
BOX = st.lists(st.one_of(st.floats(-1e4, 1e4), st.integers(-(10**4), 10**4)), min_size=4, max_size=4)


def _write(data) -> Path:
    f = tempfile.NamedTemporaryFile("w", suffix=".json", delete=False)
    f.write(json.dumps(data))
    f.close()
    return Path(f.name)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(JSON, st.dictionaries(st.text(max_size=8), st.lists(st.one_of(BOX, JSON), max_size=4))))
def test_boxes_file_is_valid_boxes_or_a_value_error_naming_the_file(data):
    path = _write(data)
    try:
        boxes = load_boxes(path)
    except ValueError as exc:
        assert str(path) in str(exc)
        return
    finally:
        path.unlink()
    assert isinstance(boxes, dict)
    for value in boxes.values():
        for box in value:
            assert len(box) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)
            assert all(math.isfinite(v) for v in box) and box[2] > box[0] and box[3] > box[1]


@given(BOX)
def test_a_box_is_accepted_exactly_when_it_is_ordered(box):
    assert (box_list_error([box]) is None) == (box[2] > box[0] and box[3] > box[1])


def test_booleans_are_not_coordinates():
    assert "finite numbers" in box_list_error([[True, 0, 10, 10]])


@settings(max_examples=400, deadline=None)
@given(
    hnp.arrays(np.float64, (3, 3), elements=st.floats(allow_nan=True, allow_infinity=True, width=64)),
    st.integers(1, 5000),
    st.integers(1, 5000),
)
def test_intrinsics_are_plausible_or_a_value_error(K, w, h):
    try:
        out = check_intrinsics(K, w, h)
    except ValueError as exc:
        assert "K" in str(exc)
        return
    assert np.isfinite(out).all() and out[0, 0] > 0 and out[1, 1] > 0
    assert -w / 4 <= out[0, 2] <= 1.25 * w and -h / 4 <= out[1, 2] <= 1.25 * h
    hfov = 2 * math.degrees(math.atan2(w / 2, out[0, 0]))
    assert HFOV_RANGE[0] < hfov < HFOV_RANGE[1]


@given(st.integers(8, 4000), st.integers(8, 4000), st.floats(HFOV_RANGE[0] + 0.5, HFOV_RANGE[1] - 30))
def test_intrinsics_from_a_field_of_view_are_plausible(w, h, hfov):
    assume(2 * math.degrees(math.atan2(h / 2, 0.5 * w / math.tan(math.radians(hfov) / 2))) < HFOV_RANGE[1])
    check_intrinsics(intrinsics_from_fov(w, h, hfov), w, h)


@pytest.mark.parametrize(
    "K, why",
    [
        ([[1e-3, 0, 320], [0, 1e-3, 240], [0, 0, 1]], "fields of view"),  # a focal length of a thousandth of a pixel
        ([[1e7, 0, 320], [0, 1e7, 240], [0, 0, 1]], "fields of view"),
        ([[500, 0, 9000], [0, 500, 240], [0, 0, 1]], "principal point"),
        ([[-500, 0, 320], [0, 500, 240], [0, 0, 1]], "positive"),
        ([[500, 0, 320], [0, 500, 240], [0, 0, 0]], "last two rows"),
        ([[500, 0, 320], [0, 10, 240], [0, 0, 1]], "square"),
        ([[1, 2], [3, 4]], "3x3"),
        ("K", "3x3"),
    ],
)
def test_absurd_intrinsics_are_named(K, why):
    with pytest.raises(ValueError, match=why):
        check_intrinsics(K, 640, 480)


DTYPES = st.sampled_from([np.uint8, np.uint16, np.int8, np.int32, np.float16, np.float32, np.float64, np.bool_])


@settings(max_examples=300, deadline=None)
@given(hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=6)))
def test_any_array_is_an_rgb8_image_or_a_value_error(image):
    try:
        out = to_rgb8(image, "frame 7")
    except ValueError as exc:
        assert "frame 7" in str(exc)
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and out.shape[:2] == image.shape[:2]


@settings(max_examples=200, deadline=None)
@given(hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=12)))
def test_the_pipeline_input_check_accepts_only_rgb8(image):
    from hmdiff_ros.image import check_image

    try:
        out = check_image(image)
    except ValueError as exc:
        assert "image" in str(exc)
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and min(out.shape[:2]) >= 8
