"""Where a case runs: the session's shared assets (one export cache, clips, bags, a split),
each made once and lazily, and a case's own folder (``Ctx``) with the user's files under
``user/`` and the actions it runs; then the case registry."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from .judges import Reasons, refusal, unchanged
from .runner import Obs, run, snapshot

REPO = Path(__file__).resolve().parents[2]


def hmdiff(*args) -> List[str]:
    """The command line of ``hmdiff ARGS`` run from this checkout."""
    return [sys.executable, "-m", "hmdiff_ros.cli", *map(str, args)]


class Session:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.made: Dict[str, object] = {}
        self.baseline = 2.0  # seconds of a plain usage error (measured)
        demos = sorted((REPO / "hmdiff_ros" / "assets" / "demo").glob("*.jpg"))
        self.demo = demos[0]

    def env(self, cache: Path | None = None, **extra: str) -> Dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("HMDIFF_VERBOSE", "HMDIFF_CACHE")}
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
        env["PYTHONUNBUFFERED"] = "1"
        if cache is not None:
            env["HMDIFF_CACHE"] = str(cache)
        env.update(extra)
        return env

    def once(self, name: str, make: Callable[[Path], object]):
        if name not in self.made:
            folder = self.root / "assets" / name
            folder.mkdir(parents=True, exist_ok=True)
            t0 = time.monotonic()
            self.made[name] = make(folder)
            print(f"  (prepared {name} in {time.monotonic() - t0:.1f} s)", file=sys.stderr, flush=True)
        return self.made[name]

    # the export cache every case copies
    def cache(self) -> Path:
        def make(folder: Path) -> Path:
            code = "from hmdiff_ros.runtime.export_cache import cached_export; print(cached_export())"
            o = run([sys.executable, "-c", code], folder, self.env(folder), 300)
            if o.rc != 0:
                raise RuntimeError(f"could not prepare the export cache: {o.err[-2000:]}")
            return folder

        return self.once("cache", make)

    def cache_entry(self, cache: Path) -> Path:
        (entry,) = [p for p in (cache / "engines").iterdir() if p.is_dir()]
        return entry

    def clip(self, frames: int) -> Path:
        def make(folder: Path) -> Path:
            import cv2

            path = folder / "walk.mp4"
            person = cv2.resize(cv2.imread(str(self.demo)), (256, 256))
            writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (256, 256))
            for i in range(frames):
                writer.write(cv2.flip(person, 1) if i % 2 else person)
            writer.release()
            return path

        return self.once(f"clip{frames}", make)

    def bag(self, frames: int, storage: str = "mcap") -> Path:
        return self.once(f"bag_{storage}_{frames}", lambda folder: write_bag(folder / "in", self.demo, frames, storage))

    def split(self) -> Path:
        """A valid split of 8 samples: the first of the user's cached protocol split (read
        only), else one written by ``hmdiff data make``."""

        def make(folder: Path) -> Path:
            out = folder / "split"
            cache = Path(os.environ.get("HMDIFF_CACHE_DIR") or Path.home() / ".cache" / "hmdiff_ros")
            found = sorted(cache.glob("protocol_synthetic-*/samples.npz"))
            if found:
                out.mkdir()
                with np.load(found[0], allow_pickle=False) as d:
                    np.savez_compressed(out / "samples.npz", **{k: d[k][:8] for k in d.files})
                meta = json.loads((found[0].parent / "meta.json").read_text())
                meta["num"] = 8
                (out / "meta.json").write_text(json.dumps(meta))
                return out
            cmd = [sys.executable, "-m", "hmdiff_ros.cli", "data", "make", "--num", "8", "--split", "test"]
            res = run([*cmd, "--out", str(out)], folder, self.env(), 600)
            if res.rc != 0:
                raise RuntimeError(f"could not make a split: {res.err[-2000:]}")
            return out

        return self.once("split", make)


def write_bag(path: Path, image: Path, frames: int, storage: str, broken: Dict[int, str] | None = None) -> Path:
    """A rosbag2 of ``frames`` 256x256 rgb8 images of ``image`` on /camera/image_raw with
    CameraInfo on /camera/camera_info (what tests/test_ros_bag.py writes, with rosbags' own
    Humble types). ``broken``: frame index -> 'short' (half its data), 'encoding' (an
    encoding no one decodes) or 'empty' (0x0)."""
    import cv2
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    store = get_typestore(Stores.ROS2_HUMBLE)
    T = store.types
    rgb = cv2.cvtColor(cv2.resize(cv2.imread(str(image)), (256, 256)), cv2.COLOR_BGR2RGB)
    h, w = rgb.shape[:2]
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    image_t, info_t = "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo"
    with Writer(path, version=8, storage_plugin=plugin) as writer:
        img_c = writer.add_connection("/camera/image_raw", image_t, typestore=store)
        info_c = writer.add_connection("/camera/camera_info", info_t, typestore=store)
        for k in range(frames):
            sec, ns = 100 + k // 10, (k % 10) * 100_000_000
            stamp = T["builtin_interfaces/msg/Time"](sec=sec, nanosec=ns)
            hdr = T["std_msgs/msg/Header"](stamp=stamp, frame_id="camera_optical_frame")
            K = np.array([300.0, 0, w / 2, 0, 300, h / 2, 0, 0, 1])
            roi = T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
            info = T[info_t](
                header=hdr,
                height=h,
                width=w,
                distortion_model="plumb_bob",
                d=np.zeros(5),
                k=K,
                r=np.eye(3).ravel(),
                p=np.array([300.0, 0, w / 2, 0, 0, 300, h / 2, 0, 0, 0, 1, 0]),
                binning_x=0,
                binning_y=0,
                roi=roi,
            )
            data = np.ascontiguousarray(rgb if k % 2 else rgb[:, ::-1]).ravel()
            size, encoding = (h, w), "rgb8"
            kind = (broken or {}).get(k)
            if kind == "short":
                data = data[: len(data) // 2]
            elif kind == "encoding":
                encoding = "yuv_strange8"
            elif kind == "empty":
                size, data = (0, 0), np.zeros(0, np.uint8)
            msg = T[image_t](
                header=hdr,
                height=size[0],
                width=size[1],
                encoding=encoding,
                is_bigendian=0,
                step=3 * size[1],
                data=data,
            )
            t = sec * 10**9 + ns
            writer.write(info_c, t, store.serialize_cdr(info, info_t))
            writer.write(img_c, t, store.serialize_cdr(msg, image_t))
    return path


# --- one case's folder and actions --------------------------------------------------------------


class Ctx:
    def __init__(self, session: Session, folder: Path) -> None:
        self.s = session
        self.dir = folder
        self.user = folder / "user"
        self.user.mkdir(parents=True)
        self._cache: Path | None = None
        self.notes: List[str] = []

    @property
    def demo(self) -> Path:
        return self.s.demo

    def cache(self) -> Path:
        """This case's own copy of the prepared export cache."""
        if self._cache is None:
            self._cache = self.dir / "cache"
            shutil.copytree(self.s.cache(), self._cache, ignore=shutil.ignore_patterns("*.lock"))
        return self._cache

    def env(self, cache: Path | str | None = "copy", **extra: str) -> Dict[str, str]:
        return self.s.env(self.cache() if cache == "copy" else cache, **extra)

    def write(self, rel: str, data: "str | bytes") -> Path:
        p = self.user / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        (p.write_bytes if isinstance(data, bytes) else p.write_text)(data)
        return p

    def copy_demo(self, rel: str = "photo.jpg") -> Path:
        p = self.user / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.demo, p)
        return p

    def cli(
        self,
        *args,
        timeout: float = 60,
        env: Dict[str, str] | None = None,
        trigger: Callable | None = None,
        sig: int = signal.SIGINT,
        again: float | None = None,
    ) -> Obs:
        env = env if env is not None else self.env()  # (copies the cache: before the clock starts)
        return run(hmdiff(*args), self.dir, env, timeout, trigger, sig, again)

    def py(self, body: str, timeout: float = 60, env: Dict[str, str] | None = None) -> Obs:
        script = self.dir / "case.py"
        script.write_text(API_PRELUDE + textwrap.dedent(body))
        return run([sys.executable, str(script)], self.dir, env if env is not None else self.env(), timeout)


