"""The on-disk search index: a JSON manifest plus one `.npy` file per per-video array.

    INDEX/index.json        format, the checkpoint that built it (sha256), the video folder,
                            per video: path (relative), size, mtime; files that failed, and why;
                            the confidence calibrator fitted by `calm index --calibrate`
    INDEX/report.json       what the last `calm index` run did (new, kept, removed, failed)
    INDEX/data-<gen>/*.npy  row i of every array belongs to videos[i] of the manifest
    INDEX/data-<gen>/shortlist.ivf  a faiss IVF over the frame-mean vectors (large indexes)
    INDEX/thumbs/<id>.jpg   one thumbnail per video

Arrays are opened memory-mapped, so a query touches only the rows it scores and an index far
larger than memory still opens instantly. A rebuild writes a new `data-<gen>` folder and then
replaces the manifest atomically: a killed run leaves the previous index intact.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from calm.data.errors import DataError
from calm.io import write_json_atomic

FORMAT = "calm-search-index-v1"
MANIFEST = "index.json"
REPORT = "report.json"
THUMBS = "thumbs"
IVF = "shortlist.ivf"  # in data-<gen>/: the faiss IVF shortlist of a large index


class SearchIndexError(DataError):
    """An index folder that is missing, damaged, or that another model built."""


def thumbnail_name(rel_path: str) -> str:
    """A stable file name per video path: a changed file overwrites its own thumbnail."""
    return hashlib.sha1(rel_path.encode("utf-8")).hexdigest()[:20] + ".jpg"


@dataclass
class VideoEntry:
    path: str  # relative to the index's video folder, POSIX separators
    size: int
    mtime_ns: int

    @property
    def key(self) -> tuple[int, int]:
        return (self.size, self.mtime_ns)


@dataclass
class Manifest:
    root: str  # absolute path of the indexed folder
    checkpoint: dict  # sha256, path, fusion, num_frames, embed_dim, anchor labels, vae
    generation: int = 0
    videos: list[VideoEntry] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)  # path, size, mtime_ns, reason
    state_keys: list[str] = field(default_factory=list)
    calibration: dict | None = None  # a fitted `calibration.Calibrator`, None: uncalibrated
    duplicates: dict | None = None  # the measured near-duplicate threshold (`duplicates.py`)

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "root": self.root,
            "checkpoint": self.checkpoint,
            "generation": self.generation,
            "state_keys": self.state_keys,
            "videos": [[v.path, v.size, v.mtime_ns] for v in self.videos],
            "failures": self.failures,
            "calibration": self.calibration,
            "duplicates": self.duplicates,
        }

    @classmethod
    def from_json(cls, data: dict, source: Path) -> Manifest:
        if data.get("format") != FORMAT:
            raise SearchIndexError(f"{source}: not a calm search index (format {data.get('format')!r})")
        try:
            return cls(
                root=data["root"],
                checkpoint=data["checkpoint"],
                generation=int(data["generation"]),
                videos=[VideoEntry(p, int(s), int(m)) for p, s, m in data["videos"]],
                failures=list(data["failures"]),
                state_keys=list(data["state_keys"]),
                calibration=data.get("calibration"),
                duplicates=data.get("duplicates"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise SearchIndexError(f"{source}: damaged index manifest ({exc!r})") from None


def read_manifest(index_dir: Path) -> Manifest | None:
    """The manifest of `index_dir`, or None when the folder holds no index yet."""
    path = Path(index_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise SearchIndexError(f"{path}: cannot read the index manifest ({exc})") from None
    return Manifest.from_json(data, path)


def data_dir(index_dir: Path, generation: int) -> Path:
    return Path(index_dir) / f"data-{generation}"


def commit(index_dir: Path, manifest: Manifest, report: dict) -> None:
    """Points the index at `manifest.generation`, then removes older data folders."""
    index_dir = Path(index_dir)
    write_json_atomic(index_dir / MANIFEST, manifest.to_json())
    write_json_atomic(index_dir / REPORT, report)
    remove_stale(index_dir, manifest.generation)


def remove_stale(index_dir: Path, keep: int | None) -> None:
    """Deletes data folders other than generation `keep` (leftovers of killed runs included)."""
    for d in Path(index_dir).glob("data-*"):
        if d.is_dir() and d.name != f"data-{keep}":
            shutil.rmtree(d, ignore_errors=True)


_NPY_MAGIC = b"\x93NUMPY\x01\x00"
_MAX_ROWS = 10**15  # the header is sized for this many rows, then rewritten in place


def _npy_header(dtype: np.dtype, shape: tuple[int, ...], length: int | None = None) -> bytes:
    """A version 1.0 `.npy` header for `shape`, padded with spaces to `length` bytes (or to the
    next multiple of 64, as numpy writes it)."""
    text = (f"{{'descr': {np.lib.format.dtype_to_descr(dtype)!r}, 'fortran_order': False, "
            f"'shape': {tuple(shape)!r}, }}")
    fixed = len(_NPY_MAGIC) + 2 + len(text) + 1  # + the closing newline
    length = length or -(-fixed // 64) * 64
    if length < fixed or length - len(_NPY_MAGIC) - 2 > 0xFFFF:
        raise ValueError(f"a .npy header of {length} bytes cannot hold shape {shape}")
    body = text + " " * (length - fixed) + "\n"
    return _NPY_MAGIC + (len(body)).to_bytes(2, "little") + body.encode("latin1")


class RowWriter:
    """Appends rows of one array straight into its `.npy` file: the header is written first,
    sized for any row count, and rewritten in place with the real count at `finish`. Why: a
    million videos' state is tens of GB; writing it once (instead of to a raw file that is then
    copied behind a header) never needs twice the index's size on disk."""

    def __init__(self, path: Path, dtype, row_shape: tuple[int, ...]):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(row_shape)
        self.rows = 0
        self._header_length = len(_npy_header(self.dtype, (_MAX_ROWS, *self.row_shape)))
        self._file = open(self.path, "wb")  # noqa: SIM115 - closed in finish()
        self._file.write(_npy_header(self.dtype, (_MAX_ROWS, *self.row_shape)))

    def append(self, block: np.ndarray) -> None:
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if block.shape[1:] != self.row_shape:
            raise ValueError(f"{self.path.name}: rows of shape {block.shape[1:]}, expected {self.row_shape}")
        self._file.write(block.tobytes())
        self.rows += block.shape[0]

    def finish(self) -> Path:
        self._file.seek(0)
        self._file.write(_npy_header(self.dtype, (self.rows, *self.row_shape),
                                     self._header_length))
        self._file.close()
        return self.path


