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
