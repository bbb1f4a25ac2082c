"""Re-encodes a folder of videos to small H.264 mp4s (fixed fps, short side S) with PyAV.

Training reads every clip many times; decoding a 360p 30 fps original costs several times more
than a prepared 224 px clip at a few fps. The output keeps the source's relative layout with the
extension replaced, so loaders find `<id>.mp4` under the prepared root. Each output is written
to `<name>.part` and renamed when complete, so an existing output is always a finished one and
reruns skip it. Audio is dropped: retrieval never reads it.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
from tqdm import tqdm

from calm.data.errors import DataError, VideoDecodeError
from calm.data.video import open_video, read_frame_table

VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".3gp", ".flv"}
)
MANIFEST = "manifest.jsonl"
CONTAINER_BY_EXT = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}


@dataclass(frozen=True)
class EncodeSettings:
    fps: float
    short_side: int
    crf: int = 23
    preset: str = "veryfast"
    gop_seconds: float = 1.0  # a keyframe per second: FrameSampler then seeks instead of decoding
    ext: str = ".mp4"

    def __post_init__(self):
        if self.ext not in CONTAINER_BY_EXT:
            raise DataError(
                f"output extension must be one of {sorted(CONTAINER_BY_EXT)}, got {self.ext!r}"
            )
        if self.fps <= 0:
            raise DataError(f"fps must be positive, got {self.fps}")
        if self.short_side < 2 or self.short_side % 2:
            raise DataError(
                f"short side must be an even number >= 2 (H.264 4:2:0 needs even sizes), "
                f"got {self.short_side}"
            )


@dataclass
class Result:
    src: str
    dst: str
    status: str  # ok | failed | skipped
    reason: str = ""
    frames: int = 0
    seconds: float = 0.0  # duration of the output video
    elapsed: float = 0.0  # wall time spent on this file


def opens_as_video(path: Path) -> bool:
    """True when PyAV opens `path` and finds a video stream (for files without an extension)."""
    try:
        with av.open(str(path)) as container:
            return bool(container.streams.video)
    except (av.FFmpegError, OSError, UnicodeDecodeError):
        return False


def find_videos(src: Path, skip: Path | None = None) -> list[Path]:
    """Video files under `src`, sorted: known extensions, plus extension-less files PyAV opens."""
    found = []
    for root, dirs, files in os.walk(src):
        root_path = Path(root)
        dirs[:] = sorted(
            d
            for d in dirs
            if not d.startswith(".") and (skip is None or (root_path / d).resolve() != skip)
        )
        for name in sorted(files):
            path = root_path / name
            if name.startswith(".") or name.endswith(".part"):
                continue
            ext = path.suffix.lower()
            if ext in VIDEO_EXTENSIONS or (ext == "" and opens_as_video(path)):
                found.append(path)
    return found


def output_size(width: int, height: int, sar: float, short_side: int) -> tuple[int, int]:
    """Display size scaled so the short side is `short_side`; the long side rounded to even."""
    disp_w = width * (sar or 1.0)
    long_side = max(2, 2 * round(max(disp_w, height) * short_side / min(disp_w, height) / 2))
    return (short_side, long_side) if disp_w <= height else (long_side, short_side)


def transcode(src: Path, dst: Path, settings: EncodeSettings) -> tuple[int, float]:
    """Writes `dst` (via dst.part); returns (frames written, output seconds)."""
    if not src.is_file():
        raise VideoDecodeError(src, "file does not exist")
    part = dst.with_name(dst.name + ".part")
    dst.parent.mkdir(parents=True, exist_ok=True)
    rate = Fraction(settings.fps).limit_denominator(1001)
    try:
        try:
            source = av.open(str(src))
        except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
            raise VideoDecodeError(src, f"PyAV cannot open it as a video: {exc}") from exc
        with source:
            if not source.streams.video:
                raise VideoDecodeError(src, "no video stream")
            stream = source.streams.video[0]
            stream.thread_count = 1  # parallelism comes from worker processes
            frames = _encode(source, stream, part, rate, settings, src, _decoder_order_pts(src))
        if frames == 0:
            raise VideoDecodeError(src, "no decodable video frames")
        os.replace(part, dst)
    finally:
        part.unlink(missing_ok=True)
    return frames, float(frames / rate)


def _decoder_order_pts(src: Path) -> list[int] | None:
    """Presentation timestamps for the n-th decoded frame, where FFmpeg's are decode positions.

    AVI with B-frames whose chunk numbers arrive in file order (DivX packed B-frames, H.264 in
    AVI): the decoder returns frames in display order but labelled with neighbouring chunks'
    numbers, and the fps filter would drop and repeat frames. None: the frames' own timestamps
    hold (see calm.data.timeline.read_frame_table).
    """
    try:
        container, stream = open_video(src)
        with container:
            table = read_frame_table(container, stream, src)
    except VideoDecodeError:
        return None  # the transcode itself reports what is wrong
    return table.pts if table.by_order and table.pts is not None else None


def _encode(
    source, stream, part: Path, rate: Fraction, settings: EncodeSettings, src,
    order_pts: list[int] | None = None,
) -> int:
    sar = float(stream.sample_aspect_ratio) if stream.sample_aspect_ratio else 1.0
    fmt = CONTAINER_BY_EXT[settings.ext]
    # Index first: truncation is detectable from the header and seeks need no extra reads.
    options = {"movflags": "faststart"} if fmt in ("mp4", "mov") else {}
    written = 0
    with av.open(str(part), "w", format=fmt, options=options) as out:
        graph = ostream = None
        in_rate = float(stream.average_rate or stream.guessed_rate or rate)
        try:
            decoded = source.decode(stream)
            for count, frame in enumerate(_chain(decoded, [None])):
                if frame is not None and graph is None:
                    w, h = output_size(frame.width, frame.height, sar, settings.short_side)
                    graph = _filter_graph(frame, stream.time_base, sar, rate, w, h)
                    ostream = _output_stream(out, rate, w, h, settings)
                    if frame.rotation:  # keep the display matrix; FrameSampler applies it
                        ostream.set_display_rotation(frame.rotation)
                if graph is None:
                    break
                if frame is not None and order_pts is not None and count < len(order_pts):
                    frame.pts = order_pts[count]  # the n-th frame out is the n-th shown
                if frame is not None and frame.pts is None:  # e.g. AVI without timestamps
                    frame.pts = round(count / in_rate / stream.time_base)
                graph.push(frame)
                for filtered in _pull_all(graph):
                    filtered.pts = written
                    filtered.time_base = 1 / rate
                    out.mux(ostream.encode(filtered))
                    written += 1
        except av.FFmpegError as exc:
            raise VideoDecodeError(src, f"decoding failed after {written} frames: {exc}") from exc
        if ostream is not None:
            out.mux(ostream.encode(None))
    return written


def _chain(*parts: Iterable) -> Iterator:
    for part in parts:
        yield from part


def _filter_graph(frame, time_base, sar: float, rate: Fraction, w: int, h: int):
    """FFmpeg's fps filter picks the frames, swscale scales them (bicubic), square pixels."""
    graph = av.filter.Graph()
    sar_fr = Fraction(sar).limit_denominator(10000)
    nodes = [
        graph.add(
            "buffer",
            video_size=f"{frame.width}x{frame.height}",
            pix_fmt=frame.format.name,
            time_base=str(frame.time_base or time_base),
            pixel_aspect=f"{sar_fr.numerator}/{sar_fr.denominator}",
        ),
        # round=up: output frame k is the source frame on screen at time k/fps (sample and hold)
        graph.add("fps", fps=f"{rate.numerator}/{rate.denominator}", round="up"),
        graph.add("scale", f"{w}:{h}:flags=bicubic"),
        graph.add("setsar", "1"),
        graph.add("format", "yuv420p"),
        graph.add("buffersink"),
    ]
    graph.link_nodes(*nodes).configure()
    return graph


