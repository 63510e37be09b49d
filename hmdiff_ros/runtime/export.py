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
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Dict, Sequence

import torch
from torch import nn

from hmdiff_ros.model.checkpoint import CONFIG, DEFAULT_CHECKPOINT, WEIGHTS, load_checkpoint
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


def export_onnx(
    checkpoint: "str | Path | None" = None,
    out: "str | Path" = "engines",
    steps: Sequence[int] = (4,),
    dat: str = "fast",
    opset: int = OPSET,
) -> Dict:
    """Export and write the manifest; returns the manifest."""
    if dat not in ("off", "fast"):
        raise ValueError(f"exported samplers support dat 'off' or 'fast', got {dat!r}")
    if any(int(k) < 1 for k in steps):
        raise ValueError(f"steps must be >= 1, got {list(steps)}")
    ckpt = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
    model, _ = load_checkpoint(ckpt)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
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
    log.info("exported %d ONNX files to %s", len(files), out)
    return manifest


def sampler_file(steps: int, dat: str) -> str:
    return f"sampler_k{int(steps)}_{dat}.onnx"


def read_manifest(folder: "str | Path") -> Dict:
    folder = Path(folder)
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(
            f"no ONNX export in '{folder}' (missing {MANIFEST}); run 'hmdiff export --out {folder}'"
        )
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"'{path}' is not a valid export manifest: {exc}") from None
    for name in ("encoder.onnx", "denoiser.onnx"):
        if name not in files or not (folder / name).is_file():
            raise FileNotFoundError(f"'{folder / name}' is missing; run 'hmdiff export --out {folder}' again")
    return manifest
