"""The node's worker (ROS-free): newest frame wins in both stages, the counts stay whole."""

import threading

from ros_standin import wait_for  # noqa: E402 (tests/ is on sys.path under pytest)

from hmdiff_ros.ros.health import FrameHealth
from hmdiff_ros.ros.worker import NewestFrameWorker


def whole(stats):
    c = stats.counts
    return c["received"] == c["processed"] + c["dropped"] + c["failed"]


def test_two_stages_overlap_and_the_newest_prepared_frame_wins():
    stats, finished, order = FrameHealth(), [], []
    gate, inside = threading.Event(), threading.Event()

    def prepare(frame, received):
        order.append(("prepare", frame))
        if frame == "bad":
            raise ValueError("frame 'bad': not an image")
        return frame

    def finish(frame):
        order.append(("finish", frame))
        if frame == 1:  # hold the model on frame 1: frames 2, 3 are prepared meanwhile
            inside.set()
            gate.wait(10)
        finished.append(frame)
        stats.count("processed")

    worker = NewestFrameWorker(prepare, stats, lambda: 0.0, lambda exc: None, finish=finish)
    worker.start()
    try:
        worker.put(1)
        assert inside.wait(10)
        worker.put(2)
        assert wait_for(lambda: ("prepare", 2) in order), "frame 2 is prepared while the model runs on frame 1"
        worker.put(3)
        assert wait_for(lambda: ("prepare", 3) in order)
        gate.set()
        assert wait_for(lambda: finished == [1, 3]), finished  # 2 was replaced by 3 before the model took it
        worker.put("bad")
        assert wait_for(lambda: stats["failed"] == 1)
        worker.put(4)
        assert wait_for(lambda: finished == [1, 3, 4])
    finally:
        worker.stop()
    assert stats["received"] == 5 and stats["processed"] == 3 and stats["dropped"] == 1 and stats["failed"] == 1
    assert "not an image" in stats["last_error"] and whole(stats)


def test_a_failing_second_stage_is_counted_and_the_stream_goes_on():
    stats, finished = FrameHealth(), []

    def finish(frame):
        if frame % 2:
            raise RuntimeError(f"model failed on frame {frame}")
        finished.append(frame)
        stats.count("processed")

    worker = NewestFrameWorker(lambda f, r: f, stats, lambda: 0.0, lambda exc: None, finish=finish)
    worker.start()
    try:
        for frame in range(1, 7):
            worker.put(frame)
            assert wait_for(lambda frame=frame: stats["processed"] + stats["failed"] + stats["dropped"] == frame)
    finally:
        worker.stop()
    assert finished == [2, 4, 6] and stats["failed"] == 3 and whole(stats)


def test_frames_waiting_at_stop_end_as_dropped():
    stats, gate, inside = FrameHealth(), threading.Event(), threading.Event()

    def finish(frame):
        inside.set()
        gate.wait(0.5)
        stats.count("processed")

    worker = NewestFrameWorker(lambda f, r: f, stats, lambda: 0.0, lambda exc: None, finish=finish)
    worker.start()
    worker.put(1)
    assert inside.wait(10)
    worker.put(2)  # prepared, waiting for the model
    assert wait_for(lambda: worker._prepared._item is not None)
    worker.put(3)  # waiting for the first stage... or prepared, replacing 2
    worker.stop()
    assert stats["received"] == 3 and whole(stats), stats.counts


def test_one_stage_worker_keeps_its_behaviour():
    stats, seen = FrameHealth(), []

    def process(frame, received):
        seen.append(frame)
        stats.count("processed")

    worker = NewestFrameWorker(process, stats, lambda: 0.0, lambda exc: None)
    worker.start()
    try:
        worker.put(1)
        assert wait_for(lambda: seen == [1])
    finally:
        worker.stop()
    assert whole(stats) and len(worker._threads) == 1
