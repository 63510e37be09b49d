"""Fixed synthetic splits on disk (``hmdiff data make``) and their reader.

A split folder holds ``samples.npz`` (every field of an engine batch but the ``proxy``
tensor, masks quantised to 8 bits) and ``meta.json`` (split, seed, count, the engine config
and package version). The reader rebuilds the proxy with the same
:func:`~hmdiff_ros.observation.make_proxy` that training and inference use.

A split made with a test-bank engine (``TEST_BANK``) is **held out**: its bodies come from
the test bank and its batches from the held-out stream (``batch_rng(seed, index, "test")``).
``meta.json`` says so: ``held_out``, ``bodies`` (the bank's role, size, seed and the SHA-1 of
its phenotypes) and ``stream`` (role, seed, batch size and the ``SeedSequence`` spawn key).
"""

from __future__ import annotations

import json
import zipfile
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Dict, Iterator

import numpy as np

import hmdiff_ros
from hmdiff_ros.body.joints import NUM_JOINTS, PRIOR_JOINT_NAMES
from hmdiff_ros.data.engine import SyntheticEngine, batch_rng, compact, stream_spawn_key
from hmdiff_ros.errors import one_line
from hmdiff_ros.observation import ProxyConfig, make_proxy

SAMPLES_FILE = "samples.npz"
META_FILE = "meta.json"
FORMAT_VERSION = 1


