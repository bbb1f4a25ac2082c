"""`calm train`: the whole training loop in one readable function.

Per step: batch -> model forward (frame features, fusion similarity over the global batch, anchor
branch, VAE) -> CALMLoss -> backward -> clip -> AdamW -> schedule -> logit-scale clamp. Per epoch:
evaluate on the validation split, keep `best` (retrieval: t2v + v2t R@1; captioning: CIDEr) and
`last`. At
the end: evaluate the test split once, with the best checkpoint; the test split is not read before.

Under torchrun the same function runs in every process: DDP averages gradients, the contrastive
loss sees the global batch through a gradient-carrying all-gather, and only rank 0 writes files.
"""

from __future__ import annotations

import ast
import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from calm.config import ConfigError, ExperimentConfig, dump_yaml
from calm.data.samples import SkipLog, SkippedVideo, collate
from calm.engine import distributed
from calm.engine.checkpoint import (
    load_model,
    load_resume_point,
    save_model,
    save_resume_point,
)
from calm.engine.inputs import data_setup
from calm.engine.optim import build_optimizer, cosine_with_warmup
from calm.engine.runlog import NullLog, RunLog, truncate_log
from calm.engine.runtime import autocast, pick_device, seed_everything
from calm.engine.sampler import EpochSampler
from calm.engine.tasks import (
    build_loss,
    build_model,
    evaluate_split,
    selection_name,
    selection_score,
    text_length,
)
from calm.model.losses import clamp_logit_scale_


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; names the step and the samples of the batch."""


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": repr(random.getstate()),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(ast.literal_eval(state["python"]))
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))


def train(
    cfg: ExperimentConfig, run_dir: str | Path, resume: bool = False, progress: bool = True
) -> dict:
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    tc = cfg.train
    device = pick_device(tc.device)
    env = distributed.init(device.type)
    if env.enabled and device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
    if tc.batch_size % env.world_size:
        raise ConfigError(f"train.batch_size: {tc.batch_size} is not divisible by {env.world_size} processes")
    seed_everything(tc.seed)

    model = build_model(cfg).to(device)
    data = data_setup(cfg.data, model.backbone.preprocess, model.backbone.tokenizer,
                      text_length(cfg))
    train_ann = data.split(cfg.data.train_split)
    val_ann = data.split(cfg.data.val_split)
    if env.is_main:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        dump_yaml(cfg, run_dir / "config.yaml")
        (run_dir / "splits.json").write_text(json.dumps({
            "train": {"split": cfg.data.train_split, "videos": len(train_ann.videos),
                      "texts": len(train_ann.texts), **train_ann.info},
            "val": {"split": cfg.data.val_split, "videos": len(val_ann.videos),
                    "texts": len(val_ann.texts), **val_ann.info},
        }, indent=2, default=str))

    dataset = data.train_dataset(train_ann, seed=tc.seed)
    local_batch = tc.batch_size // env.world_size
    sampler = EpochSampler(len(dataset), local_batch, tc.seed, env.rank, env.world_size)
    steps_per_epoch = sampler.batches_per_epoch()
    if steps_per_epoch == 0:
        raise ConfigError(
            f"train.batch_size: {tc.batch_size} exceeds the {len(dataset)} training pairs of "
            f"{cfg.data.dataset}/{cfg.data.train_split}"
        )
    total_steps = tc.max_steps or tc.epochs * steps_per_epoch
    num_epochs = math.ceil(total_steps / steps_per_epoch)
    # Its own generator: creating an iterator must not draw from the global RNG, or a resumed
    # run's dropout and VAE noise would drift from the uninterrupted run's.
    loader = DataLoader(dataset, batch_size=local_batch, sampler=sampler, drop_last=True,
                        num_workers=cfg.data.num_workers, collate_fn=collate,
                        generator=torch.Generator().manual_seed(tc.seed))

    optimizer = build_optimizer(model, tc)
    scheduler = cosine_with_warmup(optimizer, total_steps, tc.warmup)
    scaler = torch.amp.GradScaler(device.type, enabled=tc.precision == "fp16")
    net = model
    if env.enabled:
        # captioning leaves CLIP's logit scale (and, with a detached S_p, the text tower) unused
        net = DistributedDataParallel(
            model, device_ids=[env.local_rank] if device.type == "cuda" else None,
            find_unused_parameters=cfg.task == "captioning",
        )
    loss_fn = build_loss(cfg)
    skips = SkipLog()
    pos = {"epoch": 0, "batch": 0, "step": 0, "best": -math.inf, "skipped_steps": 0}

    if resume:
        weights, state = load_resume_point(ckpt_dir)
        model.load_state_dict(weights)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        pos = dict(state["position"])
        set_rng_state(state["rng"][min(env.rank, len(state["rng"]) - 1)])
        if state.get("anchor_cache") is not None and model.anchors is not None:
            model.anchors._cache = state["anchor_cache"].to(device)
        for record in state["skips"].get("videos", []):
            skips.records[record["video_id"]] = SkippedVideo(**record)
        skips.samples = state["skips"].get("skipped_samples", 0)
        if env.is_main:
            truncate_log(run_dir / "metrics.jsonl", pos["step"])

    log = RunLog(run_dir) if env.is_main else NullLog()

    def save_last() -> None:
        rngs = distributed.gather_objects(rng_state())
        if env.is_main:
            cache = model.anchors._cache if model.anchors is not None else None
            save_resume_point(ckpt_dir, pos["step"], model, cfg, {
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "position": dict(pos), "rng": rngs,
                "skips": skips.to_dict(), "anchor_cache": None if cache is None else cache.cpu(),
            })
        distributed.barrier()

    try:
        while pos["step"] < total_steps:
            epoch = pos["epoch"]
            dataset.set_epoch(epoch)
            sampler.set_epoch(epoch, pos["batch"])
            if model.anchors is not None and model.anchors.refresh == "epoch" and pos["batch"] == 0:
                model.anchors.invalidate()
            net.train()
            remaining = min(steps_per_epoch - pos["batch"], total_steps - pos["step"])
            bar = tqdm(total=remaining, desc=f"epoch {epoch + 1}/{num_epochs}",
                       disable=not (progress and env.is_main), dynamic_ncols=True)
            started, clips = time.perf_counter(), 0
            for batch in loader:
                skips.update(batch["skipped"])
                pos["batch"] += 1
                terms = None
                # a contrastive step needs two pairs; under DDP every rank must step together
                if distributed.all_ranks(batch["size"] >= (1 if env.enabled else 2)):
                    terms = train_step(net, model, loss_fn, batch, optimizer, scaler, device, tc, pos)
                if terms is None:
                    pos["skipped_steps"] += 1
                else:
                    scheduler.step()
                    clips += batch["size"] * env.world_size
                pos["step"] += 1
                bar.update(1)
                if terms is not None:
                    rate = clips / max(1e-9, time.perf_counter() - started)
                    bar.set_postfix(loss=f"{terms['loss']:.3f}", clips_s=f"{rate:.1f}")
                    if pos["step"] % tc.log_every == 0 or pos["step"] == 1:
                        lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
                        log.log("train", pos["step"], {**terms, "lr": lrs, "clips_per_s": rate},
                                epoch=epoch)
                if tc.save_every and pos["step"] % tc.save_every == 0 and pos["step"] < total_steps:
                    save_last()
                if pos["step"] >= total_steps:
                    break
            bar.close()
            if pos["batch"] >= steps_per_epoch or pos["step"] >= total_steps:
                if (epoch + 1) % tc.eval_every == 0 or pos["step"] >= total_steps:
                    val = evaluate_split(model, val_ann, data, cfg, device)
                    log.log("val", pos["step"], val, epoch=epoch)
                    if selection_score(cfg, val) > pos["best"]:
                        pos["best"] = selection_score(cfg, val)
                        if env.is_main:
                            save_model(ckpt_dir / "best.safetensors", model, cfg,
                                       {"step": pos["step"], "epoch": epoch, "val": val})
                pos["epoch"], pos["batch"] = epoch + 1, 0
                save_last()
    except KeyboardInterrupt:
        save_last()
        log.close()
        raise

    distributed.barrier()
    if env.is_main and len(skips):
        skips.write(run_dir / "skipped_videos.json")
    best, _, meta = load_model(ckpt_dir / "best.safetensors", device)
    test_ann = data.split(cfg.data.test_split)
    test = evaluate_split(best, test_ann, data, cfg, device)
    test["selected_by"] = {"split": cfg.data.val_split, "step": meta["step"],
                           "metric": selection_name(cfg), "value": pos["best"]}
    log.log("test", pos["step"], test)
    log.close()
    if env.is_main:
        (run_dir / "test_metrics.json").write_text(json.dumps(test, indent=2))
    return {"test": test, "best_val_r1_sum": pos["best"], "steps": pos["step"],
            "skipped_videos": len(skips), "skipped_steps": pos["skipped_steps"]}


def train_step(net, model, loss_fn, batch, optimizer, scaler, device, tc, pos) -> dict | None:
    """One optimizer step; returns the loss terms as floats, or None if a non-finite loss was skipped."""
    frames = batch["frames"].to(device, non_blocking=True)
    mask = batch["frame_mask"].to(device, non_blocking=True)
    tokens = batch["tokens"].to(device, non_blocking=True)
    with autocast(device, tc.precision):
        out = net(frames, mask, tokens, gather=distributed.gather_with_grad)
        terms = loss_fn(model, out)
    loss = terms["loss"]
    if not torch.isfinite(loss):
        samples = batch["text_index"].tolist()
        if tc.nonfinite_loss == "error":
            raise NonFiniteLossError(
                f"non-finite loss {loss.item()} at step {pos['step'] + 1} (epoch {pos['epoch'] + 1}); "
                f"text indices of the batch: {samples}"
            )
        optimizer.zero_grad(set_to_none=True)
        return None
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    if tc.grad_clip > 0:
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
    scaler.step(optimizer)
    scaler.update()
    if hasattr(model, "logit_scale"):  # retrieval's temperature; captioning has none
        clamp_logit_scale_(model.logit_scale)
    return {k: float(v.detach()) for k, v in terms.items()}
