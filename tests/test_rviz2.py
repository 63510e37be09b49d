"""RViz 2 showing the node's output, checked in its pictures, on the real ROS 2 core: ``ros2
launch hmdiff_ros hmdiff.launch.py rviz:=true`` (the shipped ``launch/hmdiff.rviz``) under Xvfb,
the demo photo as the camera, screenshots with no person yet, with the skeleton only
(``mesh_resolution: none``), with the coarse mesh and with the full mesh. The published joints,
projected with RViz's own view (tests/rviz_shots.py), say where the person must appear; an empty,
missing or misplaced mesh fails. ``HMDIFF_RVIZ_SCREENSHOT=PATH`` also saves the coarse-mesh
screenshot there with the skeleton-only render beside it (docs/images/rviz2_humble.png is made so). Skipped where RViz 2 (built by
``.ci/ros_workspace.sh``), Xvfb, xwd or ImageMagick are missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from ros_helpers import FRAME, HAVE_ROS, ROOT, call, interrupt, spin_until
from rviz_shots import OrbitView, box_of, changed, clip, inside, render_panel, screenshot

TOOLS = ("rviz2", "ros2", "Xvfb", "xwd", "convert")
pytestmark = [
    pytest.mark.ros,
    pytest.mark.skipif(
        not HAVE_ROS or any(shutil.which(t) is None for t in TOOLS),
        reason="needs a ROS 2 workspace with RViz 2 (.ci/ros_workspace.sh builds it), Xvfb, xwd and "
        f"ImageMagick; missing: {[t for t in TOOLS if shutil.which(t) is None] or 'rclpy or hmdiff_msgs'}",
    ),
]

CONFIG = ROOT / "launch" / "hmdiff.rviz"
BG = (48, 48, 48)  # the config's Background Color
HFOV_DEG = 65.0


def _free_display() -> str:
    for n in range(90, 140):
        if not Path(f"/tmp/.X11-unix/X{n}").exists() and not Path(f"/tmp/.X{n}-lock").exists():
            return f":{n}"
    raise RuntimeError("no free X display number in :90-:139")


def _camera(probe):
    """Publishes the demo photo (rgb8, 65 degrees across) and its CameraInfo on the launch
    file's default topics, frame camera_optical_frame."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    from hmdiff_ros.camera import intrinsics_from_fov
    from hmdiff_ros.pipeline.io import read_image
    from hmdiff_ros.pipeline.run import DEMO_IMAGE
    from hmdiff_ros.ros.bridge import camera_info_msg, image_msg
    from hmdiff_ros.ros.convert import MessageFactory, header

    f = MessageFactory.for_rclpy()
    rgb = read_image(DEMO_IMAGE)
    h, w = rgb.shape[:2]
    K = intrinsics_from_fov(w, h, HFOV_DEG)
    pub = probe.create_publisher(Image, "/camera/image_raw", qos_profile_sensor_data)
    info_pub = probe.create_publisher(CameraInfo, "/camera/camera_info", qos_profile_sensor_data)

    def publish() -> None:
        now = probe.get_clock().now().to_msg()
        hdr = header(f, now.sec, now.nanosec, FRAME)
        info_pub.publish(camera_info_msg(f, hdr, K, w, h))
        pub.publish(image_msg(f, hdr, rgb))

    return publish, rgb


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    """Runs the scene once: ``{"empty", "none", "coarse", "full"}`` screenshots, the person's
    joints (fixed frame) and the mesh markers' vertex counts, the launch's output."""
    import rclpy
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from rclpy.executors import SingleThreadedExecutor
    from ros_helpers import Outputs

    out = tmp_path_factory.mktemp("rviz2")
    display = _free_display()
    xvfb = subprocess.Popen(
        ["Xvfb", display, "-screen", "0", "1400x900x24", "-nolisten", "tcp"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    env = {**os.environ, "DISPLAY": display, "LIBGL_ALWAYS_SOFTWARE": "1", "QT_X11_NO_MITSHM": "1"}
    # importing OpenCV's pip wheel points Qt at its own plugins, which RViz's Qt cannot load
    for name in ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_PLUGIN_PATH", "QT_QPA_FONTDIR"):
        env.pop(name, None)
    launch = None
    log: list = []
    rclpy.init()
    probe = rclpy.create_node("rviz2_probe")
    executor = SingleThreadedExecutor()
    executor.add_node(probe)
    try:
        deadline = time.monotonic() + 20
        while not Path(f"/tmp/.X11-unix/X{display[1:]}").exists():
            assert time.monotonic() < deadline and xvfb.poll() is None, f"Xvfb {display} did not start"
            time.sleep(0.2)
        launch = subprocess.Popen(
            ["ros2", "launch", "hmdiff_ros", "hmdiff.launch.py", "rviz:=true"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=lambda: log.extend(launch.stdout), daemon=True).start()
        outputs = Outputs(probe)
        publish, rgb = _camera(probe)
        set_params = probe.create_client(SetParameters, "/hmdiff/set_parameters")

        def panel_up() -> bool:
            try:
                render_panel(screenshot(display), BG)
                return True
            except (AssertionError, subprocess.CalledProcessError):
                return False

        def wait(seconds: float, cond=lambda: False) -> bool:
            return spin_until(executor, cond, seconds, publish_if_on, rate_hz=5.0)

        camera_on = [False]

        def publish_if_on() -> None:
            if camera_on[0]:
                publish()

        deadline = time.monotonic() + 120
        while not panel_up():
            up = launch.poll() is None and "[rviz2-2]: process has died" not in "".join(log)
            assert time.monotonic() < deadline and up, "RViz 2 did not show up:\n" + "".join(log)[-3000:]
            wait(1.0)
        assert set_params.wait_for_service(timeout_sec=120), "the node did not come up:\n" + "".join(log)[-3000:]
        wait(3.0)  # RViz settles (its first frames, the dock sizes)
        result = {"empty": screenshot(display), "rgb": rgb, "display": display}

        def mesh_points() -> int | None:
            if not outputs.markers:
                return None
            mesh = [m for m in outputs.markers[-1].markers if m.ns == "hmdiff/mesh"]
            return len(mesh[0].points) if mesh else 0

        camera_on[0] = True
        # tracking off: the person keeps id 0 and so one colour (ids pick the colour, and a
        # darker one is nearer the background in the mesh's shaded parts than the threshold)
        untracked = Parameter(
            name="tracking", value=ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=False)
        )
        for mode in ("none", "coarse", "full"):
            value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=mode)
            request = SetParameters.Request(parameters=[Parameter(name="mesh_resolution", value=value), untracked])
            answer = call(executor, set_params, request)
            assert all(r.successful for r in answer.results), [r.reason for r in answer.results]
            outputs.markers.clear()
            assert wait(60, lambda m=mode: _mesh_as_asked(m, mesh_points(), result.get("coarse_points"))), (
                f"no markers with mesh_resolution {mode}:\n" + "".join(log)[-3000:]
            )
            result[f"{mode}_points"] = mesh_points()
            result[f"{mode}_ids"] = sorted({m.id for m in outputs.markers[-1].markers if m.ns == "hmdiff/mesh"})
            wait(3.0)  # RViz draws the new markers (and the old ones' lifetime ends)
            # three pictures a second apart: the mesh test reads the fullest, and names all
            result[f"{mode}_all"] = [screenshot(display)]
            for _ in range(2):
                wait(1.0)
                result[f"{mode}_all"].append(screenshot(display))
            result[mode] = result[f"{mode}_all"][0]
            result[f"{mode}_joints"] = np.array([[p.x, p.y, p.z] for p in outputs.humans[-1].humans[0].joints])
        result["log"] = "".join(log)
        for name in ("empty", "none"):
            cv2.imwrite(str(out / f"{name}.png"), cv2.cvtColor(result[name], cv2.COLOR_RGB2BGR))
        for name in ("coarse", "full"):
            for i, shot in enumerate(result[f"{name}_all"]):
                cv2.imwrite(str(out / f"{name}_{i}.png"), cv2.cvtColor(shot, cv2.COLOR_RGB2BGR))
        save = os.environ.get("HMDIFF_RVIZ_SCREENSHOT")
        if save:
            cv2.imwrite(save, cv2.cvtColor(_mesh_and_skeleton(result), cv2.COLOR_RGB2BGR))
        result["out"] = out
        yield result
    finally:
        if launch is not None:
            interrupt(launch, timeout=30)
        executor.shutdown()
        probe.destroy_node()
        rclpy.shutdown()
        xvfb.terminate()
        xvfb.wait(timeout=10)


def _mesh_and_skeleton(result) -> np.ndarray:
    """The coarse-mesh screenshot with the skeleton-only picture's render panel beside it (the
    mesh hides the skeleton), at the same height."""
    x0, y0, w, h = render_panel(result["empty"], BG)
    skeleton = result["none"][y0 : y0 + h, x0 : x0 + w]
    full = result["coarse"]
    scale = full.shape[0] / h
    skeleton = cv2.resize(skeleton, (int(round(w * scale)), full.shape[0]), interpolation=cv2.INTER_AREA)
    return np.concatenate([full, skeleton], axis=1)


def _mesh_as_asked(mode: str, points: int | None, coarse: int | None) -> bool:
    """Whether the latest markers carry the mesh ``mode`` asks for (the frame in flight when the
    parameter changed still has the old one): none, some, or more points than the coarse one."""
    if points is None:
        return False
    return {"none": points == 0, "coarse": points > 0, "full": coarse is not None and points > coarse}[mode]


def _person(shots, mode: str):
    """The render panel, the projected joints and the box the person must lie in."""
    panel = render_panel(shots["empty"], BG)
    px = OrbitView.from_config(CONFIG).project(shots[f"{mode}_joints"], panel)
    x0, y0, w, h = panel
    in_panel = changed(shots["empty"], shots["empty"])  # all False, the panel's shape
    in_panel[y0 : y0 + h, x0 : x0 + w] = True
    return panel, px, in_panel


def test_the_coarse_and_the_full_mesh_are_drawn_where_the_person_is(shots):
    """Mesh pixels (what changes from the skeleton-only picture to the one with the mesh) are
    many, fill the projected person's box and lie inside it; the full mesh (more vertices)
    covers the same place as the coarse one. Of the three pictures taken a second apart the
    fullest is read, and a failure names all their counts (CI once counted a third of the usual
    mesh pixels, cause unconfirmed); an empty or misplaced mesh fails in every picture."""
    masks = {}
    for mode in ("coarse", "full"):
        panel, px, in_panel = _person(shots, mode)
        all_masks = [changed(shots["none"], shot) & in_panel for shot in shots[f"{mode}_all"]]
        mesh = max(all_masks, key=lambda m: int(m.sum()))
        box = box_of(px, pad=0.15)
        seen = clip(box, panel)  # the legs may reach below the picture
        bw, bh = seen[2] - seen[0], seen[3] - seen[1]
        assert mesh.sum() > 0.25 * bw * bh, (
            f"{mode}: {[int(m.sum()) for m in all_masks]} mesh pixels in three pictures for a person box of "
            f"{bw:.0f} x {bh:.0f} (mesh marker ids {shots[f'{mode}_ids']}; pictures in {shots['out']})"
        )
        assert inside(mesh, box) > 0.9, (
            f"{mode}: only {inside(mesh, box):.0%} of the mesh lies where the joints project"
        )
        masks[mode] = mesh
    assert shots["full_points"] > 2 * shots["coarse_points"] > 0
    iou = (masks["coarse"] & masks["full"]).sum() / (masks["coarse"] | masks["full"]).sum()
    assert iou > 0.6, f"the coarse and the full mesh overlap only {iou:.2f}"


def test_the_skeleton_is_drawn_along_the_projected_bones(shots):
    """With no mesh, the white skeleton lines lie on the projected bones: most points sampled
    along each bone have a skeleton-white pixel nearby, and what was drawn stays near the person."""
    from hmdiff_ros.body.joints import JOINT_INDEX, SKELETON_EDGES

    panel, px, in_panel = _person(shots, "none")
    drawn = changed(shots["empty"], shots["none"]) & in_panel
    assert inside(drawn, box_of(px, pad=0.25, lo_extra=0.4)) > 0.85  # the id label sits above the head
    white = np.all(shots["none"] >= 200, axis=2) & in_panel
    near = cv2.dilate(white.astype(np.uint8), np.ones((7, 7), np.uint8)).astype(bool)
    hits = total = 0
    for a, b in SKELETON_EDGES:
        for t in np.linspace(0.2, 0.8, 5):
            x, y = (1 - t) * px[JOINT_INDEX[a]] + t * px[JOINT_INDEX[b]]
            if not (panel[0] <= x < panel[0] + panel[2] and panel[1] <= y < panel[1] + panel[3]):
                continue  # below the picture (the legs)
            total += 1
            hits += bool(near[int(round(y)), int(round(x))])
    assert hits / total > 0.7, f"only {hits} of {total} points along the projected bones are on a drawn line"


def test_the_debug_image_shows_the_camera_photo(shots):
    """Left of the render panel, where the Image display said "No Image" before the camera
    started, the photo is found (normalised cross-correlation over sizes), the overlay on it."""
    found = _debug_image(shots)
    assert found["score"] > 0.6, f"the photo is not in the docks (best match {found['score']:.2f})"
    x0, y0, x1, y1 = found["box"]
    before = changed(shots["empty"], shots["none"])[y0 : y1 + 1, x0 : x1 + 1]
    assert before.mean() > 0.3, "the photo is not where the Image display was empty before"


def _debug_image(shots) -> dict:
    """Where the photo shows in the docks: ``{"score", "box": (x0, y0, x1, y1)}``."""
    docks = cv2.cvtColor(shots["none"][:, : render_panel(shots["empty"], BG)[0]], cv2.COLOR_RGB2GRAY)
    photo = cv2.cvtColor(shots["rgb"], cv2.COLOR_RGB2GRAY)
    best = {"score": -1.0, "box": (0, 0, 0, 0)}
    for size in range(80, min(docks.shape) - 1, 4):
        tpl = cv2.resize(photo, (size, size), interpolation=cv2.INTER_AREA)
        result = cv2.matchTemplate(docks, tpl, cv2.TM_CCOEFF_NORMED)
        _, score, _, (x, y) = cv2.minMaxLoc(result)
        if score > best["score"]:
            best = {"score": float(score), "box": (x, y, x + size - 1, y + size - 1)}
    return best


def test_no_display_is_in_error_or_warning(shots):
    """RViz writes a display's name in blue (40, 120, 197) while it is enabled and Ok, orange
    (192, 128, 0) in Warn and red (192, 32, 32) in Error, and colours Global Status the same way
    (rviz_common's Display::getViewData and StatusProperty): the docks, the debug image left out,
    show the enabled displays' blue names and nothing orange or red, in every picture."""
    panel = render_panel(shots["empty"], BG)
    bx0, by0, bx1, by1 = _debug_image(shots)["box"]
    for name in ("none", "coarse", "full"):
        docks = shots[name][:, : panel[0]].copy()
        docks[by0 : by1 + 1, bx0 : bx1 + 1] = 0
        count = {c: int(np.all(docks == np.array(c, np.uint8), axis=2).sum()) for c in OK_WARN_ERROR}
        ok, warn, error = count.values()
        assert ok > 100 and warn == 0 and error == 0, f"{name}: pixels of the Ok / Warn / Error colours {count}"


OK_WARN_ERROR = ((40, 120, 197), (192, 128, 0), (192, 32, 32))


def test_the_launch_logs_no_errors(shots):
    """Neither the node nor RViz 2 logged an error while the pictures were taken."""
    assert "[ERROR]" not in shots["log"], shots["log"][-3000:]
