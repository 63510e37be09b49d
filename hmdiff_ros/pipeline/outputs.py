"""Where ``hmdiff run`` writes: output names that never collide, and a folder that never
clobbers a file it did not write.

- :func:`output_stems` names each input's results: its file stem when that is unique among
  the inputs; else the stem with its extension (``a.jpg`` -> ``a_jpg``); else its path
  relative to the colliding inputs' common folder (``cam1/000.jpg`` -> ``cam1_000``).
- :class:`OutputFolder` records the files each run wrote, per input, in a manifest
  (``.hmdiff_outputs.json``). A later run replaces only those; it refuses to overwrite any
  other existing file (unless ``force``), removes the files it wrote earlier for the same
  input that this run no longer writes (a person fewer: no stale ``_person1.obj``), and
  never reads them back as inputs.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Dict, List, Sequence, Set

log = logging.getLogger(__name__)
MANIFEST = ".hmdiff_outputs.json"


def _key(source: str) -> str:
    """The manifest's name of an input: its absolute path, or a camera index as given."""
    return source if source.isdigit() else str(Path(source).resolve())


def _stem(src: str, group: Sequence[str] = ()) -> str:
    return f"camera{src}" if src.isdigit() else Path(src).stem


def _with_ext(src: str, group: Sequence[str] = ()) -> str:
    return _stem(src) if src.isdigit() else f"{Path(src).stem}_{Path(src).suffix.lstrip('.')}".rstrip("_")


def _relative(src: str, group: Sequence[str]) -> str:
    files = [Path(_key(s)) for s in group if not s.isdigit()]
    if src.isdigit() or len(files) < 2:
        return _with_ext(src)
    base = os.path.commonpath([str(f.parent) for f in files])
    return "_".join([*Path(_key(src)).parent.relative_to(base).parts, _with_ext(src)])


def _clashes(names: Dict[str, str]) -> List[List[str]]:
    groups: Dict[str, List[str]] = {}
    for src, name in names.items():
        groups.setdefault(name, []).append(src)
    return [g for g in groups.values() if len(g) > 1]


def output_stems(sources: Sequence[str]) -> Dict[str, str]:
    """A unique, file-name-safe stem per distinct input (see the module docstring)."""
    names = {src: _stem(src) for src in dict.fromkeys(sources)}
    for rename in (_with_ext, _relative):
        for group in _clashes(names):
            for src in group:
                names[src] = rename(src, group)
    for group in _clashes(names):  # odd names can still meet: number the later ones
        for i, src in enumerate(group[1:], start=2):
            while f"{names[src]}_{i}" in names.values():
                i += 1
            names[src] = f"{names[src]}_{i}"
    return names


class OutputFolder:
    """The ``--out`` folder of a run (created if missing; an existing file there is refused)."""

    def __init__(self, path: "str | Path", force: bool = False) -> None:
        self.path, self.force = Path(path), force
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"--out '{self.path}' is a file; expected a folder (existing or new)")
        self.path.mkdir(parents=True, exist_ok=True)
        self.manifest: Dict[str, List[str]] = {}
        file = self.path / MANIFEST
        if file.is_file():
            try:
                data = json.loads(file.read_text())
                self.manifest = {str(k): [str(n) for n in v] for k, v in data["outputs"].items()}
            except (ValueError, KeyError, TypeError, AttributeError):
                log.warning("%s is not readable: files from earlier runs count as the user's own", file)
        self.written: Set[str] = set()  # names written by this run

    def owned(self) -> Set[Path]:
        """Absolute paths of every file a run wrote here (never inputs)."""
        return {(self.path / n).resolve() for names in self.manifest.values() for n in names} | {
            (self.path / MANIFEST).resolve()
        }

    def claim(self, name: str) -> Path:
        """The path to write ``name`` to; a ``ValueError`` if that would overwrite a file no run
        wrote (unless ``force``)."""
        path = self.path / name
        ours = any(name in names for names in self.manifest.values()) or name in self.written
        if path.exists() and not ours and not self.force:
            raise ValueError(
                f"refusing to overwrite '{path}', which hmdiff did not write; use --force or another --out"
            )
        return path

    def commit(self, source: str, names: Sequence[str]) -> None:
        """Record that ``names`` are ``source``'s outputs now; remove its older ones not rewritten."""
        key = _key(source)
        self.written.update(names)
        for old in self.manifest.get(key, []):
            if old not in names and old not in self.written:
                (self.path / old).unlink(missing_ok=True)
        self.manifest[key] = sorted(set(names))
        tmp = self.path / (MANIFEST + ".tmp")
        tmp.write_text(json.dumps({"outputs": self.manifest}, indent=1, sort_keys=True) + "\n")
        tmp.replace(self.path / MANIFEST)
