"""`calm eval --uncertainty` on a tiny VAE model and the tiny synthetic benchmark."""

from __future__ import annotations

import json

import pytest
import torch

from calm.cli.main import main
from calm.config import ExperimentConfig, from_dict
from calm.data.synthetic import generate
from calm.engine.checkpoint import save_model
from calm.model.retrieval import CALM

SUMMARY_KEYS = {"bins_r1", "spearman", "ause", "sparsification", "auroc", "aurc", "risk_coverage"}
SIGNALS = {"sigma", "sigma_active", "log_sigma_sum", "s_hat_entropy", "mutual_info"}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    generate(out, scale="tiny", seed=1)
    return out


def _checkpoint(path, synth, alignment: str):
    cfg = from_dict(ExperimentConfig, {
        "model": {"backbone": {"name": "calm-micro"}, "anchors": {"labels": str(synth / "anchors.txt")},
                  "alignment": {"name": alignment}},
        "data": {"dataset": "msrvtt", "num_frames": 4, "num_workers": 0},
        "train": {"eval_batch_size": 8},
    })
    torch.manual_seed(0)
    return save_model(path, CALM.from_config(cfg.model), cfg)


def _eval_args(ckpt, synth, *extra):
    return ["eval", "--checkpoint", str(ckpt), "--dataset", "msrvtt",
            "--annotations", str(synth / "msrvtt" / "annotations"),
            "--videos", str(synth / "msrvtt" / "videos"),
            "--split", "train", "--set", "data.options.val_size=4", *extra]


def test_eval_uncertainty_writes_the_block_and_the_figure(tmp_path, synth, capsys):
    ckpt = _checkpoint(tmp_path / "vae.safetensors", synth, "vae")
    out = tmp_path / "run" / "eval.json"
    assert main(_eval_args(ckpt, synth, "--uncertainty", "--out", str(out))) == 0
    result = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == result
    unc = result["uncertainty"]
    assert set(unc["sigma"]) == SUMMARY_KEYS and len(unc["sigma"]["bins_r1"]) == 10
    assert len(unc["sigma"]["sparsification"]) == 10 == len(unc["fractions"])
    assert set(unc["baselines"]) == {"vp_entropy", "margin", "top1_prob", "random"}
    assert set(unc["signals"]) == SIGNALS and all(set(unc[n]) == SUMMARY_KEYS for n in SIGNALS)
    assert len(unc["sigma"]["risk_coverage"]) == len(unc["coverages"]) == 20
    # the risk at full coverage is the share of wrong top-1 answers
    assert unc["sigma"]["risk_coverage"][-1] == pytest.approx(100 - result["v2t"]["R@1"])
    cal = unc["calibration"]
    assert cal["accuracy"] == pytest.approx(result["v2t"]["R@1"]) and 0 <= cal["ece"] <= 100
    assert sum(b["n"] for b in cal["bins"]) == 12
    for summary in unc["baselines"].values():
        assert set(summary) >= SUMMARY_KEYS
    assert unc["query"] == "video" and unc["n_queries"] == result["n_videos"] == 12
    # the sparsification curves start at the retrieval R@1 the same run reports
    assert unc["sigma"]["sparsification"][0] == pytest.approx(result["v2t"]["R@1"])
    text = unc["text_query"]
    assert set(text) >= {*SIGNALS, "sp_entropy", "baselines", "oracle", "calibration"}
    assert text["n_queries"] == result["n_texts"]
    assert text["sigma"]["sparsification"][0] == pytest.approx(result["t2v"]["R@1"])
    syn = unc["synthetic"]
    assert syn["n_clips"] == 12 and syn["metadata"].endswith("msrvtt/metadata.json")
    assert set(syn["spearman"]) == {*SIGNALS, "vp_entropy"}
    assert set(syn["spearman"]["mutual_info"]) == {"captions_fitting", "nameable_facts",
                                                   "own_caption_matches"}
    figure = tmp_path / "run" / "uncertainty.png"
    assert unc["figure"] == str(figure) and figure.stat().st_size > 10_000


def test_a_model_without_a_vae_is_refused_naming_the_flag(tmp_path, synth, capsys):
    ckpt = _checkpoint(tmp_path / "none.safetensors", synth, "none")
    assert main(_eval_args(ckpt, synth, "--uncertainty")) == 2
    err = capsys.readouterr().err
    assert "--uncertainty" in err and "VAE" in err


def test_figure_without_uncertainty_is_refused(tmp_path, synth, capsys):
    ckpt = tmp_path / "unused.safetensors"
    assert main(_eval_args(ckpt, synth, "--figure", str(tmp_path / "f.png"))) == 2
    assert "--uncertainty" in capsys.readouterr().err
