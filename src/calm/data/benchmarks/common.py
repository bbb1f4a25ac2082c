"""Finding a benchmark loader by name, and the file-reading helpers the four loaders share.

The loaders register themselves in `DATASETS` when their module is imported; `get_loader`
imports all of them so a config or the command line can name any benchmark without the caller
knowing which module defines it. The helpers keep error messages uniform: every problem in an
annotation file names the file and the row (or line, or list entry) where it was found.
"""

from __future__ import annotations

import csv
import importlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from calm.data.annotations import (
    DATASETS,
    BenchmarkLoader,
    SplitAnnotations,
    TextRecord,
    VideoRecord,
)
from calm.data.errors import DataError

LOADER_MODULES = (
    "calm.data.benchmarks.msrvtt",
    "calm.data.benchmarks.msvd",
    "calm.data.benchmarks.didemo",
    "calm.data.benchmarks.lsmdc",
    "calm.data.benchmarks.own_jsonl",
    "calm.data.benchmarks.own_csv",
)

# Containers the benchmarks ship in (DiDeMo alone uses most of them); order is preference.
VIDEO_EXTENSIONS = (
    ".mp4",
    ".avi",
    ".mov",
    ".mkv",
    ".webm",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".wmv",
    ".3gp",
    ".flv",
)


def import_loaders() -> None:
    """Imports every benchmark module so each registers itself in DATASETS."""
    for name in LOADER_MODULES:
        importlib.import_module(name)


def get_loader(
    name: str, annotations: str | Path, videos: str | Path, options: dict | None = None
) -> BenchmarkLoader:
    """Builds the registered loader `name`; unknown names raise DataError listing the valid ones."""
    import_loaders()
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {DATASETS.names()}")
    return DATASETS.build(name, annotations, videos, options)


def default_text_length(name: str) -> int:
    """The text length (tokens) a benchmark's captions need; DiDeMo's paragraphs need 64."""
    import_loaders()
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; choose one of {DATASETS.names()}")
    return DATASETS.get(name).default_text_length


def load_split(
    name: str, annotations: str | Path, videos: str | Path, split: str, options: dict | None = None
) -> SplitAnnotations:
    """One call from names and folders to parsed annotations (what the engine and data-check use)."""
    return get_loader(name, annotations, videos, options).load_split(split)


# ---- helpers shared by the loaders -------------------------------------------------------------


