"""Writes small real video files with PyAV for tests; frames can carry their own index.

Each "index" frame is two horizontal bands of uniform grey: the top band encodes index // 16 and
the bottom band index % 16, in steps of 16 grey levels. Uniform bands survive lossy H.264,
colour conversion, resizing, centre crops (portrait or landscape) and flips, so a test can read
back exactly which source frame a sampler returned with `read_index`. Indices go up to 255.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# Encoder chosen per file extension; every one of these ships with PyAV's FFmpeg build.
CODEC_BY_EXT = {
    ".mp4": "libx264",
    ".m4v": "libx264",
    ".mov": "libx264",
    ".mkv": "libx264",
    ".avi": "mpeg4",
    ".webm": "libvpx",
    ".mpg": "mpeg1video",
    ".wmv": "wmv2",
}
# Containers whose extension FFmpeg cannot guess from the name.
FORMAT_BY_EXT = {".m4v": "mp4", ".mpg": "mpeg", ".wmv": "asf", "": "mp4"}

MAX_INDEX = 255


def index_image(index: int, width: int, height: int) -> np.ndarray:
    """RGB uint8 [height, width, 3] whose two grey bands encode `index` (0..255)."""
    if not 0 <= index <= MAX_INDEX:
        raise ValueError(f"index {index} outside 0..{MAX_INDEX}")
    img = np.empty((height, width, 3), dtype=np.uint8)
    img[: height // 2] = 8 + 16 * (index // 16)
    img[height // 2 :] = 8 + 16 * (index % 16)
    return img


def read_index(image) -> int:
    """Inverse of `index_image` for a decoded frame: uint8 [H, W, 3] or float [3, H, W] in 0..1."""
    arr = np.asarray(image, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:
        arr = arr.transpose(1, 2, 0) * 255.0
    h = arr.shape[0]
    top = arr[int(h * 0.15) : int(h * 0.35) + 1].mean()
    bottom = arr[int(h * 0.65) : int(h * 0.85) + 1].mean()
    hi = int(round((top - 8) / 16))
    lo = int(round((bottom - 8) / 16))
    return 16 * hi + lo


def moving_image(index: int, width: int, height: int) -> np.ndarray:
    """A panning textured scene with a moving block: decodes at a realistic cost, unlike flat grey."""
    key = (width, height)
    if key not in _TEXTURES:
        rng = np.random.default_rng(0)
        small = rng.integers(0, 256, (height // 5 + 1, 2 * width // 5 + 1, 3), dtype=np.uint8)
        big = small.repeat(5, axis=0).repeat(5, axis=1)[:height, : 2 * width]
        ramp = np.linspace(0, 60, 2 * width, dtype=np.float32)[None, :, None]
        _TEXTURES[key] = np.clip(big * 0.7 + ramp, 0, 255).astype(np.uint8)
    texture = _TEXTURES[key]
    shift = (3 * index) % width
    img = np.ascontiguousarray(texture[:, shift : shift + width])
    x = (7 * index) % max(1, width - width // 4)
    y = height // 3 + int(height / 6 * np.sin(index / 10))
    img[y : y + height // 4, x : x + width // 4] = (200, 60, 40)
    grain = np.random.default_rng(index).integers(0, 16, (height, width, 1), dtype=np.uint8)
    return img + grain  # sensor-like grain keeps the bitrate near that of real 360p clips


_TEXTURES: dict[tuple[int, int], np.ndarray] = {}


def write_clip(
    path: str | Path,
    num_frames: int = 24,
    width: int = 64,
    height: int = 48,
    fps: int | Fraction = 10,
    *,
    codec: str | None = None,
    frame_fn: Callable[[int, int, int], np.ndarray] = index_image,
    gop: int | None = 8,
    bframes: int = 2,
    crf: int = 4,
    preset: str = "veryfast",
    faststart: bool = False,
    rotation: int = 0,
) -> Path:
    """Encodes `num_frames` frames of `frame_fn(i, width, height)` and returns the path.

    Defaults give libx264 with short GOPs and B-frames at near-lossless quality, so that seeking
    and frame reordering are exercised while `read_index` stays exact. `.mpg` (MPEG-1) needs a
    standard rate such as 25 or 30. `rotation` (a multiple of 90, counter-clockwise) stores the
    frames turned the other way plus a display matrix, as phones do: `width` x `height` and
    `frame_fn` describe what a correct player shows.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix.lower()
    codec = codec or CODEC_BY_EXT.get(ext, "libx264")
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", format=FORMAT_BY_EXT.get(ext), options=options) as out:
        stream = out.add_stream(codec, rate=Fraction(fps))
        turns = (rotation // 90) % 4
        stream.width, stream.height = (height, width) if turns % 2 else (width, height)
        if turns:
            stream.set_display_rotation(rotation)
        stream.pix_fmt = "yuv420p"
        if gop:
            stream.codec_context.gop_size = gop
        if codec == "libx264":
            params = f"bframes={bframes}"
            if gop:  # fixed GOP; None keeps x264's defaults (keyint 250, scene cuts)
                params += f":keyint={gop}:min-keyint={gop}:scenecut=0"
            stream.options = {"crf": str(crf), "preset": preset, "x264-params": params}
        elif codec in ("libvpx", "libvpx-vp9"):
            stream.options = {"crf": "4", "b": "2M", "deadline": "realtime", "cpu-used": "8"}
        else:
            stream.codec_context.qscale = 2  # constant quality 2: near lossless
        for i in range(num_frames):
            img = np.ascontiguousarray(np.rot90(frame_fn(i, width, height), -turns))
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = None
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def write_audio_only(path: str | Path, seconds: float = 0.5) -> Path:
    """An mp4 holding only an AAC track: opens fine, has no video stream."""
    path = Path(path)
    rate = 16000
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=rate, layout="mono")
        samples = np.zeros((1, int(rate * seconds)), dtype=np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = rate
        out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def truncate_file(path: str | Path, fraction: float = 0.5) -> Path:
    """Cuts a file to `fraction` of its size in place, like an interrupted download."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def write_garbage(path: str | Path, size: int = 4096, seed: int = 0) -> Path:
    """Random bytes under a video's name: what a failed download often leaves behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path


def write_timed_clip(
    path: str | Path,
    pts: list[int],
    time_base: Fraction = Fraction(1, 10),
    *,
    labels: list[int] | None = None,
    codec: str | None = None,
    bframes: int = 0,
    gop: int = 8,
    width: int = 64,
    height: int = 48,
) -> Path:
    """Frames stored at explicit timestamps `pts` (in `time_base`): gaps, variable rate.

    Frame k shows `index_image(labels[k])` (default: its own timestamp, so a test reads back
    where on the timeline the shown frame was captured). In AVI, FFmpeg fills timestamp gaps
    with null chunks, the way dropped frames are stored.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ext = path.suffix.lower()
    codec = codec or CODEC_BY_EXT.get(ext, "libx264")
    labels = list(pts) if labels is None else labels
    with av.open(str(path), "w", format=FORMAT_BY_EXT.get(ext)) as out:
        stream = out.add_stream(codec, rate=round(1 / time_base))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = time_base
        stream.time_base = time_base
        stream.codec_context.gop_size = gop
        if codec == "libx264":
            params = f"bframes={bframes}:keyint={gop}:min-keyint={gop}:scenecut=0"
            stream.options = {"crf": "4", "preset": "veryfast", "x264-params": params}
        else:
            stream.codec_context.qscale = 2
            stream.codec_context.max_b_frames = bframes
        for p, label in zip(pts, labels):
            frame = av.VideoFrame.from_ndarray(index_image(label, width, height), format="rgb24")
            frame.pts, frame.time_base = p, time_base
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


_DIVX_PACKED = b"\0\0\1\xb2DivX503b1393p"  # user data by which decoders recognise packed B-frames
_VOP = b"\0\0\1\xb6"


def _not_coded_vop(resolution: int, time: int) -> bytes:
    """An MPEG-4 VOP with vop_coded=0, the placeholder DivX stores after a packed pair."""
    width = max(1, (resolution - 1).bit_length())
    # type P, modulo_time_base 0, marker, time increment, marker, vop_coded 0
    bits = "01" + "0" + "1" + format(time % resolution, f"0{width}b") + "1" + "0"
    pad = 8 - len(bits) % 8
    bits += "0" + "1" * (pad - 1)  # stuffing up to the byte boundary
    return _VOP + int(bits, 2).to_bytes(len(bits) // 8, "big")


def write_packed_divx(path: str | Path, num_frames: int = 40, fps: int = 10, gop: int = 12,
                      width: int = 64, height: int = 48) -> Path:
    """An AVI of MPEG-4 part 2 with 'packed' B-frames, as DivX 5 and Xvid wrote them.

    FFmpeg's encoder emits I P B P B ... in decode order; here each B-frame travels in the chunk
    of the reference frame before it and a not-coded VOP fills its own chunk, so every chunk
    yields one frame. Decoders return those frames in display order but with the timestamps of
    the neighbouring chunks: 1, 3, 2, 5, 4, ...
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ctx = av.CodecContext.create("mpeg4", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base, ctx.framerate = Fraction(1, fps), Fraction(fps)
    ctx.gop_size, ctx.max_b_frames, ctx.qscale = gop, 1, 2
    packets = []
    for i in range(num_frames + 1):
        frame = None
        if i < num_frames:
            frame = av.VideoFrame.from_ndarray(index_image(i, width, height), format="rgb24")
            frame.pts = i
        packets += [(p.pts, p.is_keyframe, bytes(p)) for p in ctx.encode(frame)]
    chunks: list[tuple[bytes, bool]] = []
    k = 0
    while k < len(packets):
        pts, key, data = packets[k]
        if key:
            at = data.index(_VOP)
            data = data[:at] + _DIVX_PACKED + data[at:]
        if k + 1 < len(packets) and packets[k + 1][0] < pts:  # a B-frame shown before this one
            chunks += [(data + packets[k + 1][2], key), (_not_coded_vop(fps, pts), False)]
            k += 2
        else:
            chunks.append((data, key))
            k += 1
    with av.open(str(path), "w", format="avi") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = Fraction(1, fps)
        stream.codec_tag = "DX50"
        for k, (data, key) in enumerate(chunks):
            packet = av.Packet(data)
            packet.stream = stream
            packet.pts = packet.dts = k
            packet.time_base = Fraction(1, fps)
            packet.is_keyframe = key
            out.mux(packet)
    return path


def corrupt_packet(path: str | Path, index: int) -> Path:
    """Overwrites the start of the `index`-th video packet (file order) with 0xFF bytes in place.

    The header and packet table stay intact, so the file opens and its first frames decode; only
    decoding reaches the damage, as with a disk or transfer error in the middle of a file.
    """
    path = Path(path)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        packets = [(p.pos, p.size) for p in container.demux(stream) if p.size]
    pos, size = packets[index]
    data = bytearray(path.read_bytes())
    data[pos : pos + size] = b"\xff" * size
    path.write_bytes(bytes(data))
    return path
