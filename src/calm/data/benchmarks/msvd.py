"""MSVD: 1,970 clips with about 41 captions each; every caption is kept (multi-caption protocol).

Captions come from `raw-captions.pkl` (video id -> list of token lists, as CLIP4Clip ships it) or
`captions_msvd.json` (video id -> list of strings); the first that exists is used, or the one
named by option `captions`. Split membership comes from `train_list.txt` / `val_list.txt` /
`test_list.txt`. Videos are `<videos>/<id>.avi` (an `.mp4` of the same id is accepted).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

from calm.data.annotations import DATASETS, BenchmarkLoader, SplitAnnotations
from calm.data.benchmarks.common import (
    SplitBuilder,
    VideoIndex,
    clean_caption,
    loader_options,
    read_id_list,
)
from calm.data.errors import DataError

CAPTION_FILES = ("raw-captions.pkl", "captions_msvd.json")


class _PlainUnpickler(pickle.Unpickler):
    """Builds only plain containers and strings: a downloaded pickle must not run code."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: only plain data is allowed"
        )


def _read_captions(path: Path) -> dict:
    try:
        if path.suffix == ".pkl":
            with open(path, "rb") as f:
                return _PlainUnpickler(f).load()
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (pickle.UnpicklingError, json.JSONDecodeError, EOFError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read captions: {exc}") from None


@DATASETS.register("msvd")
class MSVDLoader(BenchmarkLoader):
    """Options: `captions` (file name inside the annotation folder; default: first found)."""

    name = "msvd"
    default_text_length = 32
    video_extensions = (".avi", ".mp4")

    def __init__(self, annotations, videos, options=None):
        super().__init__(annotations, videos, options)
        self.captions_file = loader_options(self.name, self.options, {"captions": None})["captions"]
        self._captions: dict[str, list[str]] | None = None
        self._index = VideoIndex(self.videos, extensions=self.video_extensions)

    def splits(self) -> list[str]:
        return ["train", "val", "test"]

    def _caption_path(self) -> Path:
        if self.captions_file is not None:
            return self.annotation_file(self.captions_file)
        for name in CAPTION_FILES:
            if (self.annotations / name).is_file():
                return self.annotations / name
        raise DataError(
            f"msvd: no caption file in {self.annotations}: expected {CAPTION_FILES[0]} or "
            f"{CAPTION_FILES[1]}"
        )

    def _all_captions(self) -> dict[str, list[str]]:
        """video id -> cleaned captions; token lists are joined with spaces (read once)."""
        if self._captions is not None:
            return self._captions
        path = self._caption_path()
        raw = _read_captions(path)
        if not isinstance(raw, dict):
            raise DataError(
                f"{path}: expected a mapping of video id to captions, got {type(raw).__name__}"
            )
        captions = {}
        for vid, entries in raw.items():
            if not isinstance(entries, list | tuple) or not entries:
                raise DataError(f"{path}: video {vid!r}: expected a non-empty list of captions")
            cleaned = []
            for k, caption in enumerate(entries):
                if isinstance(caption, list | tuple) and all(isinstance(t, str) for t in caption):
                    caption = " ".join(caption)
                cleaned.append(clean_caption(caption, f"{path}: video {vid!r} caption {k}"))
            captions[str(vid)] = cleaned
        self._captions = captions
        return captions

    def read_split(self, split: str) -> SplitAnnotations:
        self.check_split(split)
        list_path = self.annotation_file(f"{split}_list.txt")
        captions = self._all_captions()
        out = SplitBuilder(lambda vid: self._index.resolve(f"{vid}.avi", f"{vid}.avi"))
        for line, vid in read_id_list(list_path):
            if vid not in captions:
                raise DataError(
                    f"{list_path}: line {line}: video {vid!r} has no captions in {self._caption_path()}"
                )
            for k, text in enumerate(captions[vid]):
                out.add(vid, text, f"{vid}/{k}")
        return out.build(self.name, split, {"captions": self._caption_path().name})
