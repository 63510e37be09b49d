"""The frame pipeline's configuration: :func:`pipeline_config` turns options (the command
line's, the node's parameters) into a checked :class:`PipelineConfig`, the one place both
build it (then :func:`hmdiff_ros.pipeline.pipeline.build_pipeline` loads the model and prior).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Dict

from hmdiff_ros import defaults
from hmdiff_ros.model.dat import DATConfig


@dataclass(frozen=True)
class PipelineConfig:
    steps: int = defaults.STEPS  # DDIM steps
    dat: DATConfig = field(default_factory=DATConfig)
    hypotheses: int = defaults.HYPOTHESES  # samples per person: their spread is the per-joint uncertainty
    hfov_deg: float = defaults.HFOV_DEG  # field of view used when no intrinsics are given
    full_mesh: bool = True  # up-sample to the full 13,718-vertex mesh
    seed: int = 0  # sampling noise seed (results are deterministic per frame)
    backend: str = defaults.BACKEND  # model backend: torch, onnxruntime, tensorrt or auto (hmdiff_ros.runtime.backends)
    engines: str = defaults.ENGINES  # folder of the ONNX export / TensorRT engines

    def __post_init__(self) -> None:
        why = config_error(self)
        if why:
            raise ValueError(why)


def config_error(cfg: PipelineConfig, names: Dict[str, str] | None = None) -> str | None:
    """Why ``cfg`` cannot run, or None: the one check of the pipeline's options, whose limits
    live in :mod:`hmdiff_ros.defaults`. ``names`` maps field names to the caller's option
    names (the command line's ``--steps``) for the message."""
    name = lambda field: (names or {}).get(field, field)  # noqa: E731
    why = (
        defaults.range_error(name("steps"), cfg.steps, defaults.STEPS_RANGE, integer=True)
        or defaults.range_error(name("hypotheses"), cfg.hypotheses, defaults.HYPOTHESES_RANGE, integer=True)
        or defaults.range_error(name("hfov_deg"), cfg.hfov_deg, defaults.HFOV_RANGE, exclusive=True)
    )
    if why:
        return why
    if cfg.backend not in defaults.BACKENDS:
        return f"{name('backend')} must be one of {', '.join(defaults.BACKENDS)}, got {cfg.backend!r}"
    if cfg.dat.mode not in defaults.DAT_MODES:
        return f"{name('dat')} must be one of {', '.join(defaults.DAT_MODES)}, got {cfg.dat.mode!r}"
    if cfg.dat.mode == "full" and cfg.backend not in ("torch", "auto"):  # auto then loads torch (build_pipeline)
        return (
            f"{name('dat')} full needs {name('backend')} torch or auto (the exported graphs run fast DAT), "
            f"got {cfg.backend!r}"
        )
    return None


def pipeline_config(
    *,
    steps: int = defaults.STEPS,
    dat_mode: str = defaults.DAT_MODE,
    dat_tau: float | None = None,
    dat_lambda: float | None = None,
    hypotheses: int = defaults.HYPOTHESES,
    hfov_deg: float = defaults.HFOV_DEG,
    full_mesh: bool = True,
    backend: str = defaults.BACKEND,
    engines: str = defaults.ENGINES,
    names: Dict[str, str] | None = None,
) -> PipelineConfig:
    """A checked :class:`PipelineConfig` from plain options; a ``ValueError`` that names the
    option (through ``names``, e.g. ``{"steps": "--steps"}``) when one cannot run.
    ``dat_tau``/``dat_lambda``: None keeps :class:`DATConfig`'s defaults."""
    dat = {"tau": dat_tau, "scale": dat_lambda}
    values = dict(
        steps=steps,
        dat=SimpleNamespace(mode=dat_mode),
        hypotheses=hypotheses,
        hfov_deg=hfov_deg,
        full_mesh=full_mesh,
        backend=backend,
        engines=engines,
    )
    why = config_error(SimpleNamespace(**values), names)
    if why:
        raise ValueError(why)
    values["dat"] = DATConfig(mode=dat_mode, **{k: v for k, v in dat.items() if v is not None})
    return PipelineConfig(**values)
