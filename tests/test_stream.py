"""Overlapped stages for streams: every frame's result equals the sequential pipeline's, in order."""

import numpy as np

from hmdiff_ros.pipeline.config import pipeline_config
from hmdiff_ros.pipeline.io import read_image
from hmdiff_ros.pipeline.pipeline import build_pipeline
from hmdiff_ros.pipeline.run import DEMO_IMAGE
from hmdiff_ros.pipeline.stream import overlapped


def frames(n=6):
    image = read_image(DEMO_IMAGE)
    return [np.ascontiguousarray(image[8 * i : 8 * i + 448, 6 * i : 6 * i + 448]) for i in range(n)]


def test_overlapped_results_equal_the_sequential_ones_within_0_1_mm():
    """Equal up to float32 rounding: the overlapped model runs on half the cores' threads,
    which changes the order of PyTorch's sums (measured: about 1e-7 m)."""
    cfg = pipeline_config(steps=2, hypotheses=2)
    images = frames()
    sequential = build_pipeline(cfg, video=True)
    streamed = build_pipeline(cfg, video=True)  # each its own prior state (video mode follows the person)
    try:
        expected = [sequential.run(im) for im in images]
        got = list(overlapped(streamed, ((im, None, None, i) for i, im in enumerate(images))))
    finally:
        sequential.prior.close()
        streamed.prior.close()
    assert [tag for tag, _, _ in got] == list(range(len(images)))
    assert all(lat > 0 for _, _, lat in got)
    assert sum(len(r.people) for r in expected) >= len(images) - 1
    for want, (_, have, _) in zip(expected, got, strict=True):
        assert len(want.people) == len(have.people)
        for a, b in zip(want.people, have.people, strict=True):
            assert np.abs(a.joints - b.joints).max() < 1e-4 and np.abs(a.vertices - b.vertices).max() < 1e-4
            assert np.abs(a.joint_std - b.joint_std).max() < 1e-4 and a.score == b.score
            assert np.array_equal(a.box, b.box)  # the prior's half is the same code on the same frames
        assert set(have.timings) == set(want.timings)


def test_an_empty_stream_gives_nothing():
    pipe = build_pipeline(pipeline_config(steps=1, hypotheses=1))
    try:
        assert list(overlapped(pipe, [])) == []
    finally:
        pipe.prior.close()


def test_a_failing_source_gives_the_frame_in_flight_first():
    """A corrupt file or Ctrl-C in the source: the frame already prepared is not lost."""

    class Stage:
        def prepare(self, image, K, boxes):
            return image

        def finish(self, prepared):
            return prepared * 10

    def source():
        yield 1, None, None, "a"
        yield 2, None, None, "b"
        raise OSError("the video ends in garbage")

    got = []
    try:
        for tag, outcome, _ in overlapped(Stage(), source()):
            got.append((tag, outcome))
    except OSError as exc:
        assert "garbage" in str(exc)
    else:
        raise AssertionError("the source's error is raised after the frames in flight")
    assert got == [("a", 10), ("b", 20)]
