"""synth -> pretrain-clip -> train -> eval -> ood through the command line, in subprocesses."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from calm.api import load

pytestmark = pytest.mark.slow


def calm(*args, cwd=None) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "calm", *map(str, args)], env=env, cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_cli_end_to_end(tmp_path):
    data = tmp_path / "synth"
    calm("synth", "--out", data, "--scale", "tiny", "--seed", "1")
    manifest = json.loads((data / "manifest.json").read_text())
    assert [d["name"] for d in manifest["domains"]] == ["msrvtt", "didemo", "lsmdc"]

    clip = tmp_path / "toyclip.safetensors"
    calm("pretrain-clip", "--data", data, "--out", clip, "--model", "calm-micro", "--steps", "3",
         "--batch-size", "16")
    assert clip.is_file()

    domain = manifest["domains"][0]
    cfg = {
        "model": {
            "backbone": {"name": "calm-micro", "checkpoint": str(clip)},
            "anchors": {"labels": str(data / "anchors.txt")},
            "alignment": {"name": "vae"},
        },
        "data": {"dataset": "msrvtt", "annotations": str(data / domain["annotations"]),
                 "videos": str(data / domain["videos"]), "num_frames": 4, "num_workers": 0,
                 "options": domain["loader_options"]},
        "train": {"epochs": 2, "batch_size": 16, "log_every": 1, "eval_batch_size": 8},
    }
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    out = calm("train", "--config", tmp_path / "exp.yaml", "--out", run, "--no-progress",
               "--set", "train.lr=1e-4")
    summary = json.loads(out[out.index("{"):])
    for name in ("config.yaml", "metrics.jsonl", "test_metrics.json", "splits.json",
                 "checkpoints/best.safetensors", "checkpoints/last.json"):
        assert (run / name).exists(), name
    assert list((run / "tensorboard").iterdir())
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["train"]["lr"] == pytest.approx(1e-4)
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    kinds = [r["kind"] for r in records]
    assert kinds.count("val") == 2 and kinds.count("test") == 1 and kinds[-1] == "test"
    best_val = max((r for r in records if r["kind"] == "val"),
                   key=lambda r: r["t2v"]["R@1"] + r["v2t"]["R@1"])
    assert summary["test"]["selected_by"]["step"] == best_val["step"]

    ckpt = run / "checkpoints" / "best.safetensors"
    evaluation = json.loads(calm("eval", "--checkpoint", ckpt, "--dataset", "msrvtt",
                                 "--annotations", data / domain["annotations"],
                                 "--videos", data / domain["videos"], "--split", "test",
                                 "--out", tmp_path / "eval.json", "--save-sim", tmp_path / "sim"))
    assert set(evaluation) >= {"t2v", "v2t", "n_texts", "n_videos"}
    assert set(evaluation["t2v"]) == {"R@1", "R@5", "R@10", "MdR", "MnR"}
    assert json.loads((tmp_path / "eval.json").read_text())["t2v"] == evaluation["t2v"]
    sim = np.load(tmp_path / "sim.npy")
    ids = json.loads((tmp_path / "sim.json").read_text())
    assert sim.dtype == np.float32
    assert sim.shape == (evaluation["n_texts"], evaluation["n_videos"])
    assert len(ids["text_ids"]) == sim.shape[0] and len(ids["video_ids"]) == sim.shape[1]
    # the ground truth is the 1k-A file's: each text's key and its video
    with open(data / domain["annotations"] / "MSRVTT_JSFUSION_test.csv", newline="") as f:
        rows = {r["key"]: r for r in csv.DictReader(f)}
    t2v = np.array(ids["text_to_video"])
    assert sorted(ids["text_ids"]) == sorted(rows)
    assert [ids["video_ids"][v] for v in t2v] == [rows[k]["video_id"] for k in ids["text_ids"]]
    # the matrix holds the model's scores: two entries against the Python API's
    api = load(ckpt)
    for i, j in ((0, int(t2v[0])), (1, 0)):
        score = api.score([rows[ids["text_ids"][i]]["sentence"]],
                          [data / domain["videos"] / f"{ids['video_ids'][j]}.mp4"])
        assert float(score) == pytest.approx(float(sim[i, j]), abs=1e-4)
    # the reported metrics by hand: no ties in the matrix, so a rank is a position in a sort
    assert len(np.unique(sim)) == sim.size
    t2v_rank = np.array([1 + list(np.argsort(-row)).index(v) for row, v in zip(sim, t2v)])
    v2t_rank = np.array([1 + min(list(np.argsort(-sim[:, v])).index(t) for t in np.flatnonzero(t2v == v))
                         for v in range(sim.shape[1]) if (t2v == v).any()])
    for name, ranks in (("t2v", t2v_rank), ("v2t", v2t_rank)):
        by_hand = {"R@1": 100 * np.mean(ranks <= 1), "R@5": 100 * np.mean(ranks <= 5),
                   "R@10": 100 * np.mean(ranks <= 10), "MdR": np.median(ranks),
                   "MnR": np.mean(ranks)}
        assert evaluation[name] == pytest.approx(by_hand), name
    assert evaluation["t2v"] == summary["test"]["t2v"]

    ood_dir = tmp_path / "ood"
    calm("ood", "--checkpoint", f"calm={ckpt}", "--synthetic", data, "--out", ood_dir)
    table = json.loads((ood_dir / "ood.json").read_text())
    row = table["results"]["calm"]
    assert set(row) == {"msrvtt", "didemo", "lsmdc"}
    assert row["msrvtt"]["in_domain"] and not row["didemo"]["in_domain"]
    assert row["msrvtt"]["t2v"] == evaluation["t2v"]
    assert "| calm |" in (ood_dir / "ood.md").read_text()
    assert (ood_dir / "ood_heatmap.png").read_bytes()[:4] == b"\x89PNG"


def test_selection_never_reads_the_test_split_before_the_end(tmp_path, monkeypatch):
    from calm.config import ExperimentConfig, from_dict
    from calm.engine import inputs as engine_data
    from calm.engine.train import train
    from tests.engine_fixtures import tiny_config, write_tiny_msrvtt

    ann, vid = write_tiny_msrvtt(tmp_path)
    calls = []
    real_split = engine_data.DataSetup.split

    def spy(self, name):
        calls.append(name)
        return real_split(self, name)

    monkeypatch.setattr(engine_data.DataSetup, "split", spy)
    cfg = from_dict(ExperimentConfig, tiny_config(ann, vid, epochs=2))
    train(cfg, tmp_path / "run", progress=False)
    assert calls == ["train", "val", "test"]
    records = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records if r["kind"] != "train"] == ["val", "val", "test"]


def test_a_fresh_run_into_a_used_folder_starts_a_new_log(tmp_path):
    from calm.config import ExperimentConfig, from_dict
    from calm.engine.train import train
    from tests.engine_fixtures import tiny_config, write_tiny_msrvtt

    ann, vid = write_tiny_msrvtt(tmp_path)
    cfg = from_dict(ExperimentConfig, tiny_config(ann, vid, epochs=1))
    train(cfg, tmp_path / "run", progress=False)
    first = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    train(cfg, tmp_path / "run", progress=False)
    again = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(again) == len(first)
    assert [json.loads(x)["kind"] for x in again].count("test") == 1


def test_config_errors_name_the_key(tmp_path):
    (tmp_path / "bad.yaml").write_text("train:\n  lr: 1e-5\n  bogus: 3\n")
    proc = subprocess.run([sys.executable, "-m", "calm", "train", "--config",
                           str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "train.bogus" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "calm", "model-info", "--set",
                           "model.fusion.name=maxP"], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "maxP" in proc.stderr
