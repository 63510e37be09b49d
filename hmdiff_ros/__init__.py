"""hmdiff_ros: real-time 3D human mesh recovery with HMDiff, for ROS 2.

The core (``body``, ``data``, ``model``, ``prior``, ``runtime``, ``pipeline``) never imports
ROS; ``hmdiff_ros.ros`` is the thin rclpy layer on top.
"""

__version__ = "0.1.0"
