"""DataLoader throughput (clips/s) of FrameSampler over a folder of generated clips.

Measures raw 640x360 30 fps clips (x264 default GOP, as downloads come) and the same clips after
`calm prepare-videos` (--prepared-fps, short side 224, a keyframe per second).

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

from calm.data.prepare import EncodeSettings, prepare_videos  # noqa: E402
from calm.data.video import FrameSampler, FrameSpec  # noqa: E402
from tests.videos import moving_image, write_clip  # noqa: E402


class ClipDataset(Dataset):
    def __init__(self, paths, sampler: FrameSampler):
        self.paths = list(paths)
        self.sampler = sampler

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        return self.sampler(self.paths[i])


def _one_thread(_):
    torch.set_num_threads(1)


def clips_per_second(paths, spec: FrameSpec, mode: str, workers: int, batch: int, passes: int):
    sampler = FrameSampler(spec, mode)
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

    spec = FrameSpec(num_frames=args.frames, image_size=args.size)
    print(
        f"{args.clips} clips x {args.seconds:g}s, T={args.frames}, S={args.size}, "
        f"{args.workers} workers, batch {args.batch_size}"
    )
    for name, ps in [
        ("raw 640x360 30fps", paths),
        (f"prepared {args.prepared_fps:g}fps", prepared),
    ]:
        for mode in ("test", "train"):
            rate = clips_per_second(ps, spec, mode, args.workers, args.batch_size, args.passes)
            print(f"  {name:22s} {mode:5s} {rate:7.2f} clips/s", flush=True)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
