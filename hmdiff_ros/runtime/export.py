"""``hmdiff export``: the encoder, the denoiser and unrolled K-step samplers to ONNX.

Files written to the output folder (``engines/`` by default):

Two dynamic axes, named apart in every graph and in the manifest: ``people`` (B, one row per
person) and ``rows`` (B*M, one per hypothesis, each person's M next to each other). TensorRT's
ONNX parser takes equal names for equal sizes, so no input of one kind may carry the other's
name (:data:`PEOPLE`, :data:`ROWS`).

- ``encoder.onnx``: ``proxy`` ``(people, 26, S, S)`` -> ``image_tokens`` ``(people, N, D)``;
- ``denoiser.onnx``: ``sample`` ``(rows, P, 3)``, ``timestep`` ``(rows,)`` int64,
  ``image_tokens`` ``(people, N', D)`` (each person's tokens read by its M rows) -> ``output``
  ``(rows, P, 3)`` (the scheduler's prediction type);
- ``sampler_k{K}_{dat}.onnx`` for each requested K: the whole DDIM loop with DAT (``off`` or
  ``fast``, the exportable mode, with the rigid start) unrolled into one graph: per person
  ``proxy``, ``prior_xyz`` ``(people, 24, 3)`` and ``prior_vis`` ``(people, 24)``, per
  hypothesis ``noise`` ``(rows, P, 3)`` -> ``points`` ``(rows, P, 3)`` metres, root-relative.
  One call does a frame; the encoder runs once per person;
- ``manifest.json``: what the export was made from and of, sealed
  (:mod:`hmdiff_ros.runtime.manifest`, which also holds the checks before an export is used).

Only the ``people`` and ``rows`` axes are dynamic. :mod:`hmdiff_ros.runtime.export_cache` keeps
one export per checkpoint in the user's cache, made on first use, so that the ONNX Runtime
backend needs no manual step.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import numbers
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import asdict, replace
from pathlib import Path
from typing import Dict, Iterator, Sequence

import torch
from torch import nn

from hmdiff_ros import defaults
from hmdiff_ros.errors import one_line
from hmdiff_ros.files import made_folder
from hmdiff_ros.model.checkpoint import DEFAULT_CHECKPOINT, load_checkpoint
from hmdiff_ros.model.dat import DATConfig
from hmdiff_ros.runtime.manifest import MANIFEST, build_manifest, file_sha256, sampler_file

log = logging.getLogger(__name__)
OPSET = 17
PEOPLE, ROWS = "people", "rows"  # the dynamic first axes: one per person, one per hypothesis
MIN_OPSET = 13  # the oldest opset the graphs are exported and tested with (the command line's lower bound)
FALLBACK_MAX_OPSET = 17  # the newest opset when torch does not say (that of torch 2.1's TorchScript exporter)


def _torch_opsets() -> "tuple[int, int, int]":
    """(oldest, newest, newest of the TorchScript exporter) opsets of the installed torch, from
    ``torch.onnx._constants``; ``FALLBACK_MAX_OPSET`` for what it does not say."""
    try:
        from torch.onnx import _constants as constants
    except ImportError:  # pragma: no cover - torch without its ONNX module
        constants = None
    oldest = getattr(constants, "ONNX_MIN_OPSET", MIN_OPSET)
    newest = getattr(constants, "ONNX_MAX_OPSET", FALLBACK_MAX_OPSET)
    torchscript = getattr(constants, "ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET", newest)
    return int(oldest), int(newest), int(torchscript)


def opset_range() -> "tuple[int, int]":
    """The opsets ``export_onnx`` accepts with the installed torch: from ``MIN_OPSET`` (or
    torch's oldest, if newer) to torch's newest (``ONNX_MAX_OPSET``)."""
    oldest, newest, _ = _torch_opsets()
    return max(MIN_OPSET, oldest), newest


def check_opset(opset) -> int:
    """``opset`` as an int, or a ``ValueError`` naming ``--opset`` and the range supported.

    Opsets newer than those of torch's TorchScript exporter (the one used, see
    :func:`export_graph`; 20 in torch 2.13, where ``ONNX_MAX_OPSET`` is 23) are exported with that
    exporter's newest operator definitions under the newer opset number (checked with this
    model and ONNX Runtime); a warning says so."""
    lo, hi = opset_range()
    if isinstance(opset, bool) or not isinstance(opset, numbers.Integral) or not lo <= opset <= hi:
        raise ValueError(f"--opset must be in {lo}..{hi} with the installed torch {torch.__version__}, got {opset!r}")
    torchscript = _torch_opsets()[2]
    if opset > torchscript:
        log.warning(
            "--opset %d is newer than the newest opset of torch's TorchScript ONNX exporter (%d): the graphs use "
            "its opset-%d operators under opset %d (ONNX Runtime runs them; check other runtimes, or use --opset %d)",
            opset,
            torchscript,
            torchscript,
            opset,
            torchscript,
        )
    return int(opset)


class UnrolledSampler(nn.Module):
    """The K-step sampler of :meth:`HMDiff.sample` (eta 0) as a module: ``proxy``, ``prior_xyz``
    and ``prior_vis`` per person (B), ``noise`` per hypothesis (B*M rows, each person's M next to
    each other); the encoder runs once per person. Returns every row's points (B*M, P, 3) metres."""

    def __init__(self, model, steps: int, dat: DATConfig) -> None:
        super().__init__()
        if dat.mode == "full":
            raise ValueError(
                "dat mode 'full' needs autograd and cannot be exported or captured in a CUDA graph; use 'fast' or 'off'"
            )
        self.model, self.steps, self.dat = model, steps, dat

    def forward(self, proxy, noise, prior_xyz, prior_vis):
        m = noise.shape[0] // proxy.shape[0]  # traced from the sizes: any M at run time
        # the inputs are checked where the graph is called (GraphModel.sample), not inside it
        out = self.model.sample(
            proxy, prior_xyz, prior_vis, steps=self.steps, dat=self.dat, hypotheses=m, noise=noise, check=False
        )
        return out.hypotheses.flatten(0, 1)


