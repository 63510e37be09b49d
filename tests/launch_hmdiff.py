"""launch_testing: ``hmdiff.launch.py`` starts the node, which answers an image on the
remapped topic with a HumanArray, and shuts down cleanly. Runs in a built ROS 2 workspace with
launch_testing's own runner (``python -m launch_testing.launch_test tests/launch_hmdiff.py``;
``tests/test_launch_hmdiff.py`` does that under pytest); skipped elsewhere."""

import importlib.util
import os
import time
import unittest

import pytest

if importlib.util.find_spec("launch_testing") is None or importlib.util.find_spec("hmdiff_msgs") is None:
    pytest.skip(
        "launch_testing and the built hmdiff_msgs are not available (needs a ROS 2 workspace)", allow_module_level=True
    )

import launch  # noqa: E402
import launch_testing  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import rclpy  # noqa: E402
from ament_index_python.packages import get_package_share_directory  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402


@pytest.mark.launch_test
def generate_test_description():
    share = get_package_share_directory("hmdiff_ros")
    hmdiff = launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "hmdiff.launch.py")),
        launch_arguments={"image": "/test/image", "camera_info": "/test/camera_info", "rviz": "false"}.items(),
    )
    return launch.LaunchDescription([hmdiff, launch_testing.actions.ReadyToTest()])


class TestHumansForAnImage(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        rclpy.init()

    @classmethod
    def tearDownClass(cls):
        rclpy.shutdown()

    def test_an_image_gets_a_human_array(self):
        from hmdiff_msgs.msg import HumanArray
        from rclpy.qos import qos_profile_sensor_data
        from sensor_msgs.msg import Image

        from hmdiff_ros.pipeline.io import read_image
        from hmdiff_ros.pipeline.run import DEMO_IMAGE
        from hmdiff_ros.ros.bridge import image_msg
        from hmdiff_ros.ros.convert import MessageFactory, header

        probe = rclpy.create_node("hmdiff_launch_probe")
        try:
            got = []
            probe.create_subscription(HumanArray, "/hmdiff/humans", got.append, 5)
            pub = probe.create_publisher(Image, "/test/image", qos_profile_sensor_data)
            f = MessageFactory.for_rclpy()
            msg = image_msg(f, header(f, 11, 0, "camera_optical_frame"), read_image(DEMO_IMAGE)[::2, ::2])
            end = time.monotonic() + 120  # the model loads after launch
            while not got and time.monotonic() < end:
                pub.publish(msg)
                rclpy.spin_once(probe, timeout_sec=0.5)
            self.assertTrue(got, "no HumanArray on /hmdiff/humans within 120 s")
            self.assertEqual((got[0].header.stamp.sec, got[0].header.frame_id), (11, "camera_optical_frame"))
            self.assertEqual(len(got[0].humans), 1)
        finally:
            probe.destroy_node()


@launch_testing.post_shutdown_test()
class TestCleanShutdown(unittest.TestCase):
    def test_exit_code(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