API_PRELUDE = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np

    def report(**kw):
        kw["maxrss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print("RESULT " + json.dumps(kw, default=str), flush=True)

    def attempt(fn):
        t = time.perf_counter()
        try:
            value = fn()
            return {"ok": True, "value": value, "s": round(time.perf_counter() - t, 2)}
        except Exception as exc:
            return {"ok": False, "exc": type(exc).__name__, "msg": str(exc), "s": round(time.perf_counter() - t, 2),
                    "value_error": isinstance(exc, ValueError)}

    def people_summary(people):
        return [{"joints_finite": bool(np.isfinite(p.joints).all()), "z": float(np.mean(p.joints[:, 2])),
                 "box": [float(v) for v in p.box], "joints": p.joints.round(6).tolist()} for p in people]

    def pipeline():
        from hmdiff_ros.pipeline.config import PipelineConfig
        from hmdiff_ros.pipeline.pipeline import build_pipeline
        return build_pipeline(PipelineConfig(hypotheses=2))

    def demo_rgb():
        from hmdiff_ros.pipeline.io import read_image
        from hmdiff_ros.pipeline.run import DEMO_IMAGE
        return read_image(DEMO_IMAGE)
    """
)


def refuses(
    c: Ctx,
    *args,
    code: int = 2,
    names: Sequence[str] = (),
    quick: bool = True,
    timeout: float = 60,
    env: Dict[str, str] | None = None,
) -> Tuple[Obs, Reasons]:
    """``hmdiff ARGS`` must refuse (``refusal``) and leave the user's files as they were."""
    before = snapshot(c.user)
    o = c.cli(*args, timeout=timeout, env=env)
    return o, refusal(o, c.s, code, names, quick) + unchanged(before, c.user)


# --- the case registry ----------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    surface: str
    what: str
    fn: Callable[[Ctx], Tuple[Obs | None, Reasons]]


CASES: List[Case] = []


def case(id: str, surface: str, what: str):
    """Register the decorated ``fn(c: Ctx) -> (Obs, Reasons)`` as a case (in the order of
    registration, which is the order the sweep runs and lists them)."""

    def add(fn):
        CASES.append(Case(id, surface, what, fn))
        return fn

    return add


def cases(surface: str, fn: Callable[..., Tuple[Obs, Reasons]], *rows: Tuple) -> None:
    """One case per row ``(id, what, *args)``, each running ``fn(c, *args)``."""
    for id, what, *args in rows:
        case(id, surface, what)(lambda c, args=args: fn(c, *args))


def refusal_case(
    id: str, surface: str, what: str, args: Sequence | Callable[[Ctx], Sequence], names: Sequence[str], **kw
) -> None:
    """A case with nothing to set up: ``hmdiff ARGS`` must refuse naming ``names`` (``args``
    may be a function of the case's ``Ctx``, for paths in its folder; ``kw``: ``code``,
    ``quick``, ``timeout``)."""
    case(id, surface, what)(lambda c: refuses(c, *(args(c) if callable(args) else args), names=names, **kw))
