"""The node's frame accounting (ROS-free): the health level follows the recent failure rate."""

from hmdiff_ros.ros.health import ERROR, OK, WARN, WINDOW, FrameHealth, reason_key


def test_no_frames_is_a_warning():
    assert FrameHealth().level()[0] == WARN


def test_every_frame_failing_after_a_good_start_is_an_error():
    h = FrameHealth()
    h.count("received")
    h.count("processed")
    for k in range(30):
        h.count("received")
        h.fail(f"no transform from 'cam' to target_frame 'map' at the image stamp {k}.5: timeout")
    level, message = h.level()
    assert level == ERROR and f"{WINDOW} of the last {WINDOW} frames failed" in message
    assert h["failed"] == 30 and h["processed"] == 1
    assert h.reasons_text() == "no transform from 'cam' to target_frame 'map' at the image stamp N (30)"


def test_a_recovered_stream_is_ok_again_and_drops_alone_warn():
    h = FrameHealth()
    for _ in range(3):
        h.count("received")
        h.fail("image encoding 'bayer_rggb8' is not supported; expected one of ...")
    assert h.level()[0] == ERROR
    for _ in range(WINDOW):
        h.count("received")
        h.count("processed")
    assert h.level() == (OK, "running")
    for _ in range(3 * WINDOW):
        h.count("received")
        h.count("dropped")
    assert h.level()[0] == WARN


def test_reasons_group_alike_failures():
    assert reason_key("frame 12: bad data") == reason_key("frame 7: other data") == "frame N"


def test_frame_interval_is_the_median_of_the_last_published_frames():
    """What the markers' lifetime follows (params.frame_options): 0 before two frames, then the
    median gap of the last six publish times, so one stall does not decide it."""
    h = FrameHealth()
    assert h.frame_interval() == 0.0
    h.processed(10.0, 10.0, 10.0, 0.0)
    assert h.frame_interval() == 0.0
    for t in (11.3, 12.6, 13.9, 20.0):  # three gaps of 1.3 s and one stall of 6.1 s
        h.processed(t, t, t, 0.0)
    assert abs(h.frame_interval() - 1.3) < 1e-9
    for k in range(1, 7):  # a faster stream replaces it
        h.processed(20.0 + 0.2 * k, 20.0, 20.0, 0.0)
    assert abs(h.frame_interval() - 0.2) < 1e-9
