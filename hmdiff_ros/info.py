"""``hmdiff info``: versions, inference backends, body models and GPUs of this install."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import platform
from pathlib import Path
from typing import Any, Dict

import hmdiff_ros

_PACKAGES = (
    "numpy",
    "torch",
    "onnx",
    "onnxruntime",
    "tensorrt",
    "mediapipe",
    "opencv-contrib-python",
    "anny",
    "warp-lang",
    "smplx",
    "safetensors",
    "rosbags",
    "rclpy",
)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        if dist == "rclpy" and importlib.util.find_spec("rclpy") is not None:
            return os.environ.get("ROS_DISTRO", "found")  # ROS installs carry no dist-info
        return None


def _backends() -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    if importlib.util.find_spec("torch") is not None:
        import torch

        out["torch"] = {"available": True, "cuda": torch.cuda.is_available(), "threads": torch.get_num_threads()}
    else:
        out["torch"] = {"available": False}
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        out["onnxruntime"] = {"available": True, "providers": onnxruntime.get_available_providers()}
    else:
        out["onnxruntime"] = {"available": False}
    out["tensorrt"] = {"available": importlib.util.find_spec("tensorrt") is not None}
    return out


def _gpus() -> list:
    if importlib.util.find_spec("torch") is None:
        return []
    import torch

    if not torch.cuda.is_available():
        return []
    gpus = []
    for i in range(torch.cuda.device_count()):
        prop = torch.cuda.get_device_properties(i)
        gpus.append(
            {
                "index": i,
                "name": prop.name,
                "memory_gib": round(prop.total_memory / 2**30, 1),
                "compute_capability": f"{prop.major}.{prop.minor}",
            }
        )
    return gpus


def _body_models() -> Dict[str, Any]:
    from hmdiff_ros.body.topology import DEFAULT_ASSET, Topology

    cache = Path(os.environ.get("ANNY_CACHE_DIR", Path.home() / ".cache" / "anny"))
    models: Dict[str, Any] = {
        "anny": {
            "installed": _version("anny") is not None,
            "cache": str(cache),
            "cache_built": cache.is_dir() and any(cache.rglob("*")),
            "used_for": "training data, topology build (inference uses the topology asset)",
        },
        "smpl/smplx": {
            "installed": _version("smplx") is not None,
            "needs": "licensed model files from smpl.is.tue.mpg.de / smpl-x.is.tue.mpg.de",
        },
    }
    try:
        topo = Topology.load()
        models["topology"] = {
            "path": str(DEFAULT_ASSET),
            "body_model": topo.meta.get("body_model"),
            "full_vertices": topo.num_full,
            "coarse_vertices": topo.num_coarse,
            "joints": topo.num_joints,
        }
    except (FileNotFoundError, ValueError) as exc:
        models["topology"] = {"error": str(exc)}
    return models


def collect_info() -> Dict[str, Any]:
    """Everything ``hmdiff info`` reports, as a JSON-able dict."""
    return {
        "hmdiff_ros": hmdiff_ros.__version__,
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "ros_distro": os.environ.get("ROS_DISTRO"),
        "packages": {name: _version(name) for name in _PACKAGES},
        "backends": _backends(),
        "body_models": _body_models(),
        "gpus": _gpus(),
    }


def format_info(info: Dict[str, Any]) -> str:
    """Human-readable rendering of :func:`collect_info`."""
    lines = [
        f"hmdiff_ros {info['hmdiff_ros']}  (Python {info['python']}, {info['platform']}, ROS {info['ros_distro'] or 'not sourced'})"
    ]
    lines.append("packages:")
    lines += [f"  {k:<22} {v or '-'}" for k, v in info["packages"].items()]
    lines.append("backends:")
    for name, b in info["backends"].items():
        extra = {k: v for k, v in b.items() if k != "available"}
        lines.append(f"  {name:<22} {'yes' if b['available'] else 'no'}  {extra if extra else ''}".rstrip())
    lines.append("body models:")
    for name, m in info["body_models"].items():
        lines.append(f"  {name:<22} " + ", ".join(f"{k}={v}" for k, v in m.items()))
    lines.append("gpus:")
    lines += [
        f"  {g['index']}: {g['name']} ({g['memory_gib']} GiB, sm {g['compute_capability']})" for g in info["gpus"]
    ] or ["  none (CPU only)"]
    return "\n".join(lines)
