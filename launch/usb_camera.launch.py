"""A USB camera (usb_cam), the hmdiff node and RViz in one command:

sudo apt install ros-$ROS_DISTRO-usb-cam
ros2 launch hmdiff_ros usb_camera.launch.py video_device:=/dev/video0
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory("hmdiff_ros")
    camera = Node(
        package="usb_cam",
        executable="usb_cam_node_exe",
        name="camera",
        namespace="camera",
        parameters=[
            {
                "video_device": LaunchConfiguration("video_device"),
                "image_width": 640,
                "image_height": 480,
                "pixel_format": "yuyv2rgb",
                "frame_id": "camera_optical_frame",
                "framerate": 30.0,
            }
        ],
    )
    hmdiff = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "hmdiff.launch.py")),
        launch_arguments={
            "image": "/camera/image_raw",
            "camera_info": "/camera/camera_info",
            "backend": LaunchConfiguration("backend"),
            "rviz": LaunchConfiguration("rviz"),
        }.items(),
    )
    return LaunchDescription(
        [
            DeclareLaunchArgument("video_device", default_value="/dev/video0"),
            DeclareLaunchArgument("backend", default_value="auto"),
            DeclareLaunchArgument("rviz", default_value="true"),
            camera,
            hmdiff,
        ]
    )
