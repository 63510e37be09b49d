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
- ``manifest.json``: the export format, opset, the exporting torch version, input/output names
  and shapes, the checkpoint's hash, its model config, the hash of the code that builds the
  graphs, the schedule and DAT settings of every sampler, each file's hash, and a seal (the
  hash of all of that): a manifest edited by hand is refused, never trusted.

An export is used only for what it was made from (:func:`check_export`): the same weights, the
same model config (scheduler included), the same graph code, every file it lists present and
unchanged. A mismatch is refused with the reason; the backends then fall back and say why.

Only the ``people`` and ``rows`` axes are dynamic. :func:`cached_export` keeps one export per checkpoint
in the user's cache, made on first use, so that the ONNX Runtime backend needs no manual step.
"""

from __future__ import annotations

import contextlib
import hashlib
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
from hmdiff_ros.model.checkpoint import CONFIG, DEFAULT_CHECKPOINT, WEIGHTS, load_checkpoint
from hmdiff_ros.model.dat import DATConfig

log = logging.getLogger(__name__)
OPSET = 17
MANIFEST = "manifest.json"
# 4: the manifest sealed, with the model config and the graph code's hash (both checked);
# 3: per-person and per-hypothesis axes named apart (people, rows); 2: one name (batch) for both,
# which TensorRT reads as one size; 1: the samplers took every input per row
FORMAT = 4
SEAL = "manifest_sha256"  # the manifest's hash of its own other fields
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


def file_sha256(path: "str | Path") -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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
    manifest = _write_export(ckpt, out, samplers, opset)
    log.info("exported %d ONNX files to %s", len(manifest["files"]), out)
    return manifest


def _write_export(
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
            manifest = _manifest(model, ckpt, opset, files)
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


def _manifest(model, ckpt: Path, opset: int, files: Dict[str, Dict]) -> Dict:
    manifest = {
        "format": FORMAT,
        "opset": opset,
        "torch": torch.__version__,
        "checkpoint": str(ckpt),
        "checkpoint_sha256": file_sha256(ckpt / WEIGHTS),
        "config_sha256": file_sha256(ckpt / CONFIG),
        "model": model.cfg.to_dict(),
        "graph_code_sha256": graph_code_sha256(),
        "num_points": model.num_points,
        "num_coarse": model.num_coarse,
        "files": files,
    }
    manifest[SEAL] = manifest_seal(manifest)
    return manifest


def manifest_seal(manifest: Dict) -> str:
    """The SHA-256 of every field of ``manifest`` but the seal itself (keys sorted): any edit
    of a field changes it."""
    body = {k: v for k, v in manifest.items() if k != SEAL}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def sampler_file(steps: int, dat: str) -> str:
    return f"sampler_k{int(steps)}_{dat}.onnx"


def read_manifest(folder: "str | Path") -> Dict:
    """The export manifest of ``folder``, read but not yet trusted (:func:`trusted_manifest`);
    one-line errors name the file at fault: ``FileNotFoundError`` when there is no manifest,
    ``ValueError`` when it is truncated, corrupt, of another format or lists no encoder or
    denoiser."""
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
            f"export manifest '{path}' is truncated or corrupt ({type(exc).__name__}: {one_line(exc)}); "
            f"expected the JSON that 'hmdiff export' writes: run 'hmdiff export --out {folder} --force'"
        ) from None
    if manifest.get("format") != FORMAT:
        raise ValueError(
            f"the ONNX export in '{folder}' has format {manifest.get('format')!r}, this version reads format "
            f"{FORMAT} (its samplers' inputs changed); run 'hmdiff export --out {folder} --force'"
        )
    for name in ("encoder.onnx", "denoiser.onnx"):
        if name not in files:
            raise ValueError(f"export manifest '{path}' lists no {name}; run 'hmdiff export --out {folder} --force'")
    return manifest


def check_export(folder: "str | Path", checkpoint: "str | Path") -> Dict:
    """The manifest of the export in ``folder`` after checking that it is whole and was made
    for ``checkpoint`` by this code (:func:`trusted_manifest`), and that every file it lists
    is there with the SHA-256 recorded at export (:func:`damaged_files`). Each refusal is one
    line with the reason: ``FileNotFoundError`` for a missing file, else ``ValueError``."""
    folder, checkpoint = Path(folder), Path(checkpoint)
    manifest = trusted_manifest(folder, checkpoint)
    for name, why in damaged_files(folder, manifest).items():
        error = FileNotFoundError if why == "missing" else ValueError
        raise error(
            f"ONNX file '{folder / name}' is {why}: the manifest lists it with its SHA-256; "
            f"run 'hmdiff export --checkpoint {checkpoint} --out {folder} --force'"
        )
    return manifest


def trusted_manifest(folder: Path, checkpoint: Path) -> Dict:
    """The manifest of ``folder`` (:func:`read_manifest`) if it is sealed as written and
    describes what running ``checkpoint`` with this code gives: the same weights, the same
    model config (``config.json``'s ``model``: the scheduler, the topology, ...; its training
    notes do not count) and the same graph code (:data:`GRAPH_CODE`). Else a one-line
    ``ValueError`` with the reason."""
    manifest = read_manifest(folder)
    again = f"run 'hmdiff export --checkpoint {checkpoint} --out {folder} --force'"
    if manifest.get(SEAL) != manifest_seal(manifest):
        raise ValueError(
            f"export manifest '{folder / MANIFEST}' was edited after export (its {SEAL} does not match its "
            f"fields), so it cannot say what its graphs compute; {again}"
        )
    if manifest.get("checkpoint_sha256") != file_sha256(checkpoint / WEIGHTS):
        raise ValueError(f"the ONNX export in '{folder}' was made from another checkpoint than '{checkpoint}'; {again}")
    differ = _config_differences(manifest.get("model"), model_config(checkpoint))
    if differ:
        raise ValueError(
            f"the ONNX export in '{folder}' was made for another model config than '{checkpoint / CONFIG}' "
            f"(same weights; {differ}): its graphs would compute something else; {again}"
        )
    if manifest.get("graph_code_sha256") != graph_code_sha256():
        raise ValueError(
            f"the ONNX export in '{folder}' was made by another version of the code that builds the graphs "
            f"(hmdiff_ros {', '.join(GRAPH_CODE)}); {again}"
        )
    return manifest


def damaged_files(folder: Path, manifest: Dict) -> Dict[str, str]:
    """Each file the manifest lists that is ``missing`` or ``truncated or corrupt`` (its
    SHA-256 differs: truncated, corrupt or replaced), with those words."""
    bad = {}
    for name, info in manifest["files"].items():
        path = folder / name
        if not path.is_file():
            bad[name] = "missing"
        elif info.get("sha256") != file_sha256(path):
            bad[name] = "truncated or corrupt (changed since export)"
    return bad


def model_config(checkpoint: Path) -> Dict:
    """The model config of ``checkpoint`` as :meth:`HMDiffConfig.to_dict` writes it (what an
    export records), without loading the weights; one-line errors name the file."""
    from hmdiff_ros.model.hmdiff import HMDiffConfig

    path = Path(checkpoint) / CONFIG
    try:
        return HMDiffConfig.from_dict(json.loads(path.read_text())["model"]).to_dict()
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint config '{path}' not found") from None
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"checkpoint config '{path}' is not a model config ({type(exc).__name__}: {one_line(exc)})"
        ) from None


def _config_differences(exported, current: Dict, limit: int = 3) -> str:
    """The settings in which two model configs differ, as ``'a.b: x in the export, y in the
    checkpoint'`` (at most ``limit``); empty when they agree."""
    out: list = []

    def walk(a, b, path):
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k), b.get(k), f"{path}.{k}" if path else k)
        elif a != b:
            out.append(f"{path or 'model'}: {a!r} in the export, {b!r} in the checkpoint")

    walk(exported, current, "")
    return "; ".join(out[:limit]) + (f"; and {len(out) - limit} more" if len(out) > limit else "")


PACKAGE = Path(__file__).resolve().parents[1]
# the modules whose code becomes the exported graphs (recorded in every export, part of the cached export's key)
GRAPH_CODE = (
    "model/hmdiff.py",
    "model/encoder.py",
    "model/denoiser.py",
    "model/dat.py",
    "model/scheduler.py",
    "runtime/export.py",
)


def graph_code_sha256() -> str:
    """One hash of the sources of :data:`GRAPH_CODE`."""
    return hashlib.sha256("\n".join(file_sha256(PACKAGE / name) for name in GRAPH_CODE).encode()).hexdigest()


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
    format and the source of the code that builds the graphs (:data:`GRAPH_CODE`: a new
    version of the package makes its own export). Before use it is checked as every export
    is (:func:`check_export`): one whose manifest is not to be trusted is made again; a file
    that is missing or changed, or a sampler asked for and not there, is made alone, beside
    the files that are sound. A cache that cannot be written (a read-only image) is used if
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
        _write_export(ckpt, folder, samplers, OPSET, keep=keep, make=make)
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
