"""REP-155 bodies on a running node (``publish_hri``): per tracked body ``<id>``, publishers of
``/humans/bodies/<id>/skeleton2d``, ``roi`` and ``joint_states``, its URDF (hri_body.py, from
the lengths measured when it appears) as the node's parameter ``human_description_<id>`` and,
where the ``robot_state_publisher`` executable is found, one stock robot_state_publisher per
body (namespace ``/humans/bodies/<id>``: it reads that joint_states, republishes the URDF on
``robot_description`` and publishes the REP-155 frames under ``body_<id>``). A body unseen for
``timeout_s`` is removed: its publishers, parameter and robot_state_publisher go.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, Sequence

import yaml

from hmdiff_ros.ros import hri, hri_body

JOINT_STATE = "sensor_msgs/msg/JointState"


def state_publisher_command(body_id: str, params_file: str) -> list:
    """The ``ros2 run`` line of a body's robot_state_publisher."""
    node = f"__node:=hmdiff_body_{body_id}_state_publisher"
    namespace = f"__ns:={hri.BODIES_NS}/{body_id}"
    run = ["ros2", "run", "robot_state_publisher", "robot_state_publisher"]
    return run + ["--ros-args", "-r", node, "-r", namespace, "--params-file", params_file]


def have_state_publisher() -> bool:
    """Whether ``ros2 run robot_state_publisher`` can work here (its executable is installed)."""
    if shutil.which("ros2") is None:
        return False
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix and (Path(prefix) / "lib" / "robot_state_publisher" / "robot_state_publisher").exists():
            return True
    return False


class _Body:
    def __init__(self, pubs: dict, urdf: str, process, folder) -> None:
        self.pubs, self.urdf, self.process, self.folder = pubs, urdf, process, folder
        self.seen = time.monotonic()


class HriBodies:
    """The bodies a node publishes; :meth:`publish` once per processed frame, :meth:`close` at
    the end. ``state_publishers``: start a robot_state_publisher per body."""

    def __init__(self, node, factory, qos, state_publishers: bool = True, timeout_s: float = 1.0) -> None:
        self.node, self.factory, self.qos, self.timeout_s = node, factory, qos, timeout_s
        self.state_publishers = state_publishers and have_state_publisher()
        if state_publishers and not self.state_publishers:
            node.get_logger().warning(
                "publish_hri: robot_state_publisher is not installed; body joint_states and URDFs are "
                "published, the body part frames are not"
            )
        self.bodies: Dict[str, _Body] = {}

    def _add(self, body_id: str, joints) -> _Body:
        types = {"skeleton2d": hri.SKELETON_2D, "roi": hri.ROI_2D, "joint_states": JOINT_STATE}
        pubs = {
            name: self.node.create_publisher(self.factory.type_of(kind), hri.body_topic(body_id, name), self.qos)
            for name, kind in types.items()
        }
        text = hri_body.urdf(body_id, hri_body.lengths(joints))
        name = f"human_description_{body_id}"
        if self.node.has_parameter(name):
            self.node.set_parameters([_string_parameter(name, text)])
        else:
            self.node.declare_parameter(name, text)
        process = folder = None
        if self.state_publishers:
            folder = tempfile.TemporaryDirectory(prefix=f"hmdiff_body_{body_id}_")
            params = Path(folder.name) / "params.yaml"
            params.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"robot_description": text}}}))
            process = subprocess.Popen(
                state_publisher_command(body_id, str(params)),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # the terminal's Ctrl-C reaches the node, which stops it
                preexec_fn=_end_with_parent,
            )
        return _Body(pubs, text, process, folder)

    def _remove(self, body_id: str) -> None:
        body = self.bodies.pop(body_id)
        for pub in body.pubs.values():
            self.node.destroy_publisher(pub)
        if self.node.has_parameter(f"human_description_{body_id}"):
            self.node.undeclare_parameter(f"human_description_{body_id}")
        _stop(body.process)
        if body.folder is not None:
            body.folder.cleanup()

    def publish(self, hdr, people: Sequence, ids: Sequence[str], width: int, height: int) -> None:
        """Publish this frame's bodies; remove those unseen for ``timeout_s``."""
        now = time.monotonic()
        msgs = hri.body_messages(self.factory, hdr, people, ids, width, height)
        for p, body_id in zip(people, ids, strict=True):
            if body_id not in self.bodies:
                self.bodies[body_id] = self._add(body_id, p.joints)
            body = self.bodies[body_id]
            body.seen = now
            body.pubs["skeleton2d"].publish(msgs[hri.body_topic(body_id, "skeleton2d")])
            body.pubs["roi"].publish(msgs[hri.body_topic(body_id, "roi")])
            angles = hri_body.joint_angles(body_id, p.joints)
            body.pubs["joint_states"].publish(
                self.factory.make(
                    JOINT_STATE,
                    header=hdr,
                    name=list(angles),
                    position=self.factory.floats(list(angles.values()), dtype="float64"),
                )
            )
        for body_id in [b for b, body in self.bodies.items() if now - body.seen > self.timeout_s]:
            self._remove(body_id)

    def close(self) -> None:
        for body_id in list(self.bodies):
            self._remove(body_id)


def _string_parameter(name: str, value: str):
    from rclpy.parameter import Parameter

    return Parameter(name, Parameter.Type.STRING, value)


def _end_with_parent() -> None:
    """In the child before exec: SIGTERM when the thread that started it ends (Linux), so that a
    node killed outright leaves no robot_state_publisher behind."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _stop(process) -> None:
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
