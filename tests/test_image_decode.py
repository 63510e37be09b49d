"""Image messages -> RGB with numpy and OpenCV only (``bridge.image_to_rgb``): for every
supported encoding the same image as rosbags-image, the converter it replaces, gave; row
padding, big-endian 16-bit data, compressed images with image_transport's format strings;
and property tests: any message gives an RGB image or a ValueError, valid ones round-trip."""

import array
import zlib
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hmdiff_ros.image import to_rgb8
from hmdiff_ros.ros import bridge
from hmdiff_ros.ros import convert as C

# encoding -> (channels, dtype, channel order): written out here, independently of convert.py
LAYOUTS = {
    "rgb8": (3, np.uint8, "rgb"),
    "bgr8": (3, np.uint8, "bgr"),
    "rgba8": (4, np.uint8, "rgba"),
    "bgra8": (4, np.uint8, "bgra"),
    "mono8": (1, np.uint8, "gray"),
    "8UC1": (1, np.uint8, "gray"),
    "8UC3": (3, np.uint8, "bgr"),
    "8UC4": (4, np.uint8, "bgra"),
    "rgb16": (3, np.uint16, "rgb"),
    "bgr16": (3, np.uint16, "bgr"),
    "rgba16": (4, np.uint16, "rgba"),
    "bgra16": (4, np.uint16, "bgra"),
    "mono16": (1, np.uint16, "gray"),
    "16UC1": (1, np.uint16, "gray"),
    "16UC3": (3, np.uint16, "bgr"),
    "16UC4": (4, np.uint16, "bgra"),
    "yuv422": (2, np.uint8, "uyvy"),
    "uyvy": (2, np.uint8, "uyvy"),
    "yuv422_yuy2": (2, np.uint8, "yuyv"),
    "yuyv": (2, np.uint8, "yuyv"),
}
DIRECT = [e for e, (_, _, order) in LAYOUTS.items() if order not in ("uyvy", "yuyv")]
UNSUPPORTED = ["bayer_rggb8", "bayer_bggr16", "nv12", "32FC1", "16SC1", "RGB8", "jpeg", ""]


def test_the_supported_encodings_are_these():
    assert set(bridge.ENCODINGS) == set(LAYOUTS)


def image_msg(pixels, encoding, pad=0, bigendian=False, data_type="numpy"):
    """A ``sensor_msgs/Image`` of ``pixels`` ``(H, W, C)`` with ``pad`` bytes after each row;
    ``data_type``: numpy (rosbags), array (rclpy's ``array.array``) or bytes."""
    channels, dtype, _ = LAYOUTS[encoding]
    h, w = pixels.shape[:2]
    typed = np.asarray(pixels, dtype=np.dtype(dtype).newbyteorder(">" if bigendian else "<"))
    rows = np.ascontiguousarray(typed).reshape(h, w * channels).view(np.uint8)  # (H, row bytes)
    rows = np.concatenate([rows, np.full((h, pad), 0xA5, np.uint8)], axis=1)  # padding: must never show
    data = rows.ravel()
    data = {"numpy": data, "array": array.array("B", data.tobytes()), "bytes": data.tobytes()}[data_type]
    return SimpleNamespace(
        height=h, width=w, encoding=encoding, is_bigendian=int(bigendian), step=rows.shape[1], data=data
    )


def random_pixels(rng, encoding, h=6, w=8):
    channels, dtype, _ = LAYOUTS[encoding]
    return rng.integers(0, np.iinfo(dtype).max + 1, (h, w, channels), dtype=dtype)


def rosbags_image_rgb(msg):
    """What image_to_rgb returned through rosbags-image: 1-channel and generic encodings as
    they are, colour ones converted to bgr8 (bgr16 for 16 bits), then to_rgb8."""
    image = pytest.importorskip("rosbags.image", reason="rosbags-image is not installed (the [test] extra)")
    channels, dtype, order = LAYOUTS[msg.encoding]
    if order == "gray" or msg.encoding[0].isdigit():
        return to_rgb8(image.message_to_cvimage(msg), "reference")
    target = "bgr16" if dtype == np.uint16 else "bgr8"
    return to_rgb8(np.ascontiguousarray(image.message_to_cvimage(msg, target)), "reference")


