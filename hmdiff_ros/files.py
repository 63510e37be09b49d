"""Writing files without leaving debris: the folders made for a job are known, and removed
again when the job fails and leaves them empty; a path whose nearest existing parent is a
file is found before any work."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator, List, Sequence


def existing_ancestor(path: "str | Path") -> Path:
    """``path`` itself if it exists, else its nearest parent that does."""
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def missing_folders(path: "str | Path") -> List[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first: what
    ``mkdir(parents=True)`` would make."""
    path, missing = Path(path), []
    while not path.exists() and path != path.parent:
        missing.append(path)
        path = path.parent
    return missing


def remove_empty(folders: Sequence[Path]) -> None:
    """Remove each of ``folders`` (deepest first) that exists and is empty."""
    for folder in folders:
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()


@contextlib.contextmanager
def made_folder(path: "str | Path") -> Iterator[Path]:
    """``path`` as a folder (made with its parents if missing) within the block; on leaving it
    (by an error too) every folder the block made is removed again if it is empty."""
    path = Path(path)
    made = missing_folders(path)
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        remove_empty(made)


def write_npz(path: "str | Path", arrays) -> None:
    """Write the ``.npz`` ``path`` (compressed) whole or not at all: a temporary file beside it,
    then a rename."""
    import os

    import numpy as np

    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
    try:
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
