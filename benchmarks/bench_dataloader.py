"""DataLoader throughput (clips/s, and per worker core) over a folder of generated clips.

Measures raw 640x360 30 fps clips (x264 default GOP, as downloads come), the same clips after
`calm prepare-videos` (--prepared-fps, short side 224, a keyframe per second) and the frame cache
`calm prepare-frames` writes from the raw clips (T frames x --per-segment candidates, JPEG), with
the disk each takes per clip. Items are uint8 clips, as the datasets yield them (the engine
normalises per batch on the device). Goal for the cache: >= 40 clips/s per core in train mode.

    python benchmarks/bench_dataloader.py --clips 16 --seconds 10 --workers 2
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.videos

from calm.data.frame_cache import CacheSettings, FrameCache  # noqa: E402
from calm.data.prepare import EncodeSettings, prepare_videos  # noqa: E402
from calm.data.prepare_frames import prepare_frames  # noqa: E402
from calm.data.video import FrameSampler, FrameSpec  # noqa: E402
from tests.videos import moving_image, write_clip  # noqa: E402


class ClipDataset(Dataset):
    def __init__(self, paths, sampler: FrameSampler):
        self.paths = list(paths)
        self.sampler = sampler

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.sampler.clip(self.paths[i])


def _one_thread(_):
    torch.set_num_threads(1)


def clips_per_second(paths, sampler, workers: int, batch: int, passes: int):
    spec, mode = sampler.spec, sampler.mode
    loader = DataLoader(
        ClipDataset(paths, sampler),
        batch_size=batch,
        num_workers=workers,
        persistent_workers=workers > 0,
        worker_init_fn=_one_thread,
        shuffle=mode == "train",
    )
    for _ in loader:  # warm-up pass: worker start-up and page cache
        pass
    best = float("inf")
    for _ in range(passes):
        t0 = time.perf_counter()
        n = 0
        for frames, _mask in loader:
            n += frames.shape[0]
        best = min(best, time.perf_counter() - t0)
    assert frames.shape[1:] == (spec.num_frames, 3, spec.image_size, spec.image_size)
    return n / best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--clips", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--prepared-fps", type=float, default=10.0)
    ap.add_argument("--per-segment", type=int, default=3, help="frame cache train candidates")
    ap.add_argument("--cache-format", choices=["jpeg", "raw"], default="jpeg")
    ap.add_argument("--dir", type=Path, default=None, help="keep clips here between runs")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    tmp = None
    folder = args.dir
    if folder is None:
        tmp = tempfile.TemporaryDirectory()
        folder = Path(tmp.name)
    raw_dir = folder / "raw"
    paths = []
    t0 = time.perf_counter()
    for i in range(args.clips):
        path = raw_dir / f"clip{i:03d}.mp4"
        if not path.exists():
            write_clip(
                path,
                int(args.seconds * 30),
                640,
                360,
                30,
                frame_fn=lambda k, w, h, i=i: moving_image(k + 1000 * i, w, h),
                gop=None,
                bframes=3,
                crf=23,
            )
        paths.append(path)
    print(f"clips ready in {time.perf_counter() - t0:.1f}s", flush=True)
    prep_dir = folder / f"prepared_{args.prepared_fps:g}fps"
    t0 = time.perf_counter()
    settings = EncodeSettings(fps=args.prepared_fps, short_side=args.size)
    prepare_videos(raw_dir, prep_dir, settings, workers=args.workers, progress=False)
    print(f"prepare-videos in {time.perf_counter() - t0:.1f}s", flush=True)
    prepared = sorted(prep_dir.glob("*.mp4"))
    cache_dir = folder / f"cache_T{args.frames}_K{args.per_segment}_{args.size}_{args.cache_format}"
    t0 = time.perf_counter()
    cache_settings = CacheSettings(args.frames, args.per_segment, args.size, args.cache_format)
    prepare_frames(raw_dir, cache_dir, cache_settings, workers=args.workers, progress=False)
    print(f"prepare-frames in {time.perf_counter() - t0:.1f}s", flush=True)
    cache = FrameCache(cache_dir)

    spec = FrameSpec(num_frames=args.frames, image_size=args.size)
    cores = max(1, args.workers)
    print(
        f"{args.clips} clips x {args.seconds:g}s, T={args.frames}, S={args.size}, "
        f"{args.workers} workers, batch {args.batch_size}; per core = clips/s / {cores}"
    )
    print(f"  {'source':30s} {'mode':5s} {'clips/s':>8s} {'per core':>9s} {'disk/clip':>10s}")
    sources = [
        ("raw 640x360 30fps", paths, lambda mode: FrameSampler(spec, mode), _mib(paths)),
        (f"prepared {args.prepared_fps:g}fps", prepared,
         lambda mode: FrameSampler(spec, mode), _mib(prepared)),
        (f"frame cache K={args.per_segment} {args.cache_format}", paths,
         lambda mode: cache.sampler(spec, raw_dir, mode), _mib(cache_dir.rglob("*"))),
    ]
    for name, ps, make, disk in sources:
        for mode in ("test", "train"):
            rate = clips_per_second(ps, make(mode), args.workers, args.batch_size, args.passes)
            print(f"  {name:30s} {mode:5s} {rate:8.2f} {rate / cores:9.2f} "
                  f"{disk / len(ps):8.3f} MiB", flush=True)
    if tmp is not None:
        tmp.cleanup()
    return 0


def _mib(paths) -> float:
    return sum(Path(p).stat().st_size for p in paths if Path(p).is_file()) / 2**20


if __name__ == "__main__":
    raise SystemExit(main())