def expected_rgb(pixels, encoding):
    """RGB uint8 of ``pixels`` by numpy alone (16 bits scaled by 1/257, rounded)."""
    _, dtype, order = LAYOUTS[encoding]
    x = np.asarray(pixels)
    if dtype == np.uint16:
        x = np.round(x / 257.0).astype(np.uint8)
    return {
        "gray": lambda: np.repeat(x, 3, axis=2),
        "rgb": lambda: x,
        "bgr": lambda: x[..., ::-1],
        "rgba": lambda: x[..., :3],
        "bgra": lambda: x[..., 2::-1],
    }[order]()


@pytest.mark.parametrize("encoding", list(LAYOUTS))
def test_every_encoding_decodes_as_rosbags_image_did(encoding):
    rng = np.random.default_rng(zlib.crc32(encoding.encode()))
    pixels = random_pixels(rng, encoding, 10, 12)
    ref = rosbags_image_rgb(image_msg(pixels, encoding))
    out = bridge.image_to_rgb(image_msg(pixels, encoding))
    assert out.shape == (10, 12, 3) and out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, ref)
    if encoding in DIRECT:
        np.testing.assert_array_equal(out, expected_rgb(pixels, encoding))


@pytest.mark.parametrize("encoding", list(LAYOUTS))
@pytest.mark.parametrize("pad", [1, 3, 64])
def test_row_padding_is_skipped(encoding, pad):
    """rosbags-image ignored ``step``; the reference is the same pixels without padding."""
    pixels = random_pixels(np.random.default_rng(pad), encoding, 5, 6)
    out = bridge.image_to_rgb(image_msg(pixels, encoding, pad=pad))
    np.testing.assert_array_equal(out, rosbags_image_rgb(image_msg(pixels, encoding)))


@pytest.mark.parametrize("encoding", [e for e in LAYOUTS if LAYOUTS[e][1] == np.uint16])
def test_big_endian_16_bit_data(encoding):
    pixels = random_pixels(np.random.default_rng(7), encoding, 4, 6)
    big = image_msg(pixels, encoding, bigendian=True)
    assert big.data.tobytes() != image_msg(pixels, encoding).data.tobytes(), "the bytes differ"
    out = bridge.image_to_rgb(big)
    np.testing.assert_array_equal(out, rosbags_image_rgb(big))
    np.testing.assert_array_equal(out, expected_rgb(pixels, encoding))
    np.testing.assert_array_equal(bridge.image_to_rgb(image_msg(pixels, encoding, pad=2, bigendian=True)), out)


@pytest.mark.parametrize("data_type", ["array", "bytes"])
def test_rclpy_data_types(data_type):
    pixels = random_pixels(np.random.default_rng(3), "mono16", 4, 5)
    out = bridge.image_to_rgb(image_msg(pixels, "mono16", pad=2, data_type=data_type))
    np.testing.assert_array_equal(out, expected_rgb(pixels, "mono16"))


def test_a_rosbags_message_through_cdr():
    store = C.typestore_for("humble")
    f = C.MessageFactory.for_rosbags(store)
    pixels = random_pixels(np.random.default_rng(5), "bgra8", 3, 4)
    plain = image_msg(pixels, "bgra8", pad=4)
    msg = f.make(
        "sensor_msgs/msg/Image",
        header=C.header(f, 0, 0, "cam"),
        height=3,
        width=4,
        encoding="bgra8",
        is_bigendian=0,
        step=plain.step,
        data=plain.data,
    )
    msg = store.deserialize_cdr(store.serialize_cdr(msg, "sensor_msgs/msg/Image"), "sensor_msgs/msg/Image")
    np.testing.assert_array_equal(bridge.image_to_rgb(msg), expected_rgb(pixels, "bgra8"))


