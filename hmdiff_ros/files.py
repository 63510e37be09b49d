"""Writing files without leaving debris: a folder made for a job is removed again, with the
parents made for it, when the job fails and leaves it empty."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def made_folder(path: "str | Path") -> Iterator[Path]:
    """``path`` as a folder (made with its parents if missing) within the block; on leaving it
    (by an error too) every folder the block made is removed again if it is empty."""
    path = Path(path)
    made, folder = [], path  # deepest first
    while not folder.exists() and folder != folder.parent:
        made.append(folder)
        folder = folder.parent
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        for folder in made:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
