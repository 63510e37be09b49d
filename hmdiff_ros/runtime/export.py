"""``hmdiff export``: the encoder, the denoiser and unrolled K-step samplers to ONNX.

Files written to the output folder (``engines/`` by default):

- ``encoder.onnx``: ``proxy`` ``(B, 26, S, S)`` -> ``image_tokens`` ``(B, N, D)``;
- ``denoiser.onnx``: ``sample`` ``(B, P, 3)``, ``timestep`` ``(B,)`` int64, ``image_tokens``
  -> ``output`` ``(B, P, 3)`` (the scheduler's prediction type);
- ``sampler_k{K}_{dat}.onnx`` for each requested K: the whole DDIM loop with DAT (``off`` or
  ``fast``, the exportable mode, with the rigid start) unrolled into one graph: ``proxy``,
  ``noise`` ``(B, P, 3)``, ``prior_xyz`` ``(B, 24, 3)``, ``prior_vis`` ``(B, 24)`` -> ``points``
  ``(B, P, 3)`` metres, root-relative. One call does a frame; B is people x hypotheses;
- ``manifest.json``: opset, the exporting torch version, input/output names and shapes, the
  checkpoint's hash, the schedule and DAT settings of every sampler, and each file's hash.

The batch axis is dynamic everywhere.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Dict, Sequence

import torch
from torch import nn

from hmdiff_ros.model.checkpoint import CONFIG, DEFAULT_CHECKPOINT, WEIGHTS, error_line, load_checkpoint
from hmdiff_ros.model.dat import DATConfig

log = logging.getLogger(__name__)
OPSET = 17
MANIFEST = "manifest.json"


def file_sha256(path: "str | Path") -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class UnrolledSampler(nn.Module):
    """The K-step sampler of :meth:`HMDiff.sample` (one hypothesis per row, eta 0) as a module."""

    def __init__(self, model, steps: int, dat: DATConfig) -> None:
        super().__init__()
        if dat.mode == "full":
            raise ValueError("dat mode 'full' needs autograd and cannot be exported; use 'fast' or 'off'")
        self.model, self.steps, self.dat = model, steps, dat

    def forward(self, proxy, noise, prior_xyz, prior_vis):
        out = self.model.sample(proxy, prior_xyz, prior_vis, steps=self.steps, dat=self.dat, noise=noise)
        return out.points


def _export(module: nn.Module, args, path: Path, inputs: Sequence[str], outputs: Sequence[str], opset: int) -> None:
    kwargs = dict(
        input_names=list(inputs), output_names=list(outputs), opset_version=opset,
        dynamic_axes={n: {0: "batch"} for n in (*inputs, *outputs)}, do_constant_folding=True,
    )  # fmt: skip
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False  # the TorchScript exporter: same graphs on torch 2.1 .. 2.13
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), **kwargs)


def _check_out(out: Path, force: bool) -> None:
    """Refuse an ``out`` that is a file, or a folder with anything in it without ``force``.
    A folder holding only a ``README.md`` (the repository's ``engines/`` has one) counts as
    empty: the export never writes one."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"export folder '{out}' is an existing file, not a folder; choose another --out")
    if out.is_dir() and not force and any(p.name != "README.md" for p in out.iterdir()):
        raise ValueError(
            f"export folder '{out}' already exists and is not empty; "
            "use --force to replace its export or choose another --out"
        )


def export_onnx(
    checkpoint: "str | Path | None" = None,
    out: "str | Path" = "engines",
    steps: Sequence[int] = (4,),
    dat: str = "fast",
    opset: int = OPSET,
    force: bool = False,
) -> Dict:
    """Export and write the manifest; returns the manifest.

    ``out`` must be a new or empty folder unless ``force``: then the files this export writes
    (the ONNX graphs and the manifest) replace those of the same names, once all of them are
    written, and nothing else in the folder is touched."""
    if dat not in ("off", "fast"):
        raise ValueError(f"exported samplers support dat 'off' or 'fast', got {dat!r}")
    if any(int(k) < 1 for k in steps):
        raise ValueError(f"steps must be >= 1, got {list(steps)}")
    out = Path(out)
    _check_out(out, force)
    ckpt = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
    model, _ = load_checkpoint(ckpt)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        manifest = _export_all(model, ckpt, tmp, steps, dat, opset)
        (out / MANIFEST).unlink(missing_ok=True)  # a half-replaced export is never taken for a whole one
        for name in manifest["files"]:
            os.replace(tmp / name, out / name)
        os.replace(tmp / MANIFEST, out / MANIFEST)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if created and not any(out.iterdir()):
            out.rmdir()  # a failed export into a new folder leaves nothing behind
    log.info("exported %d ONNX files to %s", len(manifest["files"]), out)
    return manifest


def _export_all(model, ckpt: Path, out: Path, steps: Sequence[int], dat: str, opset: int) -> Dict:
    """Every graph and the manifest into ``out``; returns the manifest."""
    enc = model.cfg.encoder
    g = torch.Generator().manual_seed(0)
    proxy = torch.rand(2, enc.in_channels, enc.input_size, enc.input_size, generator=g)
    with torch.no_grad():
        tokens = model.encoder(proxy)
    noise = torch.randn(2, model.num_points, 3, generator=g)
    prior, vis = torch.randn(2, 24, 3, generator=g) * 0.3, torch.ones(2, 24)
    files: Dict[str, Dict] = {}

    _export(model.encoder, (proxy,), out / "encoder.onnx", ["proxy"], ["image_tokens"], opset)
    files["encoder.onnx"] = {
        "inputs": {"proxy": ["batch", enc.in_channels, enc.input_size, enc.input_size]},
        "outputs": {"image_tokens": ["batch", tokens.shape[1], tokens.shape[2]]},
    }
    timestep = torch.tensor([999, 250])
    _export(model.denoiser, (noise, timestep, tokens), out / "denoiser.onnx",
            ["sample", "timestep", "image_tokens"], ["output"], opset)  # fmt: skip
    files["denoiser.onnx"] = {
        "inputs": {
            "sample": ["batch", model.num_points, 3], "timestep": ["batch"],
            "image_tokens": ["batch", tokens.shape[1], tokens.shape[2]],
        },
        "outputs": {"output": ["batch", model.num_points, 3]},
    }  # fmt: skip
    dat_cfg = replace(DATConfig(), mode=dat)
    for k in sorted({int(k) for k in steps}):
        name = sampler_file(k, dat)
        _export(UnrolledSampler(model, k, dat_cfg).eval(), (proxy, noise, prior, vis), out / name,
                ["proxy", "noise", "prior_xyz", "prior_vis"], ["points"], opset)  # fmt: skip
        files[name] = {
            "steps": k, "dat": asdict(dat_cfg),
            "inputs": {
                "proxy": ["batch", enc.in_channels, enc.input_size, enc.input_size],
                "noise": ["batch", model.num_points, 3], "prior_xyz": ["batch", 24, 3], "prior_vis": ["batch", 24],
            },
            "outputs": {"points": ["batch", model.num_points, 3]},
        }  # fmt: skip
    for name in files:
        files[name]["sha256"] = file_sha256(out / name)
    manifest = {
        "format": 1,
        "opset": opset,
        "torch": torch.__version__,
        "checkpoint": str(ckpt),
        "checkpoint_sha256": file_sha256(ckpt / WEIGHTS),
        "config_sha256": file_sha256(ckpt / CONFIG),
        "model": model.cfg.to_dict(),
        "num_points": model.num_points,
        "num_coarse": model.num_coarse,
        "files": files,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def sampler_file(steps: int, dat: str) -> str:
    return f"sampler_k{int(steps)}_{dat}.onnx"


def read_manifest(folder: "str | Path") -> Dict:
    """The export manifest of ``folder``; one-line errors name the file at fault:
    ``FileNotFoundError`` when the manifest or a graph is missing, ``ValueError`` when the
    manifest is truncated or corrupt."""
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"no ONNX export in '{folder}' (missing {MANIFEST}); run 'hmdiff export --out {folder}'"
        )
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        if not isinstance(files, dict) or not all(isinstance(v, dict) for v in files.values()):
            raise TypeError("'files' must map file names to their records")
    except (OSError, KeyError, TypeError, ValueError) as exc:  # JSON and UTF-8 errors are ValueErrors
        raise ValueError(
            f"export manifest '{path}' is truncated or corrupt ({type(exc).__name__}: {error_line(exc)}); "
            f"expected the JSON that 'hmdiff export' writes: run 'hmdiff export --out {folder} --force'"
        ) from None
    for name in ("encoder.onnx", "denoiser.onnx"):
        if name not in files or not (folder / name).is_file():
            raise FileNotFoundError(f"'{folder / name}' is missing; run 'hmdiff export --out {folder} --force'")
    return manifest


def check_export(folder: "str | Path", checkpoint: "str | Path") -> Dict:
    """The manifest of the export in ``folder`` after checking that it was made from
    ``checkpoint`` and that every ONNX file present still has the SHA-256 recorded at export
    (a truncated or changed file is refused by name)."""
    folder, checkpoint = Path(folder), Path(checkpoint)
    manifest = read_manifest(folder)
    if manifest.get("checkpoint_sha256") != file_sha256(checkpoint / WEIGHTS):
        raise ValueError(
            f"the ONNX export in '{folder}' was made from another checkpoint than '{checkpoint}'; "
            f"run 'hmdiff export --checkpoint {checkpoint} --out {folder} --force'"
        )
    for name, info in manifest["files"].items():
        path = folder / name
        if path.is_file() and info.get("sha256") != file_sha256(path):
            raise ValueError(
                f"ONNX file '{path}' is truncated or corrupt (its SHA-256 differs from the one in {MANIFEST}); "
                f"run 'hmdiff export --checkpoint {checkpoint} --out {folder} --force'"
            )
    return manifest