@pytest.mark.parametrize("encoding", UNSUPPORTED)
def test_unsupported_encodings_name_themselves_and_the_supported_ones(encoding):
    msg = SimpleNamespace(height=2, width=2, encoding=encoding, is_bigendian=0, step=6, data=np.zeros(12, np.uint8))
    with pytest.raises(ValueError) as err:
        bridge.image_to_rgb(msg)
    assert str(err.value) == f"image encoding '{encoding}' is not supported; expected one of {list(bridge.ENCODINGS)}"


def test_bad_sizes_name_the_byte_counts():
    pixels = np.zeros((4, 5, 3), np.uint8)
    msg = image_msg(pixels, "rgb8", pad=1)
    short = SimpleNamespace(**{**vars(msg), "data": msg.data[:-1]})
    with pytest.raises(
        ValueError,
        match=r"^cannot decode the rgb8 image: 5x4 with step 16 needs 64 bytes of data, "
        r"got 63$",
    ):
        bridge.image_to_rgb(short)
    long = SimpleNamespace(**{**vars(msg), "data": np.zeros(65, np.uint8)})
    with pytest.raises(ValueError, match="needs 64 bytes of data, got 65"):
        bridge.image_to_rgb(long)
    with pytest.raises(ValueError, match=r"step 14 is shorter than a row of 5 pixels \(15 bytes\)"):
        bridge.image_to_rgb(SimpleNamespace(**{**vars(msg), "step": 14, "data": np.zeros(56, np.uint8)}))
    odd = image_msg(np.zeros((2, 3, 2), np.uint8), "yuv422")
    with pytest.raises(ValueError, match="cannot decode the yuv422 image: its width must be even, got 3"):
        bridge.image_to_rgb(odd)
    with pytest.raises(ValueError, match=r"it is empty \(0x4\)"):
        bridge.image_to_rgb(SimpleNamespace(height=4, width=0, encoding="mono8", is_bigendian=0, step=0, data=b""))
    with pytest.raises(ValueError, match="its data is not a byte array"):
        bridge.image_to_rgb(SimpleNamespace(height=1, width=1, encoding="mono8", is_bigendian=0, step=1, data=[300]))


# ---- compressed ------------------------------------------------------------------------------
def compressed_msg(fmt, data):
    return SimpleNamespace(format=fmt, data=np.frombuffer(bytes(data), np.uint8))


