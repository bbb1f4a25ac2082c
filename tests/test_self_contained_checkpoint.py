"""A checkpoint carries its anchor labels: it loads, evaluates and captions after the label file
it was trained with is gone and the checkpoint itself has moved."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from calm.cli.main import main
from calm.config import ConfigError, ExperimentConfig, from_dict
from calm.data.benchmarks.convert import convert_annotations
from calm.data.synthetic import generate
from calm.engine.checkpoint import load_model, read_metadata, save_model
from calm.engine.models import model_from_config
from calm.model.anchors import load_labels

LABELS = ["a red ball", "a blue box", "something moving left", "rain"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("selfcontained")
    generate(root / "synth", scale="tiny", seed=5)
    return root / "synth" / "msrvtt" / "annotations", root / "synth" / "msrvtt" / "videos"


def _label_file(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "anchors.txt").write_text("# my anchors\n" + "\n".join(LABELS) + "\n")
    return folder / "anchors.txt"


def _eval(ckpt: Path, ann: Path, vids: Path, capsys, dataset: str = "msrvtt") -> dict:
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(ckpt), "--dataset", dataset, "--annotations",
                 str(ann), "--videos", str(vids), "--split", "test"]) == 0
    return json.loads(capsys.readouterr().out)


def test_labels_may_be_given_inline():
    assert load_labels(["  a dog ", "a cat"]) == ["a dog", "a cat"]
    for bad, message in (([], "empty"), (["a", "a"], "duplicate"), (["a", ""], "non-empty")):
        with pytest.raises(ValueError, match=message):
            load_labels(bad)
    cfg = from_dict(ExperimentConfig, {"model": {"anchors": {"labels": ["x", "y"]}}})
    assert cfg.model.anchors.labels == ["x", "y"]
    with pytest.raises(ConfigError, match="model.anchors.labels"):
        from_dict(ExperimentConfig, {"model": {"anchors": {"labels": 3}}})


def test_retrieval_checkpoint_survives_its_label_file(synth, tmp_path, capsys):
    ann, vids = synth
    labels = _label_file(tmp_path / "labels")
    cfg = from_dict(ExperimentConfig, {
        "model": {"backbone": {"name": "calm-micro"},
                  "anchors": {"labels": str(labels), "template": "a clip of {}"},
                  "fusion": {"name": "meanP"}, "alignment": {"name": "vae"}},
        "data": {"num_frames": 4, "num_workers": 0}, "train": {"eval_batch_size": 8}})
    model, cfg, _ = model_from_config(cfg)
    ckpt = save_model(tmp_path / "run" / "best.safetensors", model, cfg)
    before = _eval(ckpt, ann, vids, capsys)

    moved = tmp_path / "elsewhere" / "model.safetensors"
    moved.parent.mkdir()
    shutil.move(ckpt, moved)
    shutil.rmtree(tmp_path / "labels")
    shutil.rmtree(tmp_path / "run")
    stored = read_metadata(moved)["config"]["model"]["anchors"]
    assert stored == {**stored, "labels": LABELS, "template": "a clip of {}"}
    loaded, _, _ = load_model(moved)
    assert loaded.anchors.labels == LABELS
    after = _eval(moved, ann, vids, capsys)
    assert after["t2v"] == before["t2v"] and after["v2t"] == before["v2t"]


@pytest.mark.slow
def test_trained_captioning_checkpoint_evaluates_and_captions_without_label_file(
        synth, tmp_path, capsys):
    ann, vids = synth
    labels = _label_file(tmp_path / "labels")
    cfg = {
        "task": "captioning",
        "model": {"backbone": {"name": "calm-micro"}, "anchors": {"labels": str(labels)},
                  "alignment": {"name": "vae"},
                  "caption": {"layers": 1, "width": 64, "heads": 2, "max_length": 12,
                              "beam_size": 1}},
        "data": {"dataset": "msrvtt", "annotations": str(ann), "videos": str(vids),
                 "num_frames": 4, "num_workers": 0, "options": {"val_size": 4}},
        "train": {"epochs": 1, "max_steps": 2, "batch_size": 8, "eval_batch_size": 8},
    }
    (tmp_path / "cap.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["train", "--config", str(tmp_path / "cap.yaml"), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 0
    moved = tmp_path / "elsewhere" / "captioner.safetensors"
    moved.parent.mkdir()
    shutil.move(tmp_path / "run" / "checkpoints" / "best.safetensors", moved)
    shutil.rmtree(tmp_path / "labels")
    shutil.rmtree(tmp_path / "run")

    out = _eval(moved, ann, vids, capsys)
    assert out["task"] == "captioning" and "CIDEr" in out
    # the same split as own data (JSONL) gets the same caption metrics
    convert_annotations("msrvtt", ann, vids, tmp_path / "own.jsonl", splits=["test"])
    own = _eval(moved, tmp_path / "own.jsonl", vids, capsys, dataset="jsonl")
    assert {k: own[k] for k in ("BLEU-4", "CIDEr")} == {k: out[k] for k in ("BLEU-4", "CIDEr")}
    video = sorted(vids.glob("*.mp4"))[0]
    assert main(["caption", "--checkpoint", str(moved), str(video)]) == 0
    path, caption = capsys.readouterr().out.strip().split("\t")
    assert path == str(video) and caption.strip()
