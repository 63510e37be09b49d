"""Launch the hmdiff node (and optionally RViz) beside a running camera driver.

    ros2 launch hmdiff_ros hmdiff.launch.py image:=/camera/color/image_raw \
        camera_info:=/camera/color/camera_info rviz:=true
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory("hmdiff_ros")
    args = [
        DeclareLaunchArgument("image", default_value="/camera/image_raw", description="sensor_msgs/Image topic"),
        DeclareLaunchArgument("camera_info", default_value="/camera/camera_info", description="its CameraInfo topic"),
        DeclareLaunchArgument(
            "detections",
            default_value="/detections",
            description="vision_msgs/Detection2DArray topic (with use_detections:=true)",
        ),
        DeclareLaunchArgument(
            "backend", default_value="auto", description="auto (the fastest that loads), torch, onnxruntime or tensorrt"
        ),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node"),
        DeclareLaunchArgument(
            "params_file",
            default_value=os.path.join(share, "launch", "hmdiff_params.yaml"),
            description="YAML parameters of the node",
        ),
        DeclareLaunchArgument(
            "autostart",
            default_value="true",
            description="configure and activate on start (false: wait for a lifecycle manager)",
        ),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag playback)"),
        DeclareLaunchArgument("rviz", default_value="false", description="start RViz with the shipped config"),
    ]
    node = Node(
        package="hmdiff_ros",
        executable="hmdiff_node",
        name="hmdiff",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "backend": LaunchConfiguration("backend"),
                "autostart": LaunchConfiguration("autostart"),
                "use_sim_time": LaunchConfiguration("use_sim_time"),
            },
        ],
        remappings=[
            ("image", LaunchConfiguration("image")),
            ("image/compressed", [LaunchConfiguration("image"), "/compressed"]),
            ("camera_info", LaunchConfiguration("camera_info")),
            ("detections", LaunchConfiguration("detections")),
        ],
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", os.path.join(share, "launch", "hmdiff.rviz")],
        parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription([*args, node, rviz])
