"""Your own videos and captions in one annotation file: what the JSONL and CSV loaders share.

A user's data is a list of (video, captions, split) entries, one file for all splits. The format
modules (own_jsonl.py, own_csv.py) only parse lines into `Entry` records; this module turns them
into `SplitAnnotations` exactly as the benchmark loaders do:

- `--annotations` is the file itself, or a folder holding `data.jsonl` / `data.csv`;
- a video path is used as written when absolute, else relative to `--videos`; a missing file is
  kept (the missing-video policy decides at decode time, as for every benchmark);
- texts keep file order, videos the order of their first text; a video named again in the same
  split gets the new captions added to it;
- `val`: when no entry says `val`, one is carved from `train` like MSR-VTT's: `val_size` videos
  (option; default 10% of the training videos, at least 1, at most 500, none when there is only
  one; 0 disables it) drawn by a shuffle
  seeded with `val_seed` (option, default 0), kept out of `train`, and recorded in `info`.

Every problem names the file and the line.
"""

from __future__ import annotations

import random
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path

from calm.data.annotations import BenchmarkLoader, SplitAnnotations
from calm.data.benchmarks.common import SplitBuilder, clean_caption
from calm.data.errors import DataError

MAX_AUTO_VAL = 500
AUTO_VAL_FRACTION = 0.1


@dataclass(frozen=True)
class Entry:
    """One parsed line: a video as written in the file, its captions, and its split."""

    line: int
    video: str
    captions: tuple[str, ...]
    split: str
    text_ids: tuple[str, ...]


def check_video(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: 'video' must be a non-empty path, got {value!r}")
    return value.strip()


def check_split_name(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{where}: 'split' must be a non-empty name such as train, val or test, "
                        f"got {value!r}")
    return value.strip()


def clean_captions(values: list, where: str) -> tuple[str, ...]:
    return tuple(clean_caption(text, f"{where}: caption {k}") for k, text in enumerate(values))


class OwnDataLoader(BenchmarkLoader):
    """Options: `val_size` (int; default 10% of train, at most 500), `val_seed` (int; 0)."""

    file_name = ""  # what to look for when --annotations is a folder
    default_text_length = 32

    def __init__(self, annotations, videos, options=None):
        # BenchmarkLoader wants an annotation folder; own data may name its file directly.
        self.options = dict(options or {})
        self.annotations = self._locate(Path(annotations).expanduser())
        self.videos = Path(videos).expanduser()
        unknown = sorted(set(self.options) - {"val_size", "val_seed"})
        if unknown:
            raise DataError(f"{self.name}: unknown option(s) {unknown}; known: "
                            f"['val_seed', 'val_size']")
        self.val_size = self._int_option("val_size", None)
        self.val_seed = self._int_option("val_seed", 0)
        if self.val_size is not None and self.val_size < 0:
            raise DataError(f"{self.name}: val_size must be >= 0, got {self.val_size}")
        self._entries: list[Entry] | None = None

    def _int_option(self, key: str, default: int | None) -> int | None:
        value = self.options.get(key, default)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise DataError(f"{self.name}: option {key}: expected an integer, got {value!r}")
        try:
            return int(value)
        except ValueError:
            raise DataError(
                f"{self.name}: option {key}: expected an integer, got {value!r}"
            ) from None

    def _locate(self, path: Path) -> Path:
        if path.is_file():
            return path
        if path.is_dir():
            if (path / self.file_name).is_file():
                return path / self.file_name
            raise DataError(
                f"{self.name}: folder {path} holds no {self.file_name}; pass the annotation file "
                f"itself or a folder holding {self.file_name}"
            )
        raise DataError(f"{self.name}: annotation file {path} does not exist")

    @abstractmethod
    def read_entries(self) -> list[Entry]:
        """Parses the whole file; errors name the file and the line."""

    def entries(self) -> list[Entry]:
        if self._entries is None:
            self._entries = self.read_entries()
            if not self._entries:
                raise DataError(f"{self.annotations}: no entries")
        return self._entries

    def _named_splits(self) -> list[str]:
        return list(dict.fromkeys(e.split for e in self.entries()))

    def _train_videos(self) -> list[str]:
        return list(dict.fromkeys(e.video for e in self.entries() if e.split == "train"))

    def _val_size(self) -> int:
        """The option, or 10% of the training videos (at least 1, at most 500; none of 1)."""
        if self.val_size is not None:
            return self.val_size
        n = len(self._train_videos())
        return 0 if n < 2 else min(MAX_AUTO_VAL, max(1, round(AUTO_VAL_FRACTION * n)))

    def _carves_val(self) -> bool:
        names = self._named_splits()
        return "val" not in names and "train" in names and self._val_size() > 0

    def splits(self) -> list[str]:
        names = self._named_splits()
        return names + ["val"] if self._carves_val() else names

    def read_split(self, split: str) -> SplitAnnotations:
        self.check_split(split)
        entries = self.entries()
        if self.val_size is not None and "val" in self._named_splits():
            raise DataError(
                f"{self.name}: option val_size carves a val split, but {self.annotations} already "
                "has 'val' entries; drop the option"
            )
        info: dict = {"file": str(self.annotations)}
        if self._carves_val() and split in ("train", "val"):
            carved, info["val_carve"] = self._carve()
            want_val = split == "val"
            keep = [e for e in entries if e.split == "train" and (e.video in carved) == want_val]
        else:
            keep = [e for e in entries if e.split == split]
        out = SplitBuilder(self._video_path)
        for entry in keep:
            for text, text_id in zip(entry.captions, entry.text_ids):
                out.add(entry.video, text, text_id)
        return out.build(self.name, split, info)

    def _carve(self) -> tuple[set[str], dict]:
        """A seeded shuffle of the sorted training videos; the first `val_size` become val."""
        videos = self._train_videos()
        size = self._val_size()
        if size >= len(videos):
            raise DataError(
                f"{self.name}: carving a val split of {size} videos leaves no training videos of "
                f"{len(videos)} in {self.annotations}; add 'val' entries or set a smaller "
                "option val_size"
            )
        shuffled = sorted(videos)
        random.Random(self.val_seed).shuffle(shuffled)
        carved = set(shuffled[:size])
        return carved, {
            "source": self.annotations.name,
            "seed": self.val_seed,
            "size": size,
            "video_ids": [v for v in videos if v in carved],
        }

    def _video_path(self, video: str) -> Path:
        path = Path(video).expanduser()
        return path if path.is_absolute() else self.videos / path
