"""`calm train`: the whole training loop in one readable function.

Per step: batch -> model forward (frame features, fusion similarity over the global batch, anchor
branch, VAE) -> the task's loss -> backward -> clip -> AdamW -> schedule -> the task's parameter
constraints (logit-scale clamp). Per epoch: evaluate on the validation split, keep `best` (the
task's selection metric) and `last`. At the end: evaluate the test split once, with the best
checkpoint; the test split is not read before.

Under torchrun the same function runs in every process: DDP averages gradients, the contrastive
loss sees the global batch through a gradient-carrying all-gather, and only rank 0 writes files.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from calm.config import ConfigError, ExperimentConfig, dump_yaml
from calm.data.samples import collate
from calm.data.video import normalize_frames
from calm.data.worker_errors import WorkerSafeLoader
from calm.engine import distributed
from calm.engine.checkpoint import load_resume_point, save_model, save_resume_point
from calm.engine.inputs import data_setup
from calm.engine.models import open_model
from calm.engine.optim import build_optimizer, cosine_with_warmup
from calm.engine.runlog import NullLog, RunLog, truncate_log
from calm.engine.runtime import autocast, pick_device, seed_everything
from calm.engine.sampler import EpochSampler
from calm.engine.state import TrainState, capture, restore, rng_state
from calm.engine.tasks import task_for


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; names the step and the samples of the batch."""


def train(
    cfg: ExperimentConfig, run_dir: str | Path, resume: bool = False, progress: bool = True
) -> dict:
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    tc = cfg.train
    task = task_for(cfg)
    device = pick_device(tc.device)
    env = distributed.init(device.type)
    if env.enabled and device.type == "cuda":
        device = torch.device("cuda", env.local_rank)
    if tc.batch_size % env.world_size:
        raise ConfigError(f"train.batch_size: {tc.batch_size} is not divisible by {env.world_size} processes")
    seed_everything(tc.seed)

    model = task.build_model(cfg.model).to(device)
    data = data_setup(cfg.data, model.backbone.preprocess, model.backbone.tokenizer,
                      task.text_length(cfg))
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
    # Pinned memory lets uint8 batches copy to the GPU asynchronously. Workers are not
    # persistent: they would keep the epoch (and so the caption draws) they started with.
    loader = WorkerSafeLoader(dataset, batch_size=local_batch, sampler=sampler, drop_last=True,
                              num_workers=cfg.data.num_workers, collate_fn=collate,
                              pin_memory=device.type == "cuda",
                              generator=torch.Generator().manual_seed(tc.seed))

    optimizer = build_optimizer(model, tc)
    scheduler = cosine_with_warmup(optimizer, total_steps, tc.warmup)
    scaler = torch.amp.GradScaler(device.type, enabled=tc.precision == "fp16")
    net = model
    if env.enabled:
        net = DistributedDataParallel(
            model, device_ids=[env.local_rank] if device.type == "cuda" else None,
            find_unused_parameters=task.find_unused_parameters,
        )
    loss_fn = task.build_loss(cfg)
    state = TrainState()
    if resume:
        weights, saved = load_resume_point(ckpt_dir)
        model.load_state_dict(weights)
        state = restore(saved, model, optimizer, scheduler, scaler, env.rank)
        if env.is_main:
            truncate_log(run_dir / "metrics.jsonl", state.step)
    elif env.is_main:
        # a fresh run into a folder used before (`make demo` twice) starts a new log: appending
        # would put two runs into one metrics.jsonl and one set of training curves
        (run_dir / "metrics.jsonl").unlink(missing_ok=True)

    log = RunLog(run_dir) if env.is_main else NullLog()

    def save_last() -> None:
        rngs = distributed.gather_objects(rng_state())
        if env.is_main:
            save_resume_point(ckpt_dir, state.step, model, cfg,
                              capture(state, model, optimizer, scheduler, scaler, rngs))
        distributed.barrier()

    try:
        while state.step < total_steps:
            epoch = state.epoch
            dataset.set_epoch(epoch)
            sampler.set_epoch(epoch, state.batch)
            if state.batch == 0:
                model.start_epoch()
            net.train()
            remaining = min(steps_per_epoch - state.batch, total_steps - state.step)
            bar = tqdm(total=remaining, desc=f"epoch {epoch + 1}/{num_epochs}",
                       disable=not (progress and env.is_main), dynamic_ncols=True)
            started, clips = time.perf_counter(), 0
            for batch in loader:
                terms = None
                # a contrastive step needs two pairs; under DDP every rank must step together
                if distributed.all_ranks(batch["size"] >= (1 if env.enabled else 2)):
                    terms = train_step(net, model, loss_fn, batch, optimizer, scaler, device, tc,
                                       state, task.after_step)
                # consumed only once its step is done: a Ctrl-C inside the step resumes at it
                state.skips.update(batch["skipped"])
                state.batch += 1
                if terms is None:
                    state.skipped_steps += 1
                else:
                    clips += batch["size"] * env.world_size
                advance_schedule(scheduler, stepped=terms is not None)
                state.step += 1
                bar.update(1)
                if terms is not None:
                    rate = clips / max(1e-9, time.perf_counter() - started)
                    bar.set_postfix(loss=f"{terms['loss']:.3f}", clips_s=f"{rate:.1f}")
                    if state.step % tc.log_every == 0 or state.step == 1:
                        lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
                        log.log("train", state.step, {**terms, "lr": lrs, "clips_per_s": rate},
                                epoch=epoch)
                if tc.save_every and state.step % tc.save_every == 0 and state.step < total_steps:
                    save_last()
                if state.step >= total_steps:
                    break
            bar.close()
            if state.batch >= steps_per_epoch or state.step >= total_steps:
                if (epoch + 1) % tc.eval_every == 0 or state.step >= total_steps:
                    val = task.evaluate(model, val_ann, data, cfg, device)
                    log.log("val", state.step, val, epoch=epoch)
                    if task.selection_score(val) > state.best:
                        state.best = task.selection_score(val)
                        if env.is_main:
                            save_model(ckpt_dir / "best.safetensors", model, cfg,
                                       {"step": state.step, "epoch": epoch, "val": val})
                state.epoch, state.batch = epoch + 1, 0
                save_last()
    except KeyboardInterrupt:
        save_last()
        log.close()
        raise

    distributed.barrier()
    if env.is_main and len(state.skips):
        state.skips.write(run_dir / "skipped_videos.json")
    best, _, meta = open_model(ckpt_dir / "best.safetensors", device)
    test = task.evaluate(best, data.split(cfg.data.test_split), data, cfg, device)
    test["selected_by"] = {"split": cfg.data.val_split, "step": meta["step"],
                           "metric": task.selection_metric, "value": state.best}
    log.log("test", state.step, test)
    log.close()
    if env.is_main:
        (run_dir / "test_metrics.json").write_text(json.dumps(test, indent=2))
    return {"test": test, "best_val_r1_sum": state.best, "steps": state.step,
            "skipped_videos": len(state.skips), "skipped_steps": state.skipped_steps}


