"""Where ``hmdiff run`` writes: output names that never collide, and a folder that never
clobbers a file it did not write.

- :func:`output_stems` names each input's results: its file stem when that is unique among
  the inputs; else the stem with its extension (``a.jpg`` -> ``a_jpg``); else its path
  relative to the colliding inputs' common folder (``cam1/000.jpg`` -> ``cam1_000``).
- :class:`OutputFolder` records the files each run wrote, per input, in a manifest
  (``.hmdiff_outputs.json``). A later run replaces only those; it refuses to overwrite any
  other existing file (unless ``force``), removes the files it wrote earlier for the same
  input that this run no longer writes (a person fewer: no stale ``_person1.obj``), and
  never reads them back as inputs. Runs into one folder at once each record their own
  outputs: the manifest is read again and merged under a lock on the folder.
- :meth:`OutputFolder.staged` writes files under temporary names and puts them in place only
  when all are complete: an interrupted or failed re-run never destroys an earlier result.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Set

from hmdiff_ros.files import existing_ancestor, missing_folders, remove_empty

log = logging.getLogger(__name__)
MANIFEST = ".hmdiff_outputs.json"
# the longest stem, in bytes: with "_person12.obj" and the like it stays under the usual
# 255-byte limit of a file name
MAX_STEM_BYTES = 200


def is_camera(source: str) -> bool:
    """A camera index (``0``, ``1``, ...) rather than a file: digits that name no existing path."""
    return source.isdigit() and not Path(source).exists()


def _key(source: str) -> str:
    """The manifest's name of an input: its absolute path, or a camera index as given."""
    return source if is_camera(source) else str(Path(source).resolve())


def _stem(src: str, group: Sequence[str] = ()) -> str:
    return f"camera{src}" if is_camera(src) else Path(src).stem


def _with_ext(src: str, group: Sequence[str] = ()) -> str:
    ext = "" if is_camera(src) else Path(src).suffix.lstrip(".")
    return f"{_stem(src)}_{ext}" if ext else _stem(src)


def _relative(src: str, group: Sequence[str]) -> str:
    files = [Path(_key(s)) for s in group if not is_camera(s)]
    if is_camera(src) or len(files) < 2:
        return _with_ext(src)
    base = os.path.commonpath([str(f.parent) for f in files])
    return "_".join([*Path(_key(src)).parent.relative_to(base).parts, _with_ext(src)])


def _clashes(names: Dict[str, str]) -> List[List[str]]:
    groups: Dict[str, List[str]] = {}
    for src, name in names.items():
        groups.setdefault(name, []).append(src)
    return [g for g in groups.values() if len(g) > 1]


