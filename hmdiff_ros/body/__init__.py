"""Body models (Anny, SMPL/SMPL-X), our joint set, and the coarse topology asset.

Only :mod:`~hmdiff_ros.body.topology` and :mod:`~hmdiff_ros.body.joints` are needed at run
time (numpy only); the body models are for training data and asset building.
"""

from hmdiff_ros.body.joints import JOINT_NAMES, NUM_JOINTS, SKELETON_EDGES
from hmdiff_ros.body.topology import Topology

__all__ = ["JOINT_NAMES", "NUM_JOINTS", "SKELETON_EDGES", "Topology"]
