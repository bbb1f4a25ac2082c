"""`data.dataset: jsonl`: your own videos, one JSON object per line.

    {"video": "clips/beach.mp4", "captions": ["waves at sunset", "a quiet beach"], "split": "train"}
    {"video": "/data/cat.mp4", "caption": "a cat jumps on a table", "split": "test"}

`video` is relative to `--videos` or absolute; `captions` (a list) or `caption` (one string);
`split` names the split (train, val, test or any other name). Other keys are ignored, so a file
may carry its own metadata. Blank lines are skipped. See own_data.py for splits and `val`.
"""

from __future__ import annotations

import json

from calm.data.annotations import DATASETS
from calm.data.benchmarks.own_data import (
    Entry,
    OwnDataLoader,
    check_split_name,
    check_video,
    clean_captions,
)
from calm.data.errors import DataError


def parse_line(raw: str, where: str, line: int) -> Entry:
    try:
        item = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(item, dict):
        raise DataError(f"{where}: expected a JSON object, got {raw.strip()[:80]!r}")
    for key in ("video", "split"):
        if key not in item:
            raise DataError(f"{where}: missing key {key!r}")
    if ("captions" in item) == ("caption" in item):
        raise DataError(f"{where}: give either 'captions' (a list) or 'caption' (one string)")
    if "captions" in item:
        captions = item["captions"]
        if not isinstance(captions, list) or not captions:
            raise DataError(f"{where}: 'captions' must be a non-empty list of strings")
    else:
        captions = [item["caption"]]
    texts = clean_captions(captions, where)
    ids = tuple(f"line{line}" if len(texts) == 1 else f"line{line}:{k}" for k in range(len(texts)))
    return Entry(line, check_video(item["video"], where), texts,
                 check_split_name(item["split"], where), ids)


@DATASETS.register("jsonl")
class JSONLLoader(OwnDataLoader):
    """Options: `val_size`, `val_seed` (see own_data.py)."""

    name = "jsonl"
    file_name = "data.jsonl"

    def read_entries(self) -> list[Entry]:
        entries = []
        try:
            with open(self.annotations, encoding="utf-8") as f:
                for line, raw in enumerate(f, start=1):
                    if raw.strip():
                        entries.append(parse_line(raw, f"{self.annotations}: line {line}", line))
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.annotations}: not UTF-8 text: {exc}") from None
        return entries
