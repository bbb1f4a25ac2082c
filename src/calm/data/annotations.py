"""The shared shape of every benchmark: annotation parsing that yields plain records.

A benchmark loader knows file formats and protocols, nothing about tensors or models. It turns
an annotation folder and a video folder into `SplitAnnotations`: a list of videos and a list of
texts, each text pointing at its video by index. Training pairs, evaluation sets and the
multi-caption protocol are all derived from these two lists.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

from calm.data.errors import DataError
from calm.data.truth import GroundTruth, find_truth
from calm.registry import Registry


@dataclass(frozen=True)
class VideoRecord:
    video_id: str
    path: Path


@dataclass(frozen=True)
class TextRecord:
    text: str
    video_index: int  # index into SplitAnnotations.videos
    text_id: str = ""


@dataclass
class SplitAnnotations:
    dataset: str
    split: str
    videos: list[VideoRecord]
    texts: list[TextRecord]
    info: dict = field(default_factory=dict)  # e.g. the seed of a carved validation split
    # ground truth beyond the captions (the synthetic benchmark's record of what each clip
    # shows: anchor truth, ambiguity); None for a real benchmark. See calm.data.truth.
    truth: GroundTruth | None = None

    def __post_init__(self):
        n = len(self.videos)
        for i, t in enumerate(self.texts):
            if not 0 <= t.video_index < n:
                raise DataError(f"{self.dataset}/{self.split}: text {i} points at video {t.video_index} of {n}")

    def text_to_video(self) -> list[int]:
        return [t.video_index for t in self.texts]

    def captions_per_video(self) -> list[list[int]]:
        groups: list[list[int]] = [[] for _ in self.videos]
        for i, t in enumerate(self.texts):
            groups[t.video_index].append(i)
        return groups


class BenchmarkLoader(ABC):
    """Reads one benchmark's published annotation files from a user-given folder."""

    name: str = ""
    default_text_length: int = 32
    video_extensions: tuple[str, ...] = (".mp4",)

    def __init__(self, annotations: str | Path, videos: str | Path, options: dict | None = None):
        self.annotations = Path(annotations)
        self.videos = Path(videos)
        self.options = dict(options or {})
        if not self.annotations.is_dir():
            raise DataError(f"{self.name}: annotation folder {self.annotations} does not exist")

    @abstractmethod
    def splits(self) -> list[str]:
        """The split names this loader understands."""

    def load_split(self, split: str) -> SplitAnnotations:
        """`split` as parsed (`read_split`), with the ground truth recorded beside the
        annotation folder, if any (`calm.data.truth`)."""
        ann = self.read_split(split)
        if ann.truth is None:
            ann.truth = find_truth(self.annotations)
        return ann

    @abstractmethod
    def read_split(self, split: str) -> SplitAnnotations:
        """Parses the files of `split`; errors name the file and the row."""

    def annotation_file(self, name: str) -> Path:
        path = self.annotations / name
        if not path.is_file():
            raise DataError(f"{self.name}: annotation file {path} does not exist")
        return path

    def check_split(self, split: str) -> None:
        if split not in self.splits():
            raise DataError(f"{self.name}: unknown split {split!r}; choose one of {self.splits()}")


DATASETS: Registry[BenchmarkLoader] = Registry("dataset")