def export_graph(
    module: nn.Module,
    args,
    path: Path,
    inputs: Sequence[str],
    outputs: Sequence[str],
    opset: int,
    axes: "Dict[str, str] | None" = None,
) -> None:
    """``module(*args)`` to ONNX at ``path`` with a dynamic first axis, named :data:`PEOPLE`
    unless ``axes`` names it otherwise (:data:`ROWS`) for an input or output; a failure is one
    line."""
    kwargs = dict(
        input_names=list(inputs),
        output_names=list(outputs),
        opset_version=opset,
        dynamic_axes={n: {0: (axes or {}).get(n, PEOPLE)} for n in (*inputs, *outputs)},
        do_constant_folding=True,
    )
    params = inspect.signature(torch.onnx.export).parameters
    if "dynamo" in params:
        kwargs["dynamo"] = False  # the TorchScript exporter: same graphs on torch 2.1 .. 2.13
    if "verbose" in params:
        kwargs["verbose"] = False  # no graph printouts
    try:
        with warnings.catch_warnings(), _stdout_to_log(path.name):
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, str(path), **kwargs)
    except Exception as exc:  # whatever the exporter raises (RuntimeError, its own errors, ...): one line
        raise ValueError(
            f"ONNX export of {path.name} (opset {opset}) failed: {type(exc).__name__}: {one_line(exc)}"
        ) from exc


@contextlib.contextmanager
def _stdout_to_log(name: str) -> Iterator[None]:
    """What is written to file descriptor 1 inside the block goes to the debug log, not to
    stdout (which carries the command's JSON). Torch's TorchScript exporter prints its whole
    IR graph there from C++ when an export fails ("Torch IR graph at exception: ..."), whatever
    ``verbose`` says."""
    try:
        sys.stdout.flush()
        saved = os.dup(1)
    except (OSError, ValueError, AttributeError):  # no fd 1, or a closed or replaced sys.stdout
        yield
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 1)
        try:
            yield
        finally:
            with contextlib.suppress(OSError, ValueError, AttributeError):
                sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", errors="replace").strip()
            if text:
                log.debug("output of the ONNX exporter for %s:\n%s", name, text)


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
    out: "str | Path" = defaults.ENGINES,
    steps: Sequence[int] = (defaults.STEPS,),
    dat: str = defaults.DAT_MODE,
    opset: int = OPSET,
    force: bool = False,
) -> Dict:
    """Export and write the manifest; returns the manifest.

    ``out`` must be a new or empty folder unless ``force``: then the files this export writes
    (the ONNX graphs and the manifest) replace those of the same names, once all of them are
    written, and nothing else in the folder is touched."""
    opset = check_opset(opset)
    if dat not in defaults.EXPORT_DAT_MODES:
        raise ValueError(f"exported samplers support dat 'off' or 'fast', got {dat!r}")
    if not steps or any(isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1 for k in steps):
        raise ValueError(f"--steps must be integers >= 1, got {list(steps)}")
    out = Path(out)
    _check_out(out, force)
    ckpt = Path(checkpoint) if checkpoint is not None else DEFAULT_CHECKPOINT
    samplers = [(int(k), replace(DATConfig(), mode=dat)) for k in sorted({int(k) for k in steps})]
    manifest = write_export(ckpt, out, samplers, opset)
    log.info("exported %d ONNX files to %s", len(manifest["files"]), out)
    return manifest