def _safe(stem: str) -> str:
    """``stem`` as a file name OpenCV can write: characters that are not valid UTF-8 (bytes of
    another encoding in a file name) become ``_``, and a long stem is cut, with a hash of the
    whole one kept so that cut stems stay apart."""
    text = stem.encode("utf-8", "surrogateescape").decode("utf-8", "replace").replace("\ufffd", "_")
    if len(text.encode("utf-8")) > MAX_STEM_BYTES:
        digest = hashlib.sha1(stem.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        text = text.encode("utf-8")[: MAX_STEM_BYTES - 9].decode("utf-8", "ignore") + "_" + digest
    return text


def output_stems(sources: Sequence[str]) -> Dict[str, str]:
    """A unique, file-name-safe stem per distinct input (see the module docstring)."""
    names = {src: _stem(src) for src in dict.fromkeys(sources)}
    for rename in (_with_ext, _relative):
        for group in _clashes(names):
            for src in group:
                names[src] = rename(src, group)
    names = {src: _safe(name) for src, name in names.items()}
    for group in _clashes(names):  # odd names can still meet: number the later ones
        for i, src in enumerate(group[1:], start=2):
            while f"{names[src]}_{i}" in names.values():
                i += 1
            names[src] = f"{names[src]}_{i}"
    return names


class OutputFolder:
    """The ``--out`` folder of a run: made when the first output is written, and removed again
    by :meth:`close` if the run made it and wrote nothing into it."""

    def __init__(self, path: "str | Path", force: bool = False, inputs: Sequence[str] = ()) -> None:
        if not str(path).strip():
            raise ValueError("--out is empty; expected a folder (existing or new)")
        self.path, self.force = Path(path), force
        why = _folder_error(self.path)
        if why:
            raise ValueError(f"--out '{self.path}' {why}")
        self.manifest: Dict[str, List[str]] = self._read(warn=True)
        self.mine: Dict[str, List[str]] = {}  # this run's entries (merged into what others wrote)
        self.written: Set[str] = set()  # names written by this run
        self.made: List[Path] = []  # folders this run made, deepest first
        self.set_inputs(inputs)

    def _read(self, warn: bool = False) -> Dict[str, List[str]]:
        """The manifest on disk ({} when there is none or it is unreadable)."""
        file = self.path / MANIFEST
        if not file.is_file():
            return {}
        try:
            data = json.loads(file.read_text())
            return {str(k): _names(v) for k, v in data["outputs"].items()}
        except (ValueError, KeyError, TypeError, AttributeError, OSError):
            if warn:
                log.warning("%s is not readable: files from earlier runs count as the user's own", file)
            return {}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """An exclusive lock on the folder while the block runs (where ``fcntl`` exists), so that
        runs into one folder at once read and write the manifest one after the other."""
        try:
            import fcntl

            fd = os.open(self.path, os.O_RDONLY)
        except (ImportError, OSError):  # pragma: no cover - Windows, or a folder that cannot be opened
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def set_inputs(self, inputs: Sequence[str]) -> None:
        """This run's inputs: never overwritten, not even with ``force``."""
        self.inputs = {Path(os.path.realpath(s)) for s in inputs if not is_camera(s)}

    def owned(self) -> Set[Path]:
        """Absolute paths of every file a run wrote here (never inputs)."""
        return {(self.path / n).resolve() for names in self.manifest.values() for n in names} | {
            (self.path / MANIFEST).resolve()
        }

    def claim(self, name: str) -> Path:
        """The path to write ``name`` to (the folder is made now); a ``ValueError`` if that would
        overwrite one of this run's inputs, or a file no run wrote (unless ``force``), or write
        through a symbolic link (``force`` replaces the link itself)."""
        path = self.path / name
        if Path(os.path.realpath(path)) in self.inputs:
            raise ValueError(f"refusing to overwrite '{path}', an input of this run; choose another --out")
        ours = not path.is_symlink() and (
            any(name in names for names in self.manifest.values()) or name in self.written
        )
        if (path.exists() or path.is_symlink()) and not ours and not path.is_symlink():
            # another run into this folder may have written it since this one started
            self.manifest = {**self._read(), **self.mine}
            ours = any(name in names for names in self.manifest.values())
        if (path.exists() or path.is_symlink()) and not ours:
            if not self.force:
                what = "a symbolic link" if path.is_symlink() else "which hmdiff did not write"
                raise ValueError(f"refusing to overwrite '{path}', {what}; use --force or another --out")
            if path.is_symlink():
                path.unlink()  # the link is replaced, never what it points to
        if not self.path.is_dir():
            self.made += missing_folders(self.path)
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ValueError(f"--out '{self.path}': cannot make the folder ({exc.strerror or exc})") from None
        return path

    def previous(self, source: str) -> List[str]:
        """The files recorded for ``source`` (by an earlier run, or this one)."""
        return list(self.manifest.get(_key(source), []))

    def commit(self, source: str, names: Sequence[str]) -> None:
        """Record that ``names`` are ``source``'s outputs now; remove its older ones not rewritten.
        The manifest is read again and merged under the folder's lock: what other runs recorded
        meanwhile stays."""
        key = _key(source)
        self.written.update(names)
        with self._locked():
            self.manifest = {**self._read(), **self.mine}
            for old in self.manifest.get(key, []):
                if old not in names and old not in self.written:
                    (self.path / old).unlink(missing_ok=True)
            self.manifest[key] = self.mine[key] = sorted(set(names))
            tmp = self.path / f"{MANIFEST}.{os.getpid()}.tmp"
            tmp.write_text(json.dumps({"outputs": self.manifest}, indent=1, sort_keys=True) + "\n")
            tmp.replace(self.path / MANIFEST)

    @contextlib.contextmanager
    def staged(self, paths: Sequence[Path]) -> Iterator[List[Path]]:
        """Temporary paths beside ``paths`` (claimed already) to write within the block; when it
        ends without an error they replace ``paths``, else they are removed and ``paths`` (an
        earlier run's result) stay as they were. The temporary names keep the suffix (OpenCV
        picks the format from it) and are hidden (``.name.<pid>.part.ext``)."""
        temps = [p.with_name(f".{p.stem}.{os.getpid()}.part{p.suffix}") for p in paths]
        try:
            yield temps
            for tmp, path in zip(temps, paths, strict=True):
                os.replace(tmp, path)
        finally:
            for tmp in temps:
                tmp.unlink(missing_ok=True)

    def close(self) -> None:
        """Remove the folders this run made if they hold nothing."""
        remove_empty(self.made)


def _names(value) -> List[str]:
    """The file names a manifest lists for an input: plain names inside the folder only (a
    hand-edited manifest must never make a run delete or overwrite anything outside it)."""
    if not isinstance(value, list):
        raise TypeError(f"expected a list of file names, got {type(value).__name__}")
    for name in value:
        if not isinstance(name, str) or name in ("", ".", "..", MANIFEST) or Path(name).name != name:
            raise ValueError(f"{name!r} is not a file name inside the folder")
    return list(value)


def _folder_error(path: Path) -> str | None:
    """Why ``path`` cannot be (or become) a folder to write into, or None."""
    try:
        os.fsencode(str(path.resolve())).decode("utf-8")
    except UnicodeDecodeError:
        return "is not valid UTF-8 (OpenCV cannot write there); choose another name"
    if path.is_symlink() and not path.exists():
        return "is a symbolic link that leads nowhere; expected a folder"
    if path.exists():
        return None if path.is_dir() else "is a file; expected a folder (existing or new)"
    parent = existing_ancestor(path.parent)
    return None if parent.is_dir() else f"cannot be made: '{parent}' is a file"