def folder_arrays(folder: Path) -> dict[str, np.ndarray]:
    """Every `.npy` array of one data folder, memory-mapped read-only."""
    arrays = {}
    for path in sorted(Path(folder).glob("*.npy")):
        try:
            arrays[path.stem] = np.load(path, mmap_mode="r")
        except ValueError:  # an empty array cannot be mapped
            arrays[path.stem] = np.load(path)
    return arrays


def open_arrays(index_dir: Path, manifest: Manifest) -> dict[str, np.ndarray]:
    """Every array of the index's current generation, memory-mapped read-only."""
    folder = data_dir(index_dir, manifest.generation)
    arrays = folder_arrays(folder)
    n = len(manifest.videos)
    for name, arr in arrays.items():
        if arr.shape[0] != n:
            raise SearchIndexError(f"{folder / name}.npy holds {arr.shape[0]} rows for {n} videos")
    return arrays


def prefetch_rows(arr: np.ndarray, rows: np.ndarray) -> None:
    """Asks the kernel to start reading `rows` of a memory-mapped array, all at once.

    A shortlist's rows lie anywhere in a file larger than memory; read one by one, each is a
    separate wait on the disk. MADV_WILLNEED issues them together, so the copy that follows
    waits roughly once. Arrays that are not memory-mapped are left alone.
    """
    mm = getattr(arr, "_mmap", None)
    if mm is None or not hasattr(mm, "madvise") or not len(rows):
        return
    import mmap

    row_bytes = int(np.prod(arr.shape[1:], dtype=np.int64)) * arr.dtype.itemsize
    base = arr.offset if hasattr(arr, "offset") else 0
    page = mmap.PAGESIZE
    for r in np.asarray(rows, dtype=np.int64):
        start = base + int(r) * row_bytes
        aligned = start - start % page
        try:
            mm.madvise(mmap.MADV_WILLNEED, aligned, start + row_bytes - aligned)
        except (OSError, ValueError):
            return
