"""An in-process stand-in for the parts of ROS 2 that ``hmdiff_ros/ros/node.py`` uses, so the
node's own logic (lifecycle, newest-frame worker, drop and failure counting, conversions,
``target_frame``, diagnostics) runs in tests where ROS 2 cannot be installed.

It is not ROS: messages are rosbags' Humble classes (with ROS's defaults), publishers record
what they publish, TF lookups answer from a table, and lifecycle transitions call the node's
callbacks directly. Where rclpy exists, tests/test_ros_package.py runs the node on real ROS 2.
"""

from __future__ import annotations

import enum
import sys
import time
import types
from contextlib import contextmanager

import numpy as np

MODULES = (
    "rclpy",
    "rclpy.executors",
    "rclpy.lifecycle",
    "rclpy.qos",
    "rclpy.time",
    "rclpy.duration",
    "rclpy.parameter",
    "rcl_interfaces",
    "rcl_interfaces.msg",
    "tf2_ros",
    "diagnostic_updater",
    "cv_bridge",
    "builtin_interfaces",
    "builtin_interfaces.msg",
    "std_msgs",
    "std_msgs.msg",
    "geometry_msgs",
    "geometry_msgs.msg",
    "sensor_msgs",
    "sensor_msgs.msg",
    "visualization_msgs",
    "visualization_msgs.msg",
    "tf2_msgs",
    "tf2_msgs.msg",
    "diagnostic_msgs",
    "diagnostic_msgs.msg",
    "vision_msgs",
    "vision_msgs.msg",
    "hmdiff_msgs",
    "hmdiff_msgs.msg",
    "hri_msgs",
    "hri_msgs.msg",
)


def _default(store, kind, sub):
    from rosbags.typesys.base import Nodetype

    if kind == Nodetype.BASE:
        name = sub[0]
        return "" if name == "string" else False if name == "bool" else 0.0 if name.startswith("float") else 0
    if kind == Nodetype.NAME:
        return _make(store, sub)
    if kind == Nodetype.ARRAY:
        (ekind, esub), n = sub
        if ekind == Nodetype.BASE and esub[0] != "string":
            return np.zeros(
                n, dtype=np.uint8 if esub[0] in ("uint8", "byte", "char") else esub[0].replace("bool", "bool_")
            )
        return [_default(store, ekind, esub) for _ in range(n)]
    return []  # a sequence


def _make(store, name, /, **fields):
    cls = store.types[name]
    values = {f: _default(store, kind, sub) for f, (kind, sub) in store.fielddefs[name][1] if f not in fields}
    return cls(**values, **fields)


def _message_class(store, name):
    cls = store.types[name]
    consts = {k: v for k, v in vars(cls).items() if k.isupper()}
    return type(name.split("/")[-1], (), {"__new__": lambda _c, **kw: _make(store, name, **kw), **consts})


class _Module(types.ModuleType):
    """``<pkg>.msg``: message classes made on first use from the typestore."""

    def __init__(self, name, store):
        super().__init__(name)
        self._store, self._pkg = store, name.split(".")[0]

    def __getattr__(self, attr):
        full = f"{self._pkg}/msg/{attr}"
        if attr.startswith("_") or full not in self._store.types:
            raise AttributeError(f"{self.__name__} has no {attr}")
        cls = _message_class(self._store, full)
        setattr(self, attr, cls)
        return cls


class Publisher:
    def __init__(self, topic):
        self.topic, self.messages = topic, []

    def publish(self, msg):
        self.messages.append(msg)

    def get_subscription_count(self):
        return 1


class Parameter:
    def __init__(self, name, type_=None, value=None):
        self.name, self.value = name, value


class TransitionCallbackReturn(enum.Enum):
    SUCCESS = 0
    FAILURE = 1
    ERROR = 2


class Logger:
    def __init__(self):
        self.lines = []

    def _log(self, level, text, **_kw):
        self.lines.append((level, text))

    def info(self, text, **kw):
        self._log("info", text, **kw)

    def warning(self, text, **kw):
        self._log("warn", text, **kw)

    warn = warning

    def error(self, text, **kw):
        self._log("error", text, **kw)


class Time:
    def __init__(self, seconds=0.0, nanoseconds=0):
        self.nanoseconds = int(seconds * 1e9) + int(nanoseconds)

    @classmethod
    def from_msg(cls, msg):
        return cls(nanoseconds=msg.sec * 10**9 + msg.nanosec)


class Duration(Time):
    pass


class Clock:
    def now(self):
        return Time(seconds=time.time())


