"""Clips/s of FrameSampler against the common decode-everything approach, in one process.

The reference decodes every frame, keeps one per second (converted to RGB and resized as public
code does with PIL/torchvision) and then subsamples T of those. Ours computes T indices first
and decodes only up to them. Also compares our seek rules (sequential, seek_gap values) and the
NONREF skip, which is how DEFAULT_SEEK_GAP in calm.data.video was chosen.

    python benchmarks/bench_sampler.py --clips 4 --seconds 30
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.videos

from calm.data.video import FrameSampler, FrameSpec  # noqa: E402
from tests.videos import moving_image, write_clip  # noqa: E402


def make_clips(folder: Path, n: int, seconds: float, width: int, height: int, fps: int, gop):
    paths = []
    for i in range(n):
        path = folder / f"clip{i}_gop{gop or 'x264'}.mp4"
        if not path.exists():
            t0 = time.perf_counter()
            write_clip(
                path,
                int(seconds * fps),
                width,
                height,
                fps,
                frame_fn=lambda k, w, h, i=i: moving_image(k + 1000 * i, w, h),
                gop=gop,
                bframes=3,
                crf=23,
                preset="veryfast",
            )
            print(f"  wrote {path.name} in {time.perf_counter() - t0:.1f}s", flush=True)
        paths.append(path)
    return paths


def reference_sampler(spec: FrameSpec, threads: int = 1, convert_all: bool = False):
    """Decode every frame, keep 1 frame/s, preprocess those, then take T evenly spaced."""
    size = spec.image_size
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)

    def run(path):
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_count = threads
            if threads != 1:
                stream.thread_type = "AUTO"
            every = max(1, round(float(stream.average_rate or 1)))
            kept = []
            for i, frame in enumerate(container.decode(stream)):
                if convert_all:  # cv2.VideoCapture.read() converts every frame it decodes
                    rgb = frame.to_ndarray(format="rgb24")
                if i % every == 0:
                    kept.append(rgb if convert_all else frame.to_ndarray(format="rgb24"))
        x = torch.from_numpy(np.stack(kept)).permute(0, 3, 1, 2).float() / 255.0
        h, w = x.shape[-2:]
        scale = size / min(h, w)
        x = torch.nn.functional.interpolate(
            x, size=(round(h * scale), round(w * scale)), mode="bicubic", antialias=True
        )
        top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
        x = (x[..., top : top + size, left : left + size] - mean) / std
        pick = np.linspace(0, len(x) - 1, spec.num_frames).round().astype(int)
        return x[pick], torch.ones(spec.num_frames, dtype=torch.bool)

    return run


def clips_per_second(variants: dict, paths, repeats: int) -> dict[str, tuple[float, float]]:
    """(clips per wall second, clips per CPU second), best of `repeats` interleaved passes.

    Everything runs on this one thread, so CPU time is the work done and stays meaningful on a
    shared machine where wall time swings with other people's jobs.
    """
    wall = {name: float("inf") for name in variants}
    cpu = dict(wall)
    for _ in range(repeats):
        for name, fn in variants.items():
            w0, c0 = time.perf_counter(), time.process_time()
            for p in paths:
                fn(p)
            wall[name] = min(wall[name], time.perf_counter() - w0)
            cpu[name] = min(cpu[name], time.process_time() - c0)
    return {name: (len(paths) / wall[name], len(paths) / cpu[name]) for name in variants}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--fps", type=int, default=30)
    ap.add_argument("--gops", default="x264,60,30", help="comma list; x264 = x264 defaults (250)")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="keep clips here between runs")
    ap.add_argument("--quick", action="store_true", help="only ours vs the reference")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    spec = FrameSpec(num_frames=args.frames, image_size=args.size)
    tmp = None
    folder = args.dir
    if folder is None:
        tmp = tempfile.TemporaryDirectory()
        folder = Path(tmp.name)
    folder.mkdir(parents=True, exist_ok=True)
    print(
        f"{args.clips} clips x {args.seconds:g}s, {args.width}x{args.height} @ {args.fps} fps, "
        f"T={args.frames}, S={args.size}, decoder threads={args.threads}"
    )
    ours = FrameSampler(spec, "test", threads=args.threads)
    variants = {"ours (default)": ours}
    if not args.quick:
        variants.update(
            {
                "sequential, no skip": FrameSampler(
                    spec, threads=args.threads, seek_gap=None, skip_nonref=False
                ),
                "sequential + NONREF": FrameSampler(spec, threads=args.threads, seek_gap=None),
                "seek gap 0 + NONREF": FrameSampler(spec, threads=args.threads, seek_gap=0),
                "seek gap 32 + NONREF": FrameSampler(spec, threads=args.threads, seek_gap=32),
                "seek gap 8, no skip": FrameSampler(spec, threads=args.threads, skip_nonref=False),
            }
        )
    variants["reference"] = reference_sampler(spec, args.threads)
    if not args.quick:
        variants["reference, RGB every frame"] = reference_sampler(spec, args.threads, True)

    for gop in args.gops.split(","):
        gop_frames = None if gop == "x264" else int(gop)
        paths = make_clips(
            folder, args.clips, args.seconds, args.width, args.height, args.fps, gop_frames
        )
        for fn in variants.values():  # warm caches and the page cache
            fn(paths[0])
        rates = clips_per_second(variants, paths, args.repeats)
        ref_wall, ref_cpu = rates["reference"]
        print(f"GOP {gop}:                     clips/s (wall)  clips/CPU-s  vs reference (CPU)")
        for name, (w, c) in rates.items():
            print(f"  {name:28s} {w:7.2f}      {c:7.2f}      {c / ref_cpu:5.2f}x")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
