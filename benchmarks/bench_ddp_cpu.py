"""Wall time per training step on CPU: one process vs two gloo processes on the same global batch.

    python benchmarks/bench_ddp_cpu.py [--model calm-tiny] [--batch 16] [--frames 8] [--steps 6]

Both runs use the real `train_step` (DDP + gradient-carrying all-gather in the two-process run),
random frames and captions; each process of the pair gets one thread, the single process two,
so both use the machine's two cores.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from calm.config import ExperimentConfig, from_dict
from calm.engine.optim import build_optimizer
from calm.engine.state import TrainState
from calm.engine.train import train_step
from calm.model.losses import CALMLoss
from calm.model.retrieval import CALM


def setup(model_name: str):
    cfg = from_dict(ExperimentConfig, {"model": {"backbone": {"name": model_name},
                                                 "fusion": {"name": "xpool", "dropout": 0.0},
                                                 "alignment": {"name": "vae"}}})
    torch.manual_seed(0)
    model = CALM.from_config(cfg.model)
    return model, cfg


def batch(model, n, frames, size, offset=0):
    g = torch.Generator().manual_seed(offset)
    return {"frames": torch.randn(n, frames, 3, size, size, generator=g),
            "frame_mask": torch.ones(n, frames, dtype=torch.bool),
            "tokens": model.backbone.tokenize([f"a shape number {i + offset} moves" for i in range(n)]),
            "text_index": torch.arange(n), "size": n}


def run_steps(net, model, cfg, data, steps) -> list[float]:
    opt = build_optimizer(model, cfg.train)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        train_step(net, model, CALMLoss(), data, opt, scaler, torch.device("cpu"), cfg.train,
                   TrainState(step=i))
        if i:  # first step warms up
            times.append(time.perf_counter() - t)
    return times


def worker(rank, world, port, args, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    model, cfg = setup(args.model)
    size = model.backbone.preprocess.image_size
    per = args.batch // world
    data = batch(model, per, args.frames, size, offset=rank * per)
    net = torch.nn.parallel.DistributedDataParallel(model)
    times = run_steps(net, model, cfg, data, args.steps)
    if rank == 0:
        queue.put(statistics.median(times))
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="calm-tiny")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--steps", type=int, default=6)
    args = p.parse_args()

    torch.set_num_threads(2)
    model, cfg = setup(args.model)
    size = model.backbone.preprocess.image_size
    one = statistics.median(run_steps(model, model, cfg, batch(model, args.batch, args.frames, size),
                                      args.steps))

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(worker, args=(2, port, args, queue), nprocs=2, start_method="spawn")
    two = queue.get()
    print(f"{args.model}, global batch {args.batch} x {args.frames} frames, median of {args.steps} steps")
    print(f"1 process (2 threads):            {one:.3f} s/step")
    print(f"2 processes (1 thread each, DDP): {two:.3f} s/step")
    print(f"ratio 2-process / 1-process:      {two / one:.2f}")


if __name__ == "__main__":
    main()
