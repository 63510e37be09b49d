"""``tests/launch_hmdiff.py`` run by launch_testing's own runner, in a subprocess: Humble's
launch_testing pytest plugins do not load in pytest >= 8, so pytest does not collect that file
itself. Needs a ROS 2 workspace with hmdiff_msgs sourced (``.ci/ros_workspace.sh``); skipped
elsewhere."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

LAUNCH_TEST = Path(__file__).with_name("launch_hmdiff.py")

pytestmark = [
    pytest.mark.ros,
    pytest.mark.skipif(
        importlib.util.find_spec("launch_testing") is None or importlib.util.find_spec("hmdiff_msgs") is None,
        reason="launch_testing and the built hmdiff_msgs are not available (needs a ROS 2 workspace: .ci/ros_workspace.sh)",
    ),
]


def test_the_launch_file_starts_a_node_that_answers_an_image_and_stops_cleanly():
    done = subprocess.run(
        [sys.executable, "-m", "launch_testing.launch_test", str(LAUNCH_TEST)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = (done.stdout + done.stderr)[-4000:]
    assert done.returncode == 0, report
    assert "FAILED" not in done.stdout, report