class LifecycleNode:
    def __init__(self, name, parameter_overrides=(), **_kw):
        self._name, self._params, self._callbacks = name, {}, []
        self._overrides = {p.name: p.value for p in parameter_overrides}
        self.publishers, self.subscriptions, self.logger = {}, {}, Logger()

    def declare_parameter(self, name, value, descriptor=None):
        self._params[name] = Parameter(name, value=self._overrides.get(name, value))

    def get_parameter(self, name):
        return self._params[name]

    def has_parameter(self, name):
        return name in self._params

    def undeclare_parameter(self, name):
        del self._params[name]

    def add_on_set_parameters_callback(self, cb):
        self._callbacks.append(cb)

    def set_parameters(self, params):
        results = []
        for p in params:
            res = [cb([p]) for cb in self._callbacks]
            ok = all(r.successful for r in res)
            if ok:
                self._params[p.name] = Parameter(p.name, value=p.value)
            results.append(types.SimpleNamespace(successful=ok, reason="; ".join(r.reason for r in res)))
        return results

    def create_publisher(self, msg_type, topic, qos):
        self.publishers[topic] = Publisher(topic)
        return self.publishers[topic]

    def create_subscription(self, msg_type, topic, callback, qos):
        self.subscriptions[topic] = (callback, qos)
        return topic

    def destroy_publisher(self, pub):
        self.publishers.pop(pub.topic, None)

    def destroy_subscription(self, sub):
        self.subscriptions.pop(sub, None)

    def get_logger(self):
        return self.logger

    def get_clock(self):
        return Clock()

    def trigger_configure(self):
        return self.on_configure(None)

    def trigger_activate(self):
        return self.on_activate(None)

    def trigger_deactivate(self):
        return self.on_deactivate(None)

    def trigger_cleanup(self):
        return self.on_cleanup(None)

    def trigger_shutdown(self):
        return self.on_shutdown(None)

    def on_activate(self, state):
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state):
        return TransitionCallbackReturn.SUCCESS

    def destroy_node(self):
        pass


class TransformException(Exception):
    pass


class Buffer:
    """TF lookups answer from ``Buffer.table[(target, source)]`` (a TransformStamped)."""

    table: dict = {}

    def __init__(self, cache_time=None, node=None):
        pass

    def lookup_transform(self, target, source, time, timeout=None):
        if (target, source) not in self.table:
            raise TransformException(f'"{target}" passed to lookupTransform argument target_frame does not exist')
        return self.table[(target, source)]


class TransformBroadcaster:
    def __init__(self, node):
        self.sent = []

    def sendTransform(self, transforms):  # noqa: N802 (the tf2_ros name)
        self.sent.append(list(transforms))


class Updater:
    def __init__(self, node, period=1.0):
        self.tasks = {}

    def setHardwareID(self, hwid):  # noqa: N802 (the diagnostic_updater name)
        self.hardware_id = hwid

    def add(self, name, fn):
        self.tasks[name] = fn


class StatusWrapper:
    def __init__(self):
        self.level, self.message, self.values = None, "", {}

    def summary(self, level, message):
        self.level, self.message = level, message

    def add(self, key, value):
        self.values[key] = value


def _ns(name, **attrs):
    m = types.ModuleType(name)
    m.__dict__.update(attrs)
    return m


@contextmanager
def ros_standin():
    """Install the stand-in modules; yields the node module imported against them."""
    from hmdiff_ros.ros.convert import typestore_for

    store = typestore_for("humble")
    saved = {k: sys.modules.get(k) for k in (*MODULES, "hmdiff_ros.ros.node")}
    kw = lambda **a: types.SimpleNamespace(**a)  # noqa: E731
    policy = enum.Enum("Policy", "BEST_EFFORT RELIABLE KEEP_LAST VOLATILE")
    mods = {
        "rclpy": _ns("rclpy", init=lambda args=None: None, ok=lambda: False, shutdown=lambda: None, spin=None),
        "rclpy.executors": _ns("rclpy.executors", ExternalShutdownException=RuntimeError),
        "rclpy.lifecycle": _ns(
            "rclpy.lifecycle",
            LifecycleNode=LifecycleNode,
            State=object,
            TransitionCallbackReturn=TransitionCallbackReturn,
        ),
        "rclpy.qos": _ns(
            "rclpy.qos", QoSProfile=kw, ReliabilityPolicy=policy, HistoryPolicy=policy, DurabilityPolicy=policy
        ),
        "rclpy.time": _ns("rclpy.time", Time=Time),
        "rclpy.duration": _ns("rclpy.duration", Duration=Duration),
        "rclpy.parameter": _ns("rclpy.parameter", Parameter=Parameter),
        "rcl_interfaces.msg": _ns(
            "rcl_interfaces.msg",
            FloatingPointRange=kw,
            IntegerRange=kw,
            ParameterDescriptor=kw,
            SetParametersResult=lambda successful, reason="": kw(successful=successful, reason=reason),
        ),
        "tf2_ros": _ns(
            "tf2_ros",
            TransformBroadcaster=TransformBroadcaster,
            Buffer=Buffer,
            TransformListener=lambda buffer, node: None,
            TransformException=TransformException,
        ),
        "diagnostic_updater": _ns("diagnostic_updater", Updater=Updater),
        "cv_bridge": None,  # not installed: the node reads images with numpy (bridge.ImageReader)
    }
    for pkg in (
        "builtin_interfaces",
        "std_msgs",
        "geometry_msgs",
        "sensor_msgs",
        "visualization_msgs",
        "tf2_msgs",
        "diagnostic_msgs",
        "vision_msgs",
        "hmdiff_msgs",
        "hri_msgs",
    ):
        mods[pkg] = _ns(pkg)
        mods[f"{pkg}.msg"] = _Module(f"{pkg}.msg", store)
    mods["rclpy"].executors, mods["rclpy"].lifecycle = mods["rclpy.executors"], mods["rclpy.lifecycle"]
    try:
        sys.modules.update(mods)
        sys.modules.pop("hmdiff_ros.ros.node", None)
        import hmdiff_ros.ros.node as node_module

        yield node_module
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def wait_for(predicate, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return False
