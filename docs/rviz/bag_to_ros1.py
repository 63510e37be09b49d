"""Copy topics of a rosbag2 into a ROS 1 bag, message by message, field by field.

Used by ``rviz_screenshot.sh`` to show ``hmdiff bag`` output in Debian's RViz (ROS 1):
``visualization_msgs``, ``sensor_msgs/Image`` and ``tf2_msgs`` have the same fields in
ROS 1 and ROS 2, except that ROS 1 headers carry ``seq`` and ROS 2 markers carry texture
fields, which are dropped. Only the topics named are copied.

    python docs/rviz/bag_to_ros1.py IN_ROS2_BAG OUT.bag /hmdiff/markers /hmdiff/debug_image /tf
"""

import sys
from pathlib import Path

import numpy as np
from rosbags.highlevel import AnyReader
from rosbags.rosbag1 import Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from hmdiff_ros.ros.convert import typestore_for

ROS1 = get_typestore(Stores.ROS1_NOETIC)
# not in rosbags' ROS 1 store; the definition is tf2_msgs/msg/TFMessage.msg of ROS 1
ROS1.register(get_types_from_msg("geometry_msgs/TransformStamped[] transforms", "tf2_msgs/msg/TFMessage"))


def to_ros1(value, msgtype: str):
    """The ROS 1 message of ``msgtype`` holding the fields of the ROS 2 message ``value``."""
    cls = ROS1.types[msgtype]
    fields = {}
    for name, (kind, sub) in ROS1.fielddefs[msgtype][1]:
        if name == "seq":
            fields[name] = 0
            continue
        v = getattr(value, name)
        fields[name] = _convert(v, kind, sub)
    return cls(**fields)


def _convert(v, kind, sub):
    from rosbags.typesys.base import Nodetype

    if kind == Nodetype.NAME:  # a nested message
        return to_ros1(v, sub)
    if kind in (Nodetype.ARRAY, Nodetype.SEQUENCE):
        (ekind, esub), _ = sub
        if isinstance(v, np.ndarray):
            return v
        return [_convert(e, ekind, esub) for e in v]
    return v


def main(src: str, dst: str, *topics: str) -> None:
    store = typestore_for("humble")
    with AnyReader([Path(src)], default_typestore=store) as reader, Writer(Path(dst)) as writer:
        conns = {}
        for c in reader.connections:
            if c.topic in topics:
                conns[c.id] = writer.add_connection(c.topic, c.msgtype, typestore=ROS1)
        for c, stamp, raw in reader.messages(connections=[c for c in reader.connections if c.id in conns]):
            msg = to_ros1(reader.deserialize(raw, c.msgtype), c.msgtype)
            writer.write(conns[c.id], stamp, ROS1.serialize_ros1(msg, c.msgtype))
    print(f"{dst}: {sorted(c.topic for c in conns.values())}")


if __name__ == "__main__":
    main(*sys.argv[1:])
