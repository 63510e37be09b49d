"""The manifest of an ONNX export (``manifest.json``) and the checks that an export may be used.

The manifest records the export format, opset, the exporting torch version, input/output names
and shapes, the checkpoint's hash, its model config, the hash of the code that builds the
graphs (:data:`GRAPH_CODE`), the schedule and DAT settings of every sampler, each file's hash,
and a seal (:data:`SEAL`, the hash of all of that): a manifest edited by hand is refused, never
trusted.

An export is used only for what it was made from (:func:`check_export`): the same weights, the
same model config (scheduler included), the same graph code, every file it lists present and
unchanged. A mismatch is refused with the reason; the backends then fall back and say why.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Dict

import torch

from hmdiff_ros.errors import one_line
from hmdiff_ros.model.checkpoint import CONFIG, WEIGHTS

MANIFEST = "manifest.json"
# 4: the manifest sealed, with the model config and the graph code's hash (both checked);
# 3: per-person and per-hypothesis axes named apart (people, rows); 2: one name (batch) for both,
# which TensorRT reads as one size; 1: the samplers took every input per row
FORMAT = 4
SEAL = "manifest_sha256"  # the manifest's hash of its own other fields


def file_sha256(path: "str | Path") -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


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


def build_manifest(model, ckpt: Path, opset: int, files: Dict[str, Dict]) -> Dict:
    """The sealed manifest of an export of ``model`` (loaded from ``ckpt``) at ``opset`` whose
    files are ``files`` (name -> record with its SHA-256)."""
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
