"""The frame pipeline: image -> people -> prior -> HMDiff -> metric meshes and joints. ROS-free core."""
