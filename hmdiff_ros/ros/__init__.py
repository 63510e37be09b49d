"""The ROS 2 layer (rclpy node, message conversion, rosbag2 tools): the only place that imports ROS."""
