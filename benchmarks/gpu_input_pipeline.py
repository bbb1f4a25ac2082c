"""Training from real video files: does the input pipeline keep the GPU busy?

Writes synthetic clips as real x264 mp4 files (short side 224, 30 fps, x264's default GOP, a
panning textured scene), writes their frame cache with `prepare-frames` on every core, then
trains CALM (ViT-B/32, xpool, bf16 on CUDA) through the real path: PairDataset -> collate ->
DataLoader (worker processes, pinned memory) -> `train_step`, which moves the uint8 batch to the
device and normalises it there. Each source (the frame cache, then direct decoding of the video
files) reports clips/s and the fraction of wall time the device spent on the training steps.

"Busy" on CUDA is the sum of CUDA-event time from the start to the end of each step's work
(copy, forward, backward, optimizer) over the wall time of the measured steps: the rest is time
the device waited for the next batch. On the CPU it is the time inside `train_step`. Goal: >= 90%
busy at batch 128 from the cache on one H100/H200.

    python benchmarks/gpu_input_pipeline.py                      # GPU: 256 clips, batch 128
    python benchmarks/gpu_input_pipeline.py --tiny               # CPU smoke run, calm-micro, 32 px
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.videos

from calm.config import ExperimentConfig, from_dict  # noqa: E402
from calm.data.annotations import SplitAnnotations, TextRecord, VideoRecord  # noqa: E402
from calm.data.frame_cache import CacheSettings, FrameCache  # noqa: E402
from calm.data.prepare_frames import prepare_frames  # noqa: E402
from calm.data.samples import PairDataset, collate  # noqa: E402
from calm.data.video import FrameSampler, FrameSpec  # noqa: E402
from calm.engine.inputs import Tokenize  # noqa: E402
from calm.engine.optim import build_optimizer  # noqa: E402
from calm.engine.state import TrainState  # noqa: E402
from calm.engine.train import train_step  # noqa: E402
from calm.model.losses import CALMLoss  # noqa: E402
from calm.model.retrieval import CALM  # noqa: E402
from tests.videos import moving_image, write_clip  # noqa: E402

CAPTIONS_PER_CLIP = 20
PREFETCH = 2  # batches in flight per worker


def _write_one(task: tuple[str, int, int, int, int]) -> str:
    path, index, frames, width, height = task
    if not Path(path).exists():
        write_clip(path, frames, width, height, 30,
                   frame_fn=lambda k, w, h: moving_image(k + 1000 * index, w, h),
                   gop=None, bframes=3, crf=23)
    return path


def make_clips(folder: Path, count: int, seconds: float, short: int, workers: int) -> list[Path]:
    """`count` mp4 clips at 16:9 with the given short side, written in parallel."""
    long = 2 * round(short * 16 / 9 / 2)
    tasks = [(str(folder / f"clip{i:04d}.mp4"), i, int(seconds * 30), long, short)
             for i in range(count)]
    folder.mkdir(parents=True, exist_ok=True)
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return [Path(p) for p in pool.map(_write_one, tasks)]


def annotations(paths: list[Path]) -> SplitAnnotations:
    videos = [VideoRecord(p.stem, p) for p in paths]
    texts = [TextRecord(f"a scene {v} pans past a red block, take {k}", v, f"{v}-{k}")
             for v in range(len(paths)) for k in range(CAPTIONS_PER_CLIP)]
    return SplitAnnotations("synthetic", "train", videos, texts)


def build_model(backbone: str, device: torch.device, precision: str):
    cfg = from_dict(ExperimentConfig, {
        "model": {"backbone": {"name": backbone}, "fusion": {"name": "xpool"},
                  "alignment": {"name": "vae"}},
        "train": {"precision": precision, "lr": 1e-5, "backbone_lr": 1e-6},
    })
    model = CALM.from_config(cfg.model).to(device)
    return model, cfg


def _fit_shared_memory(workers: int, batch: int, spec: FrameSpec) -> int:
    """Workers hand batches over in /dev/shm (PREFETCH each in flight): keep them within half."""
    try:
        free = shutil.disk_usage("/dev/shm").free
    except OSError:
        return workers
    batch_bytes = batch * spec.num_frames * 3 * spec.image_size**2
    fit = max(1, int(free / 2 // (PREFETCH * batch_bytes)))
    if fit < workers:
        print(f"/dev/shm has {free / 2**30:.1f} GiB free: {fit} workers instead of {workers}",
              flush=True)
    return min(workers, fit)


def _one_thread(_):
    torch.set_num_threads(1)


def train_from(sampler, ann, model, cfg, device, batch: int, workers: int, steps: int,
               warmup: int) -> dict:
    """Trains `warmup + steps` steps from the DataLoader; measures the last `steps`."""
    pre = model.backbone.preprocess
    dataset = PairDataset(ann, sampler, Tokenize(model.backbone.tokenizer, 32), seed=0)
    cuda = device.type == "cuda"
    workers = _fit_shared_memory(workers, batch, sampler.spec)
    loader = DataLoader(
        dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=workers,
        collate_fn=collate, pin_memory=cuda, persistent_workers=workers > 0,
        prefetch_factor=PREFETCH if workers > 0 else None, worker_init_fn=_one_thread,
    )
    assert pre.image_size == sampler.spec.image_size, "model and clips disagree on the image size"
    optimizer = build_optimizer(model, cfg.train)
    scaler = torch.amp.GradScaler(device.type, enabled=False)
    loss_fn, state = CALMLoss(), TrainState()
    spans, busy_cpu = [], 0.0
    done, t0 = 0, None
    while done < warmup + steps:
        for data in loader:
            if done == warmup:
                if cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
            start = time.perf_counter()
            if cuda and done >= warmup:
                begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                begin.record()
            train_step(model, model, loss_fn, data, optimizer, scaler, device, cfg.train, state)
            if done >= warmup:
                if cuda:
                    end.record()
                    spans.append((begin, end))
                busy_cpu += time.perf_counter() - start
            done += 1
            if done >= warmup + steps:
                break
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    busy = sum(b.elapsed_time(e) for b, e in spans) / 1000 if cuda else busy_cpu
    return {"clips_s": steps * batch / wall, "busy": busy / wall, "step_s": wall / steps,
            "frames_dtype": str(data["frames"].dtype)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true",
                    help="CPU smoke run: calm-micro at 32 px, 8 clips, batch 4, a few steps")
    ap.add_argument("--clips", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--direct-steps", type=int, default=6,
                    help="steps from direct video decoding (slow; 0 to skip)")
    ap.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    ap.add_argument("--backbone", default="ViT-B-32")
    ap.add_argument("--dir", type=Path, default=None, help="keep clips and cache here")
    ap.add_argument("--out", default=None, help="also write the table to this file")
    args = ap.parse_args(argv)
    if args.tiny:
        args.clips, args.seconds, args.batch_size = 8, 2.0, 4
        args.steps, args.warmup, args.direct_steps, args.backbone = 3, 2, 2, "calm-micro"
        args.workers = min(args.workers, 2)
    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    precision = "bf16" if device.type == "cuda" else "fp32"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}", flush=True)
    print(f"{os.cpu_count()} CPU cores, {args.workers} DataLoader workers", flush=True)

    model, cfg = build_model(args.backbone, device, precision)
    size = model.backbone.preprocess.image_size
    tmp = None
    folder = args.dir
    if folder is None:
        tmp = tempfile.TemporaryDirectory()
        folder = Path(tmp.name)
    t = time.perf_counter()
    paths = make_clips(folder / f"clips{size}", args.clips, args.seconds, size, args.workers)
    print(f"{len(paths)} clips x {args.seconds:g}s at short side {size}: "
          f"{time.perf_counter() - t:.1f}s", flush=True)
    t = time.perf_counter()
    cache_dir = folder / f"cache_T{args.frames}_{size}"
    prepare_frames(folder / f"clips{size}", cache_dir, CacheSettings(args.frames, image_size=size),
                   workers=args.workers, progress=False)
    disk = sum(p.stat().st_size for p in cache_dir.rglob("*") if p.is_file()) / len(paths) / 2**20
    print(f"prepare-frames: {time.perf_counter() - t:.1f}s, {disk:.2f} MiB per clip", flush=True)

    ann = annotations(paths)
    spec = FrameSpec(args.frames, size, model.backbone.preprocess.mean,
                     model.backbone.preprocess.std)
    rows = ["| source | batch | clips/s | step (s) | device busy | frames shipped as |",
            "|---|---|---|---|---|---|"]
    sources = [("frame cache", FrameCache(cache_dir).sampler(spec, paths[0].parent, "train"),
                args.steps)]
    if args.direct_steps:
        sources.append(("video files", FrameSampler(spec, "train"), args.direct_steps))
    for name, sampler, steps in sources:
        r = train_from(sampler, ann, model, cfg, device, args.batch_size, args.workers, steps,
                       args.warmup)
        rows.append(f"| {name} | {args.batch_size} | {r['clips_s']:.1f} | {r['step_s']:.3f} | "
                    f"{100 * r['busy']:.0f}% | {r['frames_dtype']} |")
        print(rows[-1], flush=True)
    table = "\n".join(rows)
    print(table)
    if args.out:
        Path(args.out).write_text(table + "\n")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
