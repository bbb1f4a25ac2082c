"""`data.dataset: csv`: your own videos, one caption per row, with a header.

    video,caption,split
    clips/beach.mp4,waves at sunset,train
    clips/beach.mp4,a quiet beach,train
    /data/cat.mp4,"a cat jumps on a table, then sits",test

Rows of one video in one split may be anywhere in the file; its captions keep file order. Other
columns are ignored. See own_data.py for paths, splits and the carved `val`.
"""

from __future__ import annotations

from calm.data.annotations import DATASETS
from calm.data.benchmarks.common import read_csv_rows
from calm.data.benchmarks.own_data import (
    Entry,
    OwnDataLoader,
    check_split_name,
    check_video,
    clean_captions,
)
from calm.data.errors import DataError

COLUMNS = ("video", "caption", "split")


@DATASETS.register("csv")
class CSVLoader(OwnDataLoader):
    """Options: `val_size`, `val_seed` (see own_data.py)."""

    name = "csv"
    file_name = "data.csv"

    def read_entries(self) -> list[Entry]:
        entries = []
        try:
            for line, row in read_csv_rows(self.annotations, COLUMNS):
                where = f"{self.annotations}: line {line}"
                entries.append(Entry(line, check_video(row["video"], where),
                                     clean_captions([row["caption"]], where),
                                     check_split_name(row["split"], where), (f"line{line}",)))
        except UnicodeDecodeError as exc:
            raise DataError(f"{self.annotations}: not UTF-8 text: {exc}") from None
        return entries
