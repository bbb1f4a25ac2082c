"""Two gloo processes on CPU match one process on the concatenated batch, for training and eval."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from calm.config import ExperimentConfig, ModelConfig, TrainConfig, from_dict
from calm.engine.distributed import gather_with_grad
from calm.engine.state import TrainState
from calm.engine.train import train_step
from calm.model.losses import CALMLoss
from calm.model.retrieval import CALM

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model_config(alignment: str) -> ModelConfig:
    return from_dict(ModelConfig, {
        "backbone": {"name": "calm-micro"}, "anchors": {"labels": "coco", "refresh": "step"},
        "fusion": {"name": "xpool", "dropout": 0.0}, "alignment": {"name": alignment},
    })


def _batch(n: int = 8) -> dict:
    g = torch.Generator().manual_seed(1)
    model = CALM.from_config(_model_config("none"))
    captions = [f"a {c} shape moves {d}" for c, d in zip("abcdefgh", ["left", "right"] * 4)]
    mask = torch.ones(n, 3, dtype=torch.bool)
    mask[1, 2] = False
    return {
        "frames": torch.randn(n, 3, 3, 32, 32, generator=g), "frame_mask": mask,
        "tokens": model.backbone.tokenize(captions[:n]), "text_index": torch.arange(n), "size": n,
    }


def _step(model, batch, tc, net=None):
    # plain SGD: the update is the gradient itself, so the comparison checks the gradients
    # (Adam's first step would turn float noise in near-zero gradients into +-lr)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    pos = TrainState(step=0)
    terms = train_step(net or model, model, CALMLoss(), batch, optimizer, scaler,
                       torch.device("cpu"), tc, pos)
    return terms, {k: v.detach().clone() for k, v in model.state_dict().items()}


def _worker(rank: int, world: int, port: int, alignment: str, out_path: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        model = CALM.from_config(_model_config(alignment))
        net = torch.nn.parallel.DistributedDataParallel(model)
        full = _batch()
        per = full["size"] // world
        local = {k: (v[rank * per:(rank + 1) * per] if torch.is_tensor(v) else per)
                 for k, v in full.items()}
        tc = TrainConfig(lr=1e-2, backbone_lr=1e-3, grad_clip=0.0)
        terms, state = _step(model, local, tc, net)
        # the task loss is the same global quantity on every rank; alignment terms are local means
        all_terms = [None] * world
        dist.all_gather_object(all_terms, terms)
        if rank == 0:
            torch.save({"terms": all_terms, "state": state}, out_path)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("alignment", ["kl", "none"])
def test_two_processes_match_one_process_on_the_concatenated_batch(tmp_path, alignment):
    out = tmp_path / "ddp.pt"
    mp.start_processes(_worker, args=(2, _free_port(), alignment, str(out)), nprocs=2,
                       start_method="spawn")
    ddp = torch.load(out, weights_only=True)

    torch.manual_seed(0)
    model = CALM.from_config(_model_config(alignment))
    terms, state = _step(model, _batch(), TrainConfig(lr=1e-2, backbone_lr=1e-3, grad_clip=0.0))

    for rank_terms in ddp["terms"]:
        assert rank_terms["task"] == pytest.approx(terms["task"], rel=1e-5, abs=1e-6)
    if alignment != "none":
        mean_align = sum(t["align"] for t in ddp["terms"]) / len(ddp["terms"])
        assert mean_align == pytest.approx(terms["align"], rel=1e-5, abs=1e-6)
    assert ddp["state"].keys() == state.keys()
    torch.manual_seed(0)
    initial = CALM.from_config(_model_config(alignment)).state_dict()
    moved = 0
    for key, value in state.items():
        update, ddp_update = value - initial[key], ddp["state"][key] - initial[key]
        scale = update.abs().max().item()
        # float sums in another order: compare the updates relative to their own size
        torch.testing.assert_close(ddp_update, update, rtol=1e-3, atol=1e-4 * scale + 1e-7,
                                   msg=key)
        moved += scale > 0
    assert moved > 10


def test_gather_with_grad_is_identity_without_a_process_group():
    x = torch.randn(3, 4, requires_grad=True)
    assert gather_with_grad(x) is x


def _eval_worker(rank, world, port, root, out_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        result = _evaluate(root)
        if rank == 0:
            torch.save(result, out_path)
    finally:
        dist.destroy_process_group()


def _evaluate(root) -> dict:
    from pathlib import Path

    from calm.engine.evaluation.retrieval import evaluate
    from calm.engine.inputs import data_setup
    from tests.engine_fixtures import tiny_config

    cfg = from_dict(ExperimentConfig, tiny_config(Path(root) / "ann", Path(root) / "vid"))
    torch.manual_seed(0)
    model = CALM.from_config(cfg.model)
    data = data_setup(cfg.data, model.backbone.preprocess, model.backbone.tokenizer)
    # test_full: 15 videos with 3 captions each -> uneven shards, multi-caption protocol
    ann = data.split("test_full")
    metrics, sim, emb = evaluate(model, ann, data, cfg.model.score, 4, torch.device("cpu"))
    return {"metrics": metrics, "sim": sim, "video_ids": emb.video_ids}


def test_distributed_evaluation_equals_single_process(tmp_path):
    from tests.engine_fixtures import write_tiny_msrvtt

    write_tiny_msrvtt(tmp_path)
    out = tmp_path / "eval.pt"
    mp.start_processes(_eval_worker, args=(2, _free_port(), str(tmp_path), str(out)), nprocs=2,
                       start_method="spawn")
    ddp = torch.load(out, weights_only=False)
    single = _evaluate(str(tmp_path))
    assert ddp["video_ids"] == single["video_ids"]
    torch.testing.assert_close(ddp["sim"], single["sim"])
    assert ddp["metrics"] == single["metrics"]


def _gather_worker(rank, world, port, out_path):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        full = torch.arange(8 * 3, dtype=torch.float32).reshape(8, 3)
        bounds = [(0, 3), (3, 8)]  # unequal local sizes, as after skipped videos
        local = full[bounds[rank][0]:bounds[rank][1]].clone().requires_grad_(True)
        gathered = gather_with_grad(local)
        weights = torch.arange(gathered.numel(), dtype=torch.float32).reshape(gathered.shape)
        (gathered * weights).sum().backward()  # the same global loss on every rank
        if rank == 1:
            torch.save({"gathered": gathered.detach(), "grad": local.grad}, out_path)
    finally:
        dist.destroy_process_group()


def test_gather_with_grad_handles_unequal_local_batches(tmp_path):
    out = tmp_path / "gather.pt"
    mp.start_processes(_gather_worker, args=(2, _free_port(), str(out)), nprocs=2,
                       start_method="spawn")
    result = torch.load(out, weights_only=True)
    full = torch.arange(8 * 3, dtype=torch.float32).reshape(8, 3)
    assert torch.equal(result["gathered"], full)
    weights = torch.arange(24, dtype=torch.float32).reshape(8, 3)
    # both ranks computed the same loss, so rank 1's slice gets twice its gradient
    assert torch.equal(result["grad"], 2 * weights[3:8])