def _pull_all(graph) -> Iterator:
    while True:
        try:
            yield graph.pull()
        except (av.BlockingIOError, av.EOFError):
            return


def _output_stream(out, rate: Fraction, w: int, h: int, settings: EncodeSettings):
    ostream = out.add_stream("libx264", rate=rate)
    ostream.width, ostream.height = w, h
    ostream.pix_fmt = "yuv420p"
    ostream.time_base = 1 / rate
    gop = max(1, round(float(rate) * settings.gop_seconds))
    ostream.codec_context.gop_size = gop
    ostream.codec_context.thread_count = 1
    ostream.options = {
        "crf": str(settings.crf),
        "preset": settings.preset,
        "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0",
    }
    return ostream


def _output_info(path: Path) -> tuple[int, float]:
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            frames = int(stream.frames or 0)
            rate = float(stream.average_rate or 0)
            return frames, (frames / rate if rate else 0.0)
    except (av.FFmpegError, OSError, IndexError):
        return 0, 0.0


def _work(task: tuple[str, str, EncodeSettings]) -> Result:
    """One file in a worker process: never raises, records the failure instead."""
    src, dst, settings = task
    t0 = time.perf_counter()
    try:
        frames, seconds = transcode(Path(src), Path(dst), settings)
        return Result(src, dst, "ok", "", frames, round(seconds, 3), time.perf_counter() - t0)
    except Exception as exc:  # one bad file must not stop the others; the manifest says why
        reason = exc.reason if isinstance(exc, VideoDecodeError) else f"{type(exc).__name__}: {exc}"
        return Result(src, dst, "failed", reason, 0, 0.0, time.perf_counter() - t0)


