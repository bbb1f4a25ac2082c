"""Captioning through the command line: train, eval (COCO metrics), ood, `calm caption`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml

from calm.metrics import METRIC_NAMES, caption_metrics
from tests.test_end_to_end import calm

pytestmark = pytest.mark.slow


def test_captioning_cli(tmp_path):
    data = tmp_path / "synth"
    calm("synth", "--out", data, "--scale", "tiny", "--seed", "2")
    manifest = json.loads((data / "manifest.json").read_text())
    domain = manifest["domains"][0]
    cfg = {
        "task": "captioning",
        "model": {
            "backbone": {"name": "calm-micro"},
            "anchors": {"labels": str(data / "anchors.txt")},
            "alignment": {"name": "vae"},
            "caption": {"layers": 1, "width": 64, "heads": 2, "max_length": 24, "beam_size": 2},
        },
        "data": {"dataset": "msrvtt", "annotations": str(data / domain["annotations"]),
                 "videos": str(data / domain["videos"]), "num_frames": 4, "num_workers": 0,
                 "options": domain["loader_options"]},
        "train": {"epochs": 2, "batch_size": 16, "lr": 1e-3, "log_every": 1, "eval_batch_size": 8},
    }
    (tmp_path / "cap.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    calm("train", "--config", tmp_path / "cap.yaml", "--out", run, "--no-progress")
    test = json.loads((run / "test_metrics.json").read_text())
    assert test["selected_by"]["metric"] == "CIDEr"
    # the reference: every test clip captioned one by one by `calm caption` (beam 2, as the
    # config), scored against the 1k-A file's sentence of that clip
    with open(data / domain["annotations"] / "MSRVTT_JSFUSION_test.csv", newline="") as f:
        references = {r["video_id"]: [r["sentence"]] for r in csv.DictReader(f)}
    videos = data / domain["videos"]
    printed = calm("caption", "--checkpoint", run / "checkpoints" / "best.safetensors",
                   *[videos / f"{v}.mp4" for v in references], "--beam-size", "2")
    captions = {Path(p).stem: c for p, c in (line.split("\t") for line in printed.splitlines())}
    assert set(captions) == set(references) and test["n_videos"] == len(references)
    by_hand = caption_metrics(captions, references)
    assert {k: test[k] for k in METRIC_NAMES} == pytest.approx(by_hand, abs=1e-6)
    assert any(by_hand[k] > 0 for k in METRIC_NAMES)  # a comparison of numbers, not of zeros
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in records if r["kind"] != "train"] == ["val", "val", "test"]

    ckpt = run / "checkpoints" / "best.safetensors"
    out = json.loads(calm("eval", "--checkpoint", ckpt, "--dataset", "msrvtt",
                          "--annotations", data / domain["annotations"],
                          "--videos", data / domain["videos"], "--split", "test"))
    assert out["task"] == "captioning"
    assert {k: out[k] for k in ("BLEU-4", "CIDEr")} == {k: test[k] for k in ("BLEU-4", "CIDEr")}

    ood = tmp_path / "ood"
    calm("ood", "--checkpoint", f"cap={ckpt}", "--targets",
         f"msrvtt=msrvtt:{data / domain['annotations']}:{data / domain['videos']}:test",
         f"didemo=didemo:{data / 'didemo/annotations'}:{data / 'didemo/videos'}:test",
         "--out", ood)
    assert "CIDEr" in (ood / "ood.md").read_text()
    table = json.loads((ood / "ood.json").read_text())["results"]["cap"]
    assert table["msrvtt"]["in_domain"] and not table["didemo"]["in_domain"]

    video = sorted((data / domain["videos"]).glob("*.mp4"))[0]
    printed = calm("caption", "--checkpoint", ckpt, video, "--beam-size", "1")
    path, caption = printed.strip().split("\t")
    assert path == str(video) and caption.strip()


def test_captioning_trains_under_torchrun_with_two_processes(tmp_path):
    import os
    import subprocess
    import sys

    data = tmp_path / "synth"
    calm("synth", "--out", data, "--scale", "tiny", "--seed", "3")
    cfg = {
        "task": "captioning",
        "model": {"backbone": {"name": "calm-micro"},
                  "anchors": {"labels": str(data / "anchors.txt")}, "alignment": {"name": "vae"},
                  "caption": {"layers": 1, "width": 64, "heads": 2, "max_length": 24,
                              "beam_size": 1}},
        "data": {"dataset": "msrvtt", "annotations": str(data / "msrvtt/annotations"),
                 "videos": str(data / "msrvtt/videos"), "num_frames": 4, "num_workers": 0,
                 "options": {"val_size": 4}},
        "train": {"epochs": 1, "batch_size": 8, "lr": 1e-3, "eval_batch_size": 8},
    }
    (tmp_path / "cap.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "calm", "train", "--config", str(tmp_path / "cap.yaml"), "--out",
         str(tmp_path / "run"), "--no-progress"],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    test = json.loads((tmp_path / "run" / "test_metrics.json").read_text())
    # the two processes captioned disjoint halves of the test split; together they must give
    # what one process gives on the whole split with the same checkpoint
    single = json.loads(calm("eval", "--checkpoint",
                             tmp_path / "run" / "checkpoints" / "best.safetensors",
                             "--dataset", "msrvtt", "--annotations", data / "msrvtt/annotations",
                             "--videos", data / "msrvtt/videos", "--split", "test"))
    with open(data / "msrvtt/annotations/MSRVTT_JSFUSION_test.csv", newline="") as f:
        assert test["n_videos"] == single["n_videos"] == len(list(csv.DictReader(f)))
    assert {k: test[k] for k in METRIC_NAMES} == pytest.approx(
        {k: single[k] for k in METRIC_NAMES}, abs=1e-6)
