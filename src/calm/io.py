"""Writing files so that nothing is lost, and reading calm's JSON files with errors that name them.

`atomic_write` writes to a temporary file beside the target and renames it over the target, so a
process killed at any moment leaves the old file or the new one, never half a file. Checkpoints,
resume points, indexes and result files all go through it.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[str], Any]) -> Path:
    """Calls write(tmp_path) then renames over `path`: a killed process never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would hide checkpoints from collaborators
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_text_atomic(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, data: Any, indent: int | None = None,
                      default: Callable | None = None) -> Path:
    """`data` as JSON at `path`, atomically."""
    return write_text_atomic(path, json.dumps(data, indent=indent, default=default))


def read_json(path: str | Path, what: str = "file") -> Any:
    """The JSON at `path`; a missing or unreadable file is a ValueError naming it and `what` it
    should have been (the command line prints it as one line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} {path} is not valid JSON: {exc}") from None
