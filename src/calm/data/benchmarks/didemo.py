"""DiDeMo as paragraph-to-video retrieval: all sentences of a video form one text.

`{split}_data.json` (LocalizingMoments) is a list of moment annotations with `video` (the file
name, extension included and mixed, sometimes none) and `description`; a video's paragraph is its
descriptions joined in file order. When `{split}_list.txt` exists it defines the split's videos
(in its order); listed videos without annotations are dropped and counted in `info`. Video files
are found in the video folder under the name as given, the name plus an extension, or the stem
with another extension (re-encoded copies such as `<name>.mp4`).
"""

from __future__ import annotations

import json

from calm.data.annotations import DATASETS, BenchmarkLoader, SplitAnnotations
from calm.data.benchmarks.common import (
    VIDEO_EXTENSIONS,
    SplitBuilder,
    VideoIndex,
    clean_caption,
    loader_options,
    read_id_list,
    require_keys,
)
from calm.data.errors import DataError


@DATASETS.register("didemo")
class DiDeMoLoader(BenchmarkLoader):
    """No options; paragraphs are long, so the default text length is 64 tokens."""

    name = "didemo"
    default_text_length = 64
    video_extensions = VIDEO_EXTENSIONS

    def __init__(self, annotations, videos, options=None):
        super().__init__(annotations, videos, options)
        loader_options(self.name, self.options, {})
        self._index = VideoIndex(self.videos, extensions=self.video_extensions)

    def splits(self) -> list[str]:
        return ["train", "val", "test"]

    def _sentences(self, split: str) -> dict[str, list[str]]:
        """video name -> its descriptions, videos and sentences in file order."""
        path = self.annotation_file(f"{split}_data.json")
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a list of moment annotations")
        sentences: dict[str, list[str]] = {}
        for i, entry in enumerate(data):
            where = f"{path}: entry {i}"
            require_keys(entry, ("video", "description"), where)
            video = entry["video"]
            if not isinstance(video, str) or not video.strip():
                raise DataError(f"{where}: empty video name")
            sentences.setdefault(video.strip(), []).append(
                clean_caption(entry["description"], where)
            )
        return sentences

    def read_split(self, split: str) -> SplitAnnotations:
        self.check_split(split)
        sentences = self._sentences(split)
        list_path = self.annotations / f"{split}_list.txt"
        info: dict = {}
        if list_path.is_file():
            listed = [name for _, name in read_id_list(list_path)]
            names = [n for n in listed if n in sentences]
            info = {
                "list": list_path.name,
                "listed_without_annotations": len(listed) - len(names),
                "annotated_not_listed": len(set(sentences) - set(listed)),
            }
        else:
            names = list(sentences)
        out = SplitBuilder(lambda name: self._index.resolve(name, name))
        for name in names:
            out.add(name, " ".join(sentences[name]), name)
        return out.build(self.name, split, info)
