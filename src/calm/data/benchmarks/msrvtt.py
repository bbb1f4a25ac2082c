"""MSR-VTT: 10,000 YouTube clips with 20 captions each, read from the published files.

Splits:
- `train`: the 9k training videos (MSRVTT_train.9k.csv) with all their captions, minus the videos
  carved out for `val`.
- `val`: `val_size` videos (option, default 500; 0 disables it) drawn from the 9k list by a
  shuffle seeded with `val_seed` (option, default 0), with all their captions. There is no official
  validation split for 9k/1k-A, so one is carved for model selection and kept out of `train`;
  both splits record the seed and the carved ids in `info` for the run directory.
- `train7k`: MSRVTT_train.7k.csv, all captions (no carve-out).
- `test`: the standard 1k-A set, MSRVTT_JSFUSION_test.csv, one caption per video.
- `train_full`, `val_full`, `test_full`: the official 6513 / 497 / 2990 split, all captions.

Captions come from MSRVTT_data.json (`sentences`); videos are `<videos>/<video_id>.mp4`.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from calm.data.annotations import DATASETS, BenchmarkLoader, SplitAnnotations
from calm.data.benchmarks.common import (
    SplitBuilder,
    VideoIndex,
    clean_caption,
    loader_options,
    read_csv_ids,
    read_csv_rows,
    require_keys,
)
from calm.data.errors import DataError

DATA_JSON = "MSRVTT_data.json"
TEST_1KA = "MSRVTT_JSFUSION_test.csv"
ID_LISTS = {
    "train7k": "MSRVTT_train.7k.csv",
    "train_full": "MSRVTT_train.full.csv",
    "val_full": "MSRVTT_val.full.csv",
    "test_full": "MSRVTT_test.full.csv",
}
TRAIN_9K = "MSRVTT_train.9k.csv"


@DATASETS.register("msrvtt")
class MSRVTTLoader(BenchmarkLoader):
    """Options: `val_size` (int, default 500), `val_seed` (int, default 0)."""

    name = "msrvtt"
    default_text_length = 32
    video_extensions = (".mp4",)

    def __init__(self, annotations, videos, options=None):
        super().__init__(annotations, videos, options)
        opts = loader_options(self.name, self.options, {"val_size": 500, "val_seed": 0})
        self.val_size, self.val_seed = opts["val_size"], opts["val_seed"]
        if self.val_size < 0:
            raise DataError(f"msrvtt: val_size must be >= 0, got {self.val_size}")
        self._captions: dict[str, list[tuple[str, str]]] | None = None
        self._index = VideoIndex(self.videos)

    def splits(self) -> list[str]:
        return ["train", "val", "train7k", "train_full", "test", "val_full", "test_full"]

    def read_split(self, split: str) -> SplitAnnotations:
        self.check_split(split)
        if split == "test":
            return self._load_1ka()
        if split in ("train", "val"):
            rows, info = self._carve(split)
            source = self.annotation_file(TRAIN_9K)
        else:
            source = self.annotation_file(ID_LISTS[split])
            rows, info = read_csv_ids(source), {}
        return self._all_captions(split, rows, source, info)

    def _carve(self, split: str) -> tuple[list[tuple[int, str]], dict]:
        """Splits the 9k list into train and val with a seeded shuffle of the sorted ids."""
        rows = read_csv_ids(self.annotation_file(TRAIN_9K))
        ids = [vid for _, vid in rows]
        if split == "val" and self.val_size == 0:
            raise DataError("msrvtt: split 'val' needs option val_size > 0 (it is carved from 9k)")
        if self.val_size >= len(ids):
            raise DataError(
                f"msrvtt: val_size {self.val_size} leaves no training videos of {len(ids)} in "
                f"{self.annotations / TRAIN_9K}"
            )
        shuffled = sorted(ids)
        random.Random(self.val_seed).shuffle(shuffled)
        carved = set(shuffled[: self.val_size])
        val_ids = [v for v in ids if v in carved]
        info = {
            "val_carve": {
                "source": TRAIN_9K,
                "seed": self.val_seed,
                "size": self.val_size,
                "video_ids": val_ids,
            }
        }
        return [(line, v) for line, v in rows if (v in carved) == (split == "val")], info

    def _sentences(self) -> dict[str, list[tuple[str, str]]]:
        """video_id -> [(sen_id, caption)] from MSRVTT_data.json, in file order (read once)."""
        if self._captions is not None:
            return self._captions
        path = self.annotation_file(DATA_JSON)
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("sentences"), list):
            raise DataError(f"{path}: expected an object with a 'sentences' list")
        captions: dict[str, list[tuple[str, str]]] = {}
        for i, entry in enumerate(data["sentences"]):
            where = f"{path}: sentences[{i}]"
            require_keys(entry, ("video_id", "caption"), where)
            text = clean_caption(entry["caption"], where)
            captions.setdefault(str(entry["video_id"]), []).append(
                (str(entry.get("sen_id", i)), text)
            )
        self._captions = captions
        return captions

    def _video_path(self, video_id: str) -> Path:
        return self._index.resolve(f"{video_id}.mp4", f"{video_id}.mp4")

    def _all_captions(
        self, split: str, rows: list[tuple[int, str]], source: Path, info: dict
    ) -> SplitAnnotations:
        captions = self._sentences()
        out = SplitBuilder(self._video_path)
        for line, vid in rows:
            if vid not in captions:
                raise DataError(
                    f"{source}: line {line}: video {vid!r} has no captions in "
                    f"{self.annotations / DATA_JSON}"
                )
            for sen_id, text in captions[vid]:
                out.add(vid, text, sen_id)
        return out.build(self.name, split, info)

    def _load_1ka(self) -> SplitAnnotations:
        path = self.annotation_file(TEST_1KA)
        out = SplitBuilder(self._video_path)
        for line, row in read_csv_rows(path, ("key", "vid_key", "video_id", "sentence")):
            vid = row["video_id"].strip()
            if not vid:
                raise DataError(f"{path}: line {line}: empty video_id")
            out.add(vid, clean_caption(row["sentence"], f"{path}: line {line}"), row["key"].strip())
        return out.build(self.name, "test", {"protocol": "1k-A"})
