"""The pretrained pose prior (MediaPipe BlazePose) behind a detector-agnostic interface. ROS-free core."""