def advance_schedule(scheduler, stepped: bool) -> None:
    """Moves the learning-rate schedule on by one step, also for a skipped step.

    The schedule is a function of `state.step` (total_steps = the steps of the run, whether
    they updated the weights or not), so a non-finite or too-small batch uses up its step of the
    schedule rather than shifting every later rate: step k always runs at the rate of step k,
    and the run ends at the schedule's end. A skipped step has no optimizer.step(), which torch
    warns about when it is the first; that warning is expected here.
    """
    if stepped:
        scheduler.step()
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Detected call of `lr_scheduler\.step\(\)`")
        scheduler.step()


def train_step(net, model, loss_fn, batch, optimizer, scaler, device, tc, state,
               after_step=None) -> dict | None:
    """One optimizer step; returns the loss terms as floats, or None if a non-finite loss was skipped.

    `after_step(model)` applies the task's parameter constraints (retrieval: logit-scale clamp).
    """
    mask = batch["frame_mask"].to(device, non_blocking=True)
    pre = model.backbone.preprocess  # uint8 frames are normalised here, on the device
    frames = normalize_frames(batch["frames"].to(device, non_blocking=True), pre.mean, pre.std, mask)
    tokens = batch["tokens"].to(device, non_blocking=True)
    with autocast(device, tc.precision):
        video_index = batch.get("video_index")  # which pairs share a video (same_video option)
        if video_index is not None:
            video_index = video_index.to(device, non_blocking=True)
        out = net(frames, mask, tokens, gather=distributed.gather_with_grad,
                  video_index=video_index)
        terms = loss_fn(out)
    loss = terms["loss"]
    if not torch.isfinite(loss):
        samples = batch["text_index"].tolist()
        if tc.nonfinite_loss == "error":
            raise NonFiniteLossError(
                f"non-finite loss {loss.item()} at step {state.step + 1} (epoch {state.epoch + 1}); "
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
    with torch.no_grad():  # the training split's mean S_p, over the global batch
        model.observe_step(out, distributed.gather_with_grad)
    if after_step is not None:
        after_step(model)
    return {k: float(v.detach()) for k, v in terms.items()}
