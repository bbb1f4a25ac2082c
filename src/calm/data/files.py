"""Video files outside any benchmark: sampled frames, their times and a thumbnail, per file.

`calm index` and `calm.load(...).encode_videos` decode arbitrary user folders, where some files
are always broken. A file that cannot be decoded yields a `FileItem` carrying the reason instead
of frames, so one bad download never stops a run of thousands and the caller lists it.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

from calm.data.errors import DataError
from calm.data.video import FrameSampler, FrameSpec, open_video, read_frame_table

THUMBNAIL_QUALITY = 85


@dataclass
class FileItem:
    """One file's sampled frames [T, 3, S, S] and mask [T], or `error` when it failed."""

    index: int
    path: str
    frames: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    times: list[float] | None = None  # seconds of each sampled frame, in order
    duration: float = 0.0
    thumbnail: bytes | None = None  # JPEG
    error: str | None = None


def sampled_frame_times(sampler: FrameSampler, path) -> tuple[list[float], float]:
    """(seconds of each frame `sampler` decodes from `path`, the clip's duration in seconds).

    Times are the frames' presentation timestamps relative to the stream start, so a player
    seeking to one shows that frame; files without timestamps fall back to index / frame rate.
    """
    container, stream = open_video(path)
    with container:
        table = read_frame_table(container, stream, path)
        wanted = sampler.frame_indices(table)
        rate = float(stream.average_rate or stream.guessed_rate or 0) or 25.0
        if table.pts is not None and stream.time_base:
            base = float(stream.time_base)
            start = table.pts[0] if stream.start_time is None else min(stream.start_time, table.pts[0])
            times = [(table.pts[i] - start) * base for i in wanted]
            duration = (table.pts[-1] - start) * base + 1.0 / rate
        else:
            times = [i / rate for i in wanted]
            duration = table.count / rate
    return [round(t, 4) for t in times], round(duration, 4)


def jpeg_thumbnail(sampler: FrameSampler, path) -> bytes:
    """The clip's middle frame, centre-cropped square, as JPEG bytes."""
    from PIL import Image

    image = sampler.decode_uint8(path)[0]
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY)
    return buffer.getvalue()


class VideoFiles(Dataset):
    """Frames, frame times and (optionally) a thumbnail of each file, errors as data.

    Any exception while reading a file becomes that item's `error` ("ExceptionType: message"):
    user folders hold files of every kind of brokenness, and a run over them must finish.
    """

    def __init__(self, paths: Sequence, spec: FrameSpec, thumbnail_size: int | None = None):
        self.paths = [str(p) for p in paths]
        self.spec = spec
        self.sampler = FrameSampler(spec, mode="test")
        self.thumbnails = (
            FrameSampler(FrameSpec(num_frames=1, image_size=thumbnail_size), mode="test")
            if thumbnail_size
            else None
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> FileItem:
        path = self.paths[index]
        try:
            frames, mask = self.sampler(path)
            times, duration = sampled_frame_times(self.sampler, path)
            thumb = jpeg_thumbnail(self.thumbnails, path) if self.thumbnails else None
        except DataError as exc:
            return FileItem(index, path, error=getattr(exc, "reason", str(exc)))
        except Exception as exc:  # noqa: BLE001 - a broken user file must not stop the run
            return FileItem(index, path, error=f"{type(exc).__name__}: {exc}")
        pad = [float("nan")] * (self.spec.num_frames - len(times))
        return FileItem(index, path, frames, mask, times + pad, duration, thumb)


def collate_files(items: list[FileItem]) -> dict:
    """Stacks the decoded items; failed ones go to `failed` as (path, reason)."""
    ok = [it for it in items if it.error is None]
    return {
        "paths": [it.path for it in ok],
        "frames": torch.stack([it.frames for it in ok]) if ok else None,
        "mask": torch.stack([it.mask for it in ok]) if ok else None,
        "times": torch.tensor([it.times for it in ok], dtype=torch.float32) if ok else None,
        "durations": torch.tensor([it.duration for it in ok], dtype=torch.float32),
        "thumbnails": [it.thumbnail for it in ok],
        "failed": [(it.path, it.error) for it in items if it.error is not None],
    }


@dataclass
class FolderScan:
    """The video files of a folder, and what was left out of them, as (path, reason)."""

    videos: list[Path]
    left_out: list[tuple[Path, str]]


def scan_videos(root: Path) -> FolderScan:
    """Video files under `root` (recursively, sorted) whose real location is inside `root`.

    Symbolic links are left out, each with its reason, when they lead out of the folder (an
    index of a folder holds only that folder), when their target is gone, or when they lead to
    a folder (not followed: inside, it would index files twice; outside, it leaves the folder).
    """
    from calm.data.prepare import find_videos

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    real_root = root.resolve()
    videos, left_out = [], []
    for path in find_videos(root):
        if not path.exists():
            left_out.append((path, f"symbolic link to {os.readlink(path)}, which does not exist"))
        elif not path.resolve().is_relative_to(real_root):
            left_out.append((path, f"symbolic link to {path.resolve()}, outside {real_root}"))
        else:
            videos.append(path)
    for folder, dirs, _ in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in dirs:
            link = Path(folder) / name
            if link.is_symlink():
                left_out.append((link, f"symbolic link to the folder {link.resolve()}; links to "
                                       "folders are not followed"))
    return FolderScan(videos, sorted(left_out))