def prepare_videos(
    src: str | Path,
    dst: str | Path,
    settings: EncodeSettings,
    workers: int = 2,
    progress: bool = True,
) -> list[Result]:
    """Re-encodes every video under `src` into `dst` and writes dst/manifest.jsonl."""
    src, dst = Path(src), Path(dst)
    if not src.is_dir():
        raise DataError(f"source folder {src} does not exist")
    dst.mkdir(parents=True, exist_ok=True)
    videos = find_videos(src, skip=dst.resolve())
    results: list[Result] = []
    tasks = []
    claimed: dict[Path, Path] = {}
    for path in videos:
        rel = path.relative_to(src)
        out = dst / (rel.with_suffix(settings.ext) if rel.suffix else Path(f"{rel}{settings.ext}"))
        if out in claimed:
            results.append(
                Result(str(path), str(out), "failed", f"output name also used by {claimed[out]}")
            )
            continue
        claimed[out] = path
        if out.is_file():
            frames, seconds = _output_info(out)
            results.append(Result(str(path), str(out), "skipped", "output exists", frames, seconds))
        else:
            tasks.append((str(path), str(out), settings))

    bar = _progress(len(videos), progress)
    bar.update(len(results))
    if workers > 1 and len(tasks) > 1:
        ctx = multiprocessing.get_context("spawn" if sys.platform != "linux" else "fork")
        with ctx.Pool(min(workers, len(tasks))) as pool:
            for result in pool.imap_unordered(_work, tasks):
                results.append(result)
                bar.update(1)
    else:
        for task in tasks:
            results.append(_work(task))
            bar.update(1)
    bar.close()

    results.sort(key=lambda r: r.src)
    with open(dst / MANIFEST, "w") as f:
        for r in results:
            f.write(json.dumps(asdict(r)) + "\n")
    return results


def _progress(total: int, enabled: bool):
    return tqdm(total=total, unit="video", disable=not enabled, dynamic_ncols=True)


def read_manifest(dst: str | Path) -> list[dict]:
    """The records of dst/manifest.jsonl."""
    with open(Path(dst) / MANIFEST) as f:
        return [json.loads(line) for line in f if line.strip()]