def write_export(
    ckpt: Path,
    out: Path,
    samplers: Sequence["tuple[int, DATConfig]"],
    opset: int,
    keep: "Dict[str, Dict] | None" = None,
    make: "Sequence[str] | None" = None,
) -> Dict:
    """Export the graphs named in ``make`` (default: the encoder, the denoiser and one sampler
    per ``(steps, dat)`` of ``samplers``) into ``out`` and write the manifest listing them with
    ``keep`` (records of files already in ``out``, left as they are). The new files replace
    those of the same names once all are written, the manifest last, after the old one is
    removed: a half-replaced export is never taken for a whole one."""
    model, _ = load_checkpoint(ckpt)
    specs = _graph_specs(model, samplers)
    make = list(specs) if make is None else list(make)
    with made_folder(out):  # a failed export into a new folder leaves nothing behind
        tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
        try:
            files = dict(keep or {})
            for name in make:
                module, args, inputs, outputs, axes, record = specs[name]
                export_graph(module, args, tmp / name, inputs, outputs, opset, axes=axes)
                files[name] = {**record, "sha256": file_sha256(tmp / name)}
            manifest = build_manifest(model, ckpt, opset, files)
            (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
            (out / MANIFEST).unlink(missing_ok=True)
            for name in make:
                os.replace(tmp / name, out / name)
            os.replace(tmp / MANIFEST, out / MANIFEST)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _graph_specs(model, samplers: Sequence["tuple[int, DATConfig]"]) -> Dict[str, tuple]:
    """What each file of an export is made from: name -> ``(module, example inputs, input
    names, output names, axis names, manifest record)``."""
    enc = model.cfg.encoder
    g = torch.Generator().manual_seed(0)
    proxy = torch.rand(2, enc.in_channels, enc.input_size, enc.input_size, generator=g)
    rows = torch.randn(6, model.num_points, 3, generator=g)  # the samplers' noise: 3 hypotheses per person
    prior, vis = torch.randn(2, 24, 3, generator=g) * 0.3, torch.ones(2, 24)
    with torch.no_grad():
        image = model.encoder(proxy)  # the encoder's output: image tokens
        tokens = model.encode(proxy, prior, vis)  # what the denoiser reads: image tokens (+ prior tokens)
    proxy_shape = [PEOPLE, enc.in_channels, enc.input_size, enc.input_size]
    specs: Dict[str, tuple] = {
        "encoder.onnx": (
            model.encoder,
            (proxy,),
            ["proxy"],
            ["image_tokens"],
            None,
            {"inputs": {"proxy": proxy_shape}, "outputs": {"image_tokens": [PEOPLE, image.shape[1], image.shape[2]]}},
        ),
        "denoiser.onnx": (
            model.denoiser,
            (rows, torch.tensor([999, 250, 250, 999, 999, 250]), tokens),  # rows: 3 per person, as the noise
            ["sample", "timestep", "image_tokens"],
            ["output"],
            {"sample": ROWS, "timestep": ROWS, "output": ROWS},
            {
                "inputs": {
                    "sample": [ROWS, model.num_points, 3],
                    "timestep": [ROWS],
                    "image_tokens": [PEOPLE, tokens.shape[1], tokens.shape[2]],
                },
                "outputs": {"output": [ROWS, model.num_points, 3]},
            },
        ),
    }
    for k, dat_cfg in samplers:
        specs[sampler_file(k, dat_cfg.mode)] = (
            UnrolledSampler(model, k, dat_cfg).eval(),
            (proxy, rows, prior, vis),
            ["proxy", "noise", "prior_xyz", "prior_vis"],
            ["points"],
            {"noise": ROWS, "points": ROWS},
            {
                "steps": k,
                "dat": asdict(dat_cfg),
                "inputs": {
                    "proxy": proxy_shape,
                    "noise": [ROWS, model.num_points, 3],
                    "prior_xyz": [PEOPLE, 24, 3],
                    "prior_vis": [PEOPLE, 24],
                },
                "outputs": {"points": [ROWS, model.num_points, 3]},
            },
        )
    return specs
