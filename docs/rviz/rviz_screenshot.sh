#!/usr/bin/env bash
# docs/images/rviz_markers.jpg: RViz showing what `hmdiff bag` publishes for the demo photo.
#
# ROS 2 cannot be installed on the build machines, so the picture is taken with Debian's
# RViz (ROS 1, 1.14), which draws visualization_msgs/MarkerArray, sensor_msgs/Image and TF
# with the same message fields as RViz 2. The markers are the real output of the pipeline:
# the demo photo -> a rosbag2 -> `hmdiff bag` -> the same messages copied to a ROS 1 bag
# (bag_to_ros1.py) -> `rosbag play` -> RViz (hmdiff_ros1.rviz mirrors launch/hmdiff.rviz).
#
# Needs: apt-get install rviz ros-core python3-rosbag xvfb imagemagick; pip install -e ".[bag]"
# Run from the repository root: bash docs/rviz/rviz_screenshot.sh [OUT.jpg]
set -euo pipefail
out=${1:-docs/images/rviz_markers.jpg}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

python - "$work/in" <<'PY'
import sys

from rosbags.rosbag2 import Writer

from hmdiff_ros.camera import intrinsics_from_fov
from hmdiff_ros.pipeline.io import read_image
from hmdiff_ros.pipeline.run import DEMO_IMAGE
from hmdiff_ros.ros import convert as C

store = C.typestore_for("humble")
f = C.MessageFactory.for_rosbags(store)
rgb = read_image(DEMO_IMAGE)
h, w = rgb.shape[:2]
K = intrinsics_from_fov(w, h, 60.0)
with Writer(sys.argv[1], version=8) as writer:
    img_c = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=store)
    info_c = writer.add_connection("/camera/camera_info", "sensor_msgs/msg/CameraInfo", typestore=store)
    for k in range(5):  # five frames, 0.1 s apart
        hdr = C.header(f, 100, k * 100_000_000, "camera_optical_frame")
        t = 100 * 10**9 + k * 100_000_000
        info = C.camera_info_msg(f, hdr, K, w, h)
        writer.write(info_c, t, store.serialize_cdr(info, "sensor_msgs/msg/CameraInfo"))
        writer.write(img_c, t, store.serialize_cdr(C.image_msg(f, hdr, rgb), "sensor_msgs/msg/Image"))
PY

hmdiff bag "$work/in" "$work/out" --mesh full --json
python docs/rviz/bag_to_ros1.py "$work/out" "$work/out.bag" /hmdiff/markers /hmdiff/debug_image /tf

export ROS_MASTER_URI=http://localhost:11311 DISPLAY=:97
roscore >"$work/roscore.log" 2>&1 &
Xvfb :97 -screen 0 1400x900x24 >"$work/xvfb.log" 2>&1 &
sleep 5
rosbag play --loop --quiet --rate 0.5 "$work/out.bag" >"$work/play.log" 2>&1 &
rviz -d docs/rviz/hmdiff_ros1.rviz >"$work/rviz.log" 2>&1 &
sleep 25
import -window root -crop 1400x900+0+0 -quality 85 "$out"
echo "wrote $out"
