"""LSMDC movie description: one sentence per clip, tab-separated files with no header.

Files: `LSMDC16_annos_training.csv` (train), `LSMDC16_annos_val.csv` (val) and
`LSMDC16_challenge_1000_publictect.csv` (test, the 1000-clip set; the misspelling is official).
Each line has six tab-separated fields: clip id, aligned start, aligned end, extracted start,
extracted end, sentence. Lines are split on tabs, not parsed as CSV: sentences contain quotes.
A clip id may repeat (training): every line is a text, the clip is one video. Videos are found
by one recursive search of the video folder for `<clip_id>.avi` (or another video extension),
whatever the layout; the usual `<movie>/<clip_id>.avi` is the expected path when none is found.
"""

from __future__ import annotations

from pathlib import Path

from calm.data.annotations import DATASETS, BenchmarkLoader, SplitAnnotations
from calm.data.benchmarks.common import (
    VIDEO_EXTENSIONS,
    SplitBuilder,
    VideoIndex,
    clean_caption,
    loader_options,
)
from calm.data.errors import DataError

FILES = {
    "train": "LSMDC16_annos_training.csv",
    "val": "LSMDC16_annos_val.csv",
    "test": "LSMDC16_challenge_1000_publictect.csv",
}
N_FIELDS = 6


def _read_lines(path: Path) -> list[str]:
    """The file's lines; UTF-8, or Latin-1 for copies that were saved in it (never fails)."""
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    # Only newlines end a line: str.splitlines would also break at form feeds or U+2028.
    return [ln.removesuffix("\r") for ln in text.split("\n")]


@DATASETS.register("lsmdc")
class LSMDCLoader(BenchmarkLoader):
    """No options."""

    name = "lsmdc"
    default_text_length = 32
    video_extensions = (".avi",) + tuple(e for e in VIDEO_EXTENSIONS if e != ".avi")

    def __init__(self, annotations, videos, options=None):
        super().__init__(annotations, videos, options)
        loader_options(self.name, self.options, {})
        self._index = VideoIndex(self.videos, recursive=True, extensions=self.video_extensions)

    def splits(self) -> list[str]:
        return list(FILES)

    def _video_path(self, clip_id: str) -> Path:
        movie = clip_id.rsplit("_", 1)[0]
        return self._index.resolve(clip_id, Path(movie) / f"{clip_id}.avi")

    def read_split(self, split: str) -> SplitAnnotations:
        self.check_split(split)
        path = self.annotation_file(FILES[split])
        out = SplitBuilder(self._video_path)
        for line, raw in enumerate(_read_lines(path), start=1):
            if not raw.strip():
                continue
            fields = raw.split("\t")
            where = f"{path}: line {line}"
            if len(fields) < N_FIELDS:
                raise DataError(
                    f"{where}: expected {N_FIELDS} tab-separated fields (clip id, 4 times, sentence), "
                    f"found {len(fields)}"
                )
            clip_id = fields[0].strip()
            if not clip_id:
                raise DataError(f"{where}: empty clip id")
            # A stray tab inside a sentence would make more than six fields: keep it in the text.
            text = clean_caption(" ".join(fields[N_FIELDS - 1 :]), where)
            out.add(clip_id, text, f"{clip_id}#{line}")
        return out.build(self.name, split, {"file": FILES[split]})
