"""Synthetic training data: shapes, poses, cameras, proxy images and a simulated pose prior.

ROS-free core. Only this package (and the topology builder) may use Anny; inference never does.
"""
