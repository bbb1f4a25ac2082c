"""Checkpoints: safetensors weights with their config, plain-data state, refusal of pickled code."""

from __future__ import annotations

import os

import pytest
import torch

from calm.config import ExperimentConfig, from_dict
from calm.engine.checkpoint import (
    UnsafeCheckpointError,
    load_model,
    load_resume_point,
    load_state,
    read_metadata,
    save_model,
    save_resume_point,
    save_state,
)
from calm.engine.state import TrainState
from calm.engine.train import NonFiniteLossError, train_step
from calm.io import atomic_write
from calm.model.losses import CALMLoss
from calm.model.retrieval import CALM


def _cfg(**model) -> ExperimentConfig:
    base = {"backbone": {"name": "calm-micro"}, "anchors": {"labels": "coco"},
            "fusion": {"name": "seqTransf", "layers": 1, "dropout": 0.0}}
    base.update(model)
    return from_dict(ExperimentConfig, {"model": base})


@pytest.fixture(scope="module")
def model_and_cfg():
    cfg = _cfg()
    torch.manual_seed(3)
    return CALM.from_config(cfg.model).eval(), cfg


def test_saved_model_rebuilds_from_its_own_metadata(tmp_path, model_and_cfg):
    model, cfg = model_and_cfg
    path = save_model(tmp_path / "m.safetensors", model, cfg, {"step": 7})
    assert read_metadata(path)["meta"] == {"step": 7}
    loaded, loaded_cfg, meta = load_model(path)
    assert loaded_cfg.model.fusion.name == "seqTransf" and meta["step"] == 7
    loaded.eval()
    frames, mask = torch.randn(2, 3, 3, 32, 32), torch.ones(2, 3, dtype=torch.bool)
    tokens = model.backbone.tokenize(["a red ball", "a blue box"])
    with torch.no_grad():
        a = model(frames, mask, tokens).sims
        b = loaded(frames, mask, tokens).sims
    assert torch.equal(a, b)
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)


def test_a_state_file_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.state.pt"
    # an instance of an arbitrary class: loading it needs the pickle machinery to import code
    torch.save({"position": {"step": 1}, "payload": _Payload()}, path)
    with pytest.raises(UnsafeCheckpointError, match="refuses"):
        load_state(path)


class _Payload:
    value = 1


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_a_state_file_that_would_execute_a_command_is_refused(tmp_path):
    path = tmp_path / "exploit.pt"
    torch.save({"x": _Exploit()}, path)
    with pytest.raises(UnsafeCheckpointError, match=str(path.name)):
        load_state(path)


def test_plain_state_round_trips(tmp_path):
    state = {"position": {"step": 3, "best": -1.5}, "rng": [torch.get_rng_state()],
             "names": ["a", "b"], "optimizer": {"state": {0: {"exp_avg": torch.ones(2)}}}}
    loaded = load_state(save_state(tmp_path / "s.pt", state))
    assert loaded["position"] == {"step": 3, "best": -1.5}
    assert torch.equal(loaded["rng"][0], state["rng"][0])


def test_atomic_write_leaves_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")

    def broken(tmp):
        open(tmp, "w").write("half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_resume_point_pointer_names_a_consistent_pair(tmp_path, model_and_cfg):
    model, cfg = model_and_cfg
    for step in (2, 4):
        save_resume_point(tmp_path, step, model, cfg, {"position": {"step": step}})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["last-step4.safetensors", "last-step4.state.pt", "last.json"]
    weights, state = load_resume_point(tmp_path)
    assert state["position"]["step"] == 4 and set(weights) == set(model.state_dict())


def test_a_non_calm_file_is_not_taken_for_a_checkpoint(tmp_path):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="x.safetensors"):
        load_model(bad)


def _batch(model, n=4):
    g = torch.Generator().manual_seed(0)
    return {"frames": torch.randn(n, 3, 3, 32, 32, generator=g),
            "frame_mask": torch.ones(n, 3, dtype=torch.bool),
            "tokens": model.backbone.tokenize([f"caption {i}" for i in range(n)]),
            "text_index": torch.arange(10, 10 + n), "size": n}


def _one_step(precision: str) -> float:
    cfg = from_dict(ExperimentConfig, {
        "model": {"backbone": {"name": "calm-micro"}, "anchors": {"labels": "coco"},
                  "fusion": {"name": "meanP"}},
        "train": {"precision": precision},
    })
    torch.manual_seed(0)
    model = CALM.from_config(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    torch.manual_seed(1)
    terms = train_step(model, model, CALMLoss(), _batch(model), opt, scaler, torch.device("cpu"),
                       cfg.train, TrainState(step=0))
    return terms["loss"]


def test_bf16_autocast_loss_stays_close_to_fp32():
    fp32, bf16 = _one_step("fp32"), _one_step("bf16")
    assert torch.isfinite(torch.tensor(bf16))
    assert bf16 == pytest.approx(fp32, rel=0.05)


def test_non_finite_loss_names_the_step_and_samples(model_and_cfg):
    model, cfg = model_and_cfg
    batch = _batch(model)
    batch["frames"][1] = float("nan")
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    with pytest.raises(NonFiniteLossError, match=r"step 6 .*\[10, 11, 12, 13\]"):
        train_step(model, model, CALMLoss(), batch, opt, scaler, torch.device("cpu"), cfg.train,
                   TrainState(step=5))
    skip_cfg = from_dict(ExperimentConfig, {"train": {"nonfinite_loss": "skip"}}).train
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert train_step(model, model, CALMLoss(), batch, opt, scaler, torch.device("cpu"), skip_cfg,
                      TrainState(step=5)) is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
