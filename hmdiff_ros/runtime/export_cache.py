"""The export cache: one ONNX export per checkpoint in the user's cache (:func:`cache_root`),
made on first use and repaired where it falls short (:func:`cached_export`), so that the ONNX
Runtime backend needs no manual step."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from dataclasses import replace
from pathlib import Path
from typing import Iterator, Sequence

import torch

from hmdiff_ros import defaults
from hmdiff_ros.errors import one_line
from hmdiff_ros.model.checkpoint import CONFIG, DEFAULT_CHECKPOINT, WEIGHTS
from hmdiff_ros.model.dat import DATConfig
from hmdiff_ros.runtime.export import OPSET, write_export
from hmdiff_ros.runtime.manifest import (
    FORMAT,
    damaged_files,
    file_sha256,
    graph_code_sha256,
    sampler_file,
    trusted_manifest,
)

log = logging.getLogger(__name__)


def cache_root() -> Path:
    """Where :func:`cached_export` keeps its exports: ``$HMDIFF_CACHE/engines``
    (``HMDIFF_CACHE`` defaults to ``~/.cache/hmdiff_ros``)."""
    return Path(os.environ.get("HMDIFF_CACHE") or Path.home() / ".cache" / "hmdiff_ros") / "engines"


def cached_export(
    checkpoint: "str | Path | None" = None,
    steps: Sequence[int] = (defaults.STEPS,),
    dat: str = defaults.DAT_MODE,
) -> Path:
    """The folder of an ONNX export of ``checkpoint`` with samplers for ``steps`` (DAT ``dat``),
    made once in the user's cache (:func:`cache_root`) and used from there after.

    The folder is keyed by the checkpoint's weights and config, the torch version, the export
    format and the source of the code that builds the graphs
    (:data:`~hmdiff_ros.runtime.manifest.GRAPH_CODE`: a new version of the package makes its own
    export). Before use it is checked as every export is
    (:func:`~hmdiff_ros.runtime.manifest.check_export`): one whose manifest is not to be trusted
    is made again; a file that is missing or changed, or a sampler asked for and not there, is
    made alone, beside the files that are sound. A cache that cannot be written (a read-only image) is used if
    its export is whole, else refused with the reason. Exports of one key are made one at a
    time (a file lock), so processes that start together (a launch file's nodes) make it once."""
    ckpt = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
    key = hashlib.sha256(
        "\n".join(
            [file_sha256(ckpt / WEIGHTS), file_sha256(ckpt / CONFIG), torch.__version__, str(FORMAT), str(OPSET)]
            + [graph_code_sha256()]
        ).encode()
    ).hexdigest()[:16]
    folder = cache_root() / key
    wanted = sorted({int(k) for k in steps})
    with contextlib.ExitStack() as stack:
        try:
            folder.parent.mkdir(parents=True, exist_ok=True)
            stack.enter_context(_locked(folder.with_suffix(".lock")))
        except OSError as exc:  # a read-only cache: usable as it is, if whole
            keep, make, samplers, why = _cache_plan(folder, ckpt, wanted, dat)
            if not make:
                log.info("using the export cache %s without a lock (%s)", folder, one_line(exc))
                return folder
            raise OSError(
                f"the export cache '{folder}' cannot be written ({one_line(exc)}) and its export cannot be used "
                f"as it is ({why}); set HMDIFF_CACHE to a writable folder, or pass --engines with an export"
            ) from None
        keep, make, samplers, why = _cache_plan(folder, ckpt, wanted, dat)
        if not make:
            return folder
        if folder.exists() and not folder.is_dir():  # the cache's own entry, not a user's file
            folder.unlink()
        if keep:
            log.info("repairing the ONNX export of %s in %s: making %s (%s)", ckpt, folder, ", ".join(make), why)
        else:
            log.info("making the ONNX export of %s in %s (%s; once, about 10 s)", ckpt, folder, why)
        write_export(ckpt, folder, samplers, OPSET, keep=keep, make=make)
    return folder


def _cache_plan(folder: Path, ckpt: Path, wanted: Sequence[int], dat: str):
    """What the cache entry ``folder`` needs to serve samplers for ``wanted`` steps with DAT
    ``dat``: ``(keep, make, samplers, why)``: the records of the sound files to keep, the
    names of the files to make (none: use it as it is), the ``(steps, DATConfig)`` of every
    sampler the export lists then, and the reason in words."""
    new = [(k, replace(DATConfig(), mode=dat)) for k in wanted]
    everything = ["encoder.onnx", "denoiser.onnx", *(sampler_file(k, dat) for k in wanted)]
    if folder.exists() and not folder.is_dir():
        return {}, everything, new, f"'{folder}' is a file, not an export folder"
    try:
        manifest = trusted_manifest(folder, ckpt)
    except FileNotFoundError:
        return {}, everything, new, "none made yet"
    except ValueError as exc:
        return {}, everything, new, one_line(exc)
    files = manifest["files"]
    damaged = damaged_files(folder, manifest)
    samplers = [(int(i["steps"]), DATConfig(**i["dat"])) for i in files.values() if "steps" in i]
    lacking = [k for k in wanted if sampler_file(k, dat) not in files]
    samplers += [(k, replace(DATConfig(), mode=dat)) for k in lacking]
    make = [*damaged, *(sampler_file(k, dat) for k in lacking)]
    why = "; ".join(
        [f"{name} {what}" for name, what in damaged.items()]
        + ([f"no sampler for steps {lacking} with DAT {dat}"] if lacking else [])
    )
    return {n: i for n, i in files.items() if n not in make}, make, samplers, why


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (made if needed) while the block runs, where the system has
    ``fcntl`` (Linux, macOS); elsewhere no lock."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