def loader_options(dataset: str, options: dict, defaults: dict) -> dict:
    """`defaults` updated by `options`, rejecting unknown keys so a typo never passes silently."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise DataError(f"{dataset}: unknown option(s) {unknown}; known: {sorted(defaults)}")
    merged = {**defaults, **options}
    for key, default in defaults.items():
        value = merged[key]
        if type(default) in (int, float) and not isinstance(value, bool):
            try:
                merged[key] = type(default)(value)
            except (TypeError, ValueError):
                raise DataError(
                    f"{dataset}: option {key}: expected a number, got {value!r}"
                ) from None
    return merged


def clean_caption(text: object, where: str) -> str:
    """Strips a caption and rejects empty or non-text ones, naming `where` (file and row)."""
    if not isinstance(text, str):
        raise DataError(f"{where}: caption must be text, got {type(text).__name__} {text!r}")
    text = " ".join(text.split())
    if not text:
        raise DataError(f"{where}: empty caption")
    return text


def require_keys(entry: object, keys: tuple[str, ...], where: str) -> dict:
    """A JSON annotation entry must be an object holding `keys`; errors name `where`."""
    if not isinstance(entry, dict):
        raise DataError(f"{where}: expected an object, got {entry!r}")
    for key in keys:
        if key not in entry:
            raise DataError(f"{where}: missing key {key!r}")
    return entry


def read_csv_rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Yields (line number, row) of a headed CSV after checking the header has `columns`."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = [h.strip() for h in reader.fieldnames or []]
        missing = [c for c in columns if c not in header]
        if missing:
            raise DataError(f"{path}: line 1: missing column(s) {missing}; the header has {header}")
        reader.fieldnames = header
        for row in reader:
            if any(row.get(c) is None for c in columns):
                raise DataError(
                    f"{path}: line {reader.line_num}: too few fields for {list(columns)}"
                )
            yield reader.line_num, row


def read_csv_ids(path: Path, column: str = "video_id") -> list[tuple[int, str]]:
    """(line number, id) of one column of a headed CSV, in file order; repeats are skipped."""
    seen: set[str] = set()
    out = []
    for line, row in read_csv_rows(path, (column,)):
        vid = row[column].strip()
        if not vid:
            raise DataError(f"{path}: line {line}: empty {column}")
        if vid not in seen:
            seen.add(vid)
            out.append((line, vid))
    return out


def read_id_list(path: Path) -> list[tuple[int, str]]:
    """(line number, id) of a one-id-per-line list file; blank lines and repeats are skipped."""
    seen: set[str] = set()
    out = []
    with open(path, encoding="utf-8") as f:
        for line, raw in enumerate(f, start=1):
            vid = raw.strip()
            if vid and vid not in seen:
                seen.add(vid)
                out.append((line, vid))
    return out


class SplitBuilder:
    """Texts in the order added; one video per distinct id, in order of its first text."""

    def __init__(self, video_path: Callable[[str], Path]):
        self.video_path = video_path
        self.videos: list[VideoRecord] = []
        self.texts: list[TextRecord] = []
        self._position: dict[str, int] = {}

    def add(self, video_id: str, text: str, text_id: str) -> None:
        if video_id not in self._position:
            self._position[video_id] = len(self.videos)
            self.videos.append(VideoRecord(video_id, self.video_path(video_id)))
        self.texts.append(TextRecord(text, self._position[video_id], text_id))

    def build(self, dataset: str, split: str, info: dict | None = None) -> SplitAnnotations:
        return SplitAnnotations(dataset, split, self.videos, self.texts, dict(info or {}))


class VideoIndex:
    """One listing of a video folder, so resolving thousands of names costs one walk, not many stats.

    Names given by an annotation file are matched exactly first; otherwise by stem, where the file
    may carry any known video extension (users re-encode, e.g. DiDeMo's `.mov` to `.mp4`). A name
    that matches nothing resolves to `None`; the caller then records its expected path, and the
    decode step applies the missing-video policy.
    """

    def __init__(
        self,
        root: str | Path,
        recursive: bool = False,
        extensions: tuple[str, ...] = VIDEO_EXTENSIONS,
    ):
        self.root = Path(root)
        self.recursive = recursive
        self.extensions = tuple(e.lower() for e in extensions)
        self._by_name: dict[str, Path] | None = None
        self._by_stem: dict[str, dict[str, Path]] = {}

    def _files(self) -> Iterator[Path]:
        if not self.root.is_dir():
            return
        if not self.recursive:
            with os.scandir(self.root) as entries:
                names = sorted(e.name for e in entries if e.is_file())
            yield from (self.root / n for n in names)
            return
        for folder, dirs, files in os.walk(self.root, followlinks=True):
            dirs.sort()
            yield from (Path(folder) / n for n in sorted(files))

    def _scan(self) -> dict[str, Path]:
        if self._by_name is None:
            self._by_name = {}
            for path in self._files():
                self._by_name.setdefault(path.name, path)
                stem, ext = os.path.splitext(path.name)
                if ext.lower() in self.extensions:
                    self._by_stem.setdefault(stem, {}).setdefault(ext.lower(), path)
        return self._by_name

    def find(self, name: str) -> Path | None:
        """The file for `name`: exact, then `name` + extension, then `name` with another extension."""
        by_name = self._scan()
        if name in by_name:
            return by_name[name]
        stems = [name]
        stem, ext = os.path.splitext(name)
        if ext.lower() in self.extensions:
            stems.append(stem)
        for stem in stems:
            candidates = self._by_stem.get(stem, {})
            for ext in self.extensions:
                if ext in candidates:
                    return candidates[ext]
        return None

    def resolve(self, name: str, default: str | Path) -> Path:
        """`find(name)`, or `root / default` (which may not exist) when nothing matches."""
        return self.find(name) or self.root / default