def write_split(
    engine: SyntheticEngine,
    out: "str | Path",
    num: int,
    seed: int,
    split: str,
    batch: int = 256,
    progress: bool = True,
    force: bool = False,
) -> Path:
    """Generate ``num`` samples (batches seeded by ``(seed, index)``) into folder ``out``, which
    must be new or empty unless ``force`` (then its split files are replaced, nothing else).
    The stream has the role of the engine's shape bank: a test-bank engine writes a held-out
    split (test bodies, held-out stream), a training-bank engine one drawn like training data."""
    if num < 1:
        raise ValueError(f"--num must be >= 1, got {num}")
    if batch < 1:
        raise ValueError(f"--batch must be >= 1, got {batch}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out '{out}' is a file; expected a folder for the split")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ValueError(
            f"--out '{out}' already exists and is not empty; use --force to replace its split or choose another --out"
        )
    from tqdm import tqdm

    role = engine.cfg.bank.role
    parts: Dict[str, list] = {}
    bar = tqdm(total=num, desc=f"data make {split}", unit="sample", disable=not progress)
    for index in range((num + batch - 1) // batch):
        b = compact(engine.generate(batch_rng(seed, index, role), min(batch, num - index * batch), proxy=False))
        for k, v in b.items():
            parts.setdefault(k, []).append(v)
        bar.update(len(b["coarse"]))
    bar.close()
    meta = {
        "format": FORMAT_VERSION,
        "split": split,
        "num": num,
        "seed": seed,
        "held_out": role == "test",
        "bodies": {
            "role": role,
            "size": engine.bank.size,
            "seed": engine.cfg.bank.seed,
            "phenotype_seed": engine.cfg.bank.phenotype_seed,
            "phenotypes_sha1": engine.bank.phenotypes_sha1(),
        },
        "stream": {"role": role, "seed": seed, "batch": batch, "spawn_key": list(stream_spawn_key(role))},
        "hmdiff_ros": hmdiff_ros.__version__,
        "config": asdict(engine.cfg),
        "num_coarse": engine.topology.num_coarse,
    }
    # nothing is written until the samples exist; each file is written whole, then moved into
    # place, so an interrupted run leaves no half split behind
    out.mkdir(parents=True, exist_ok=True)
    tmp_samples, tmp_meta = out / (SAMPLES_FILE + ".tmp.npz"), out / (META_FILE + ".tmp")
    try:
        np.savez_compressed(tmp_samples, **{k: np.concatenate(v) for k, v in parts.items()})
        tmp_meta.write_text(json.dumps(meta, indent=2) + "\n")
        tmp_samples.replace(out / SAMPLES_FILE)
        tmp_meta.replace(out / META_FILE)
    finally:
        tmp_samples.unlink(missing_ok=True)
        tmp_meta.unlink(missing_ok=True)
    return out


# the arrays the reader and ``hmdiff eval`` use (a split holds more); all share the sample axis
REQUIRED_ARRAYS = ("uv", "vis", "mask", "valid", "prior_xyz", "coarse", "coarse_rel", "joints_rel")
# the required arrays of real numbers: every value finite (other arrays may hold NaN, e.g. 'occluder')
FINITE_ARRAYS = ("uv", "vis", "prior_xyz", "coarse", "coarse_rel", "joints_rel")


class SplitReader:
    """Reads a folder written by :func:`write_split`; errors (``FileNotFoundError`` when
    something is missing, ``ValueError`` otherwise) name the folder or the file and what is
    wrong."""

    def __init__(self, folder: "str | Path") -> None:
        self.folder = Path(folder)
        meta_path, samples_path = self.folder / META_FILE, self.folder / SAMPLES_FILE
        if self.folder.exists() and not self.folder.is_dir():
            raise ValueError(f"data folder '{self.folder}' is a file; expected a folder written by 'hmdiff data make'")
        if not self.folder.is_dir():
            raise FileNotFoundError(f"data folder '{self.folder}' does not exist; write one with 'hmdiff data make'")
        if not meta_path.is_file() or not samples_path.is_file():
            raise FileNotFoundError(
                f"'{self.folder}' is not a split written by 'hmdiff data make' (needs {META_FILE} and {SAMPLES_FILE})"
            )
        self.meta = self._read_meta(meta_path)
        self.arrays = self._read_samples(samples_path)
        num = self.meta.get("num")
        if isinstance(num, int) and not isinstance(num, bool) and num != len(self):
            raise ValueError(
                f"split '{self.folder}': {SAMPLES_FILE} holds {len(self)} samples but {META_FILE} says {num}; "
                "write the split again with 'hmdiff data make --force'"
            )

    def _read_meta(self, path: Path) -> Dict:
        hint = "expected the JSON that 'hmdiff data make' writes"
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError) as exc:  # JSON and UTF-8 errors are ValueErrors
            raise ValueError(
                f"cannot read '{path}': {type(exc).__name__}: {' '.join(str(exc).split())}; {hint}"
            ) from None
        if not isinstance(meta, dict):
            raise ValueError(f"'{path}' must hold a JSON object, got {type(meta).__name__}; {hint}")
        if meta.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"split '{self.folder}' has format {meta.get('format')!r} in {META_FILE}, expected {FORMAT_VERSION}"
            )
        proxy = meta.get("config", {}).get("proxy") if isinstance(meta.get("config"), dict) else None
        if not isinstance(proxy, dict):
            raise ValueError(f"'{path}' has no engine config under config.proxy; {hint}")
        try:
            self.proxy_cfg = ProxyConfig(**proxy)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"'{path}': config.proxy is not a proxy config ({exc}); {hint}") from None
        return meta

    def _read_samples(self, path: Path) -> Dict[str, np.ndarray]:
        hint = "write the split again with 'hmdiff data make --force'"
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {k: data[k] for k in data.files}
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
            why = one_line(exc)
            raise ValueError(f"'{path}' is truncated or corrupt ({type(exc).__name__}: {why}); {hint}") from None
        missing = [k for k in REQUIRED_ARRAYS if k not in arrays]
        if missing:
            raise ValueError(f"'{path}' lacks the arrays {missing}; {hint}")
        num = len(arrays["coarse"]) if arrays["coarse"].ndim else 0
        for name, a in arrays.items():
            if a.ndim == 0 or len(a) != num:
                rows = f"{len(a)} rows" if a.ndim else "a scalar"
                raise ValueError(f"'{path}': array '{name}' has {rows} where 'coarse' has {num} samples; {hint}")
        if num == 0:
            raise ValueError(f"'{path}' holds no samples; {hint}")
        self._check_fields(path, arrays, hint)
        return arrays

    def _check_fields(self, path: Path, arrays: Dict[str, np.ndarray], hint: str) -> None:
        """The required arrays have their shapes and only finite numbers, checked when the split
        is read: a NaN would otherwise surface deep in the metrics as numpy's "SVD did not
        converge", naming nothing. Errors name the file, the array and the first bad sample."""
        n, s, p = len(arrays["coarse"]), self.proxy_cfg.crop_size, len(PRIOR_JOINT_NAMES)
        v = arrays["coarse"].shape[1] if arrays["coarse"].ndim == 3 else "V"
        shapes = {
            "uv": (n, p, 2),
            "vis": (n, p),
            "mask": (n, s, s),
            "valid": (n, s, s),
            "prior_xyz": (n, p, 3),
            "coarse": (n, v, 3),
            "coarse_rel": (n, v, 3),
            "joints_rel": (n, NUM_JOINTS, 3),
        }
        for name, shape in shapes.items():
            a = arrays[name]
            if a.dtype.kind not in "biuf":
                raise ValueError(f"'{path}': array '{name}' holds {a.dtype}, expected numbers; {hint}")
            if a.shape != shape:
                want = f"({', '.join(str(k) for k in shape)})"
                raise ValueError(f"'{path}': array '{name}' has shape {a.shape}, expected {want}; {hint}")
        for name in FINITE_ARRAYS:
            bad = ~np.isfinite(arrays[name]).reshape(n, -1)
            rows = np.flatnonzero(bad.any(1))
            if len(rows):
                i = int(rows[0])
                what = "NaN" if np.isnan(arrays[name][i]).any() else "inf"
                more = f" (and {len(rows) - 1} more samples)" if len(rows) > 1 else ""
                raise ValueError(f"'{path}': sample {i} has {what} in '{name}'{more}; expected finite numbers; {hint}")

    def __len__(self) -> int:
        return len(self.arrays["coarse"])

    @property
    def held_out(self) -> bool:
        """Whether the split's bodies and stream are held out from training (splits written
        before held-out splits existed do not say so: they were drawn like training data)."""
        return self.meta.get("held_out") is True

    def batch(self, start: int, stop: int) -> Dict[str, np.ndarray]:
        """Samples ``[start, stop)`` in compact form (uint8 ``mask``, bool ``valid``) plus ``proxy``."""
        b = {k: v[start:stop] for k, v in self.arrays.items()}
        b["proxy"] = make_proxy(b["uv"], b["vis"], b["mask"], b["valid"], self.proxy_cfg)
        return b

    def batches(self, size: int, limit: int | None = None) -> Iterator[Dict[str, np.ndarray]]:
        total = len(self) if limit is None else min(limit, len(self))
        for start in range(0, total, size):
            yield self.batch(start, min(start + size, total))
