"""Prepared GPU check (one H100/H200): real sizes, baseline vs CALM.

Random-init ViT-B/32, 12 frames at 224 px, xpool fusion, batch 32 and 128, bf16 autocast with fp32
master weights. Prints step time, clips/s and peak memory as a table, then times xpool scoring at
MSVD test size. Inputs are random tensors: this measures the model, not the video decoder.
Then (unless --no-input-pipeline) benchmarks/gpu_input_pipeline.py trains from real mp4 files at
224 px through the DataLoader and the frame cache and reports clips/s and how busy the GPU was.

    python benchmarks/gpu_check.py [--batch-sizes 32 128] [--steps 10] [--out table.md]
"""

from __future__ import annotations

import argparse
import time

import torch

from calm.config import ExperimentConfig, from_dict
from calm.engine.optim import build_optimizer
from calm.engine.state import TrainState
from calm.engine.train import train_step
from calm.model.losses import CALMLoss
from calm.model.retrieval import CALM
from calm.model.scoring import similarity_matrix


def make_model(alignment: str, grad_ckpt: bool, refresh: str = "epoch") -> tuple[CALM, ExperimentConfig]:
    cfg = from_dict(ExperimentConfig, {
        "model": {"backbone": {"name": "ViT-B-32", "grad_checkpointing": grad_ckpt},
                  "fusion": {"name": "xpool"}, "alignment": {"name": alignment},
                  "anchors": {"refresh": refresh}},
        "train": {"precision": "bf16", "lr": 1e-5, "backbone_lr": 1e-6},
    })
    return CALM.from_config(cfg.model).cuda(), cfg


def batch(model: CALM, size: int, frames: int) -> dict:
    captions = [f"a person is doing thing number {i} in a kitchen" for i in range(size)]
    return {
        "frames": torch.randn(size, frames, 3, 224, 224, device="cuda"),
        "frame_mask": torch.ones(size, frames, dtype=torch.bool, device="cuda"),
        "tokens": model.backbone.tokenize(captions, context_length=32).cuda(),
        "text_index": torch.arange(size), "size": size,
    }


def time_training(alignment: str, size: int, frames: int, steps: int, warmup: int, grad_ckpt: bool,
                  refresh: str = "epoch"):
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    model, cfg = make_model(alignment, grad_ckpt, refresh)
    optimizer = build_optimizer(model, cfg.train)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    data = batch(model, size, frames)
    loss_fn, pos = CALMLoss(), TrainState()
    times, losses = [], []
    for i in range(warmup + steps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        terms = train_step(model, model, loss_fn, data, optimizer, scaler, torch.device("cuda"),
                           cfg.train, pos)
        torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
            losses.append(terms["loss"])
    step = sorted(times)[len(times) // 2]
    peak = torch.cuda.max_memory_allocated() / 2**30
    del model, optimizer, data
    return {"step_s": step, "clips_s": size / step, "peak_gib": peak, "loss": losses[-1]}


def time_scoring(texts: int, videos: int, frames: int) -> dict:
    model, cfg = make_model("none", False)
    model.eval()
    text = torch.randn(texts, 512, device="cuda")
    feats = torch.randn(videos, frames, 512, device="cuda")
    mask = torch.ones(videos, frames, dtype=torch.bool, device="cuda")
    torch.cuda.reset_peak_memory_stats()
    torch.cuda.synchronize()
    t = time.perf_counter()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        sim = similarity_matrix(model, text, feats, mask, cfg.model.score)
    torch.cuda.synchronize()
    return {"seconds": time.perf_counter() - t, "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
            "shape": tuple(sim.shape), "naive_gib": texts * videos * 512 * 4 / 2**30}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--grad-checkpointing", action="store_true")
    p.add_argument("--refresh", nargs="+", default=["epoch"], choices=["step", "epoch"],
                   help="anchor refresh policies to time for CALM")
    p.add_argument("--no-scoring", action="store_true")
    p.add_argument("--no-input-pipeline", action="store_true",
                   help="skip training from video files (DataLoader + frame cache)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}", flush=True)
    rows = ["| batch | alignment | anchor refresh | step (s) | clips/s | peak memory (GiB) | "
            "CALM/baseline time |", "|---|---|---|---|---|---|---|"]
    runs = [("none", "-")] + [("vae", r) for r in args.refresh]
    for size in args.batch_sizes:
        base = None
        for alignment, refresh in runs:
            r = time_training(alignment, size, args.frames, args.steps, args.warmup,
                              args.grad_checkpointing, refresh if refresh != "-" else "epoch")
            base = base or r["step_s"]
            rows.append(f"| {size} | {alignment} | {refresh} | {r['step_s']:.3f} | "
                        f"{r['clips_s']:.1f} | {r['peak_gib']:.1f} | {r['step_s'] / base:.3f} |")
            print(rows[-1], flush=True)
    if not args.no_scoring:
        s = time_scoring(27763, 670, args.frames)
        rows += ["", f"xpool scoring, MSVD test size {s['shape']}: {s['seconds']:.2f} s, peak "
                 f"{s['peak_gib']:.2f} GiB (naive texts x videos x 512 fp32 tensor: "
                 f"{s['naive_gib']:.1f} GiB)"]
    if not args.no_input_pipeline:
        from gpu_input_pipeline import main as input_pipeline  # this script's folder is on the path

        pipeline_out = f"{args.out}.input_pipeline.md" if args.out else None
        input_pipeline(["--frames", str(args.frames)] + (["--out", pipeline_out] if args.out else []))
    table = "\n".join(rows)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