def photo(h=48, w=64, seed=1):
    rng = np.random.default_rng(seed)  # blocks of colour: JPEG keeps them close
    return np.kron(rng.integers(0, 256, (h // 8, w // 8, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))


FORMATS = [
    "jpeg",
    "png",
    "bgr8; jpeg compressed bgr8",
    "rgb8; jpeg compressed bgr8",
    "rgb8; png compressed bgr8",
    "mono8; jpeg compressed mono8",
    "mono8; png compressed mono8",
    "bgra8; png compressed bgra8",
]


@pytest.mark.parametrize("fmt", FORMATS)
def test_compressed_images_decode_as_rosbags_image_did(fmt):
    image = pytest.importorskip("rosbags.image", reason="rosbags-image is not installed (the [test] extra)")
    bgr = photo()[..., ::-1]
    if fmt.startswith("mono8"):
        bgr = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    elif fmt.startswith("bgra8"):
        bgr = np.dstack([bgr, np.full(bgr.shape[:2], 128, np.uint8)])
    ok, buf = cv2.imencode(".png" if "png" in fmt else ".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    msg = compressed_msg(fmt, buf)
    out = bridge.image_to_rgb(msg)
    ref = to_rgb8(np.ascontiguousarray(image.compressed_image_to_cvimage(msg, "bgr8")), "reference")
    np.testing.assert_array_equal(out, ref)
    rgb = np.repeat(bgr[..., None], 3, axis=2) if bgr.ndim == 2 else bgr[..., 2::-1]  # (alpha dropped)
    assert np.abs(out.astype(int) - rgb).mean() < (0.5 if "png" in fmt else 8), "colours kept (not BGR)"


def test_a_16_bit_png_is_scaled_like_mono16():
    gray16 = random_pixels(np.random.default_rng(2), "mono16", 6, 8)[..., 0]
    ok, buf = cv2.imencode(".png", gray16)
    assert ok
    out = bridge.image_to_rgb(compressed_msg("16UC1; png compressed", buf))
    np.testing.assert_array_equal(out, bridge.image_to_rgb(image_msg(gray16[..., None], "mono16")))


@pytest.mark.parametrize(
    "fmt,data,message",
    [
        ("jpeg", b"", "it has no data"),
        ("jpeg", b"\xff\xd8\xff\xe0 not really a jpeg", "not a format OpenCV can decode, or corrupt data"),
        ("16UC1; compressedDepth png", b"\x00" * 12 + b"\x89PNG", "compressedDepth images are depth maps"),
    ],
)
def test_bad_compressed_images_are_named(fmt, data, message):
    with pytest.raises(ValueError, match=rf"^cannot decode the compressed image \(format '{fmt}'\): {message}"):
        bridge.image_to_rgb(compressed_msg(fmt, data))


# ---- properties -------------------------------------------------------------------------------
PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
byte_data = st.one_of(
    st.binary(max_size=300),
    st.lists(st.integers(-3, 300), max_size=60),
    st.binary(max_size=300).map(lambda b: np.frombuffer(b, np.uint8)),
    st.binary(max_size=300).map(lambda b: array.array("B", b)),
)


@PROPERTY
@given(
    encoding=st.one_of(st.sampled_from(list(LAYOUTS) + UNSUPPORTED), st.text(max_size=12)),
    height=st.integers(-2, 12),
    width=st.integers(-2, 12),
    step=st.integers(-2, 100),
    is_bigendian=st.integers(0, 3),
    data=byte_data,
)
def test_any_raw_message_gives_rgb_or_a_value_error(encoding, height, width, step, is_bigendian, data):
    msg = SimpleNamespace(
        height=height, width=width, encoding=encoding, is_bigendian=is_bigendian, step=step, data=data
    )
    try:
        out = bridge.image_to_rgb(msg)
    except ValueError:
        return
    assert out.shape == (height, width, 3) and out.dtype == np.uint8


@PROPERTY
@given(fmt=st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8", "", "h264"]), data=byte_data)
def test_any_compressed_message_gives_rgb_or_a_value_error(fmt, data):
    try:
        out = bridge.image_to_rgb(SimpleNamespace(format=fmt, data=data))
    except ValueError:
        return
    assert out.ndim == 3 and out.shape[2] == 3 and out.dtype == np.uint8


@PROPERTY
@given(
    encoding=st.sampled_from(DIRECT),
    height=st.integers(1, 9),
    width=st.integers(1, 9),
    pad=st.integers(0, 9),
    bigendian=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_valid_images_round_trip(encoding, height, width, pad, bigendian, seed):
    pixels = random_pixels(np.random.default_rng(seed), encoding, height, width)
    out = bridge.image_to_rgb(image_msg(pixels, encoding, pad=pad, bigendian=bigendian))
    np.testing.assert_array_equal(out, expected_rgb(pixels, encoding))


@PROPERTY
@given(
    encoding=st.sampled_from(["yuv422", "uyvy", "yuv422_yuy2", "yuyv"]),
    height=st.integers(1, 6),
    half_width=st.integers(1, 5),
    pad=st.integers(0, 9),
    seed=st.integers(0, 2**32 - 1),
)
def test_yuv_images_match_opencv(encoding, height, half_width, pad, seed):
    pixels = random_pixels(np.random.default_rng(seed), encoding, height, 2 * half_width)
    code = cv2.COLOR_YUV2RGB_UYVY if LAYOUTS[encoding][2] == "uyvy" else cv2.COLOR_YUV2RGB_YUYV
    out = bridge.image_to_rgb(image_msg(pixels, encoding, pad=pad))
    np.testing.assert_array_equal(out, cv2.cvtColor(pixels, code))
