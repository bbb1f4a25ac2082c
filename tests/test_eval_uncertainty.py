"""`calm eval --uncertainty` on a tiny VAE model and the tiny synthetic benchmark."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from calm.api import load
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


def _average_ranks(x) -> np.ndarray:
    """1-based ranks, ties sharing their mean rank, counted pairwise (no sort)."""
    x = np.asarray(x, dtype=np.float64)
    below = (x[None, :] < x[:, None]).sum(axis=1)
    tied = (x[None, :] == x[:, None]).sum(axis=1)
    return below + (tied + 1) / 2


def _spearman(a, b) -> float:
    return float(np.corrcoef(_average_ranks(a), _average_ranks(b))[0, 1])


def test_eval_uncertainty_reports_sigma_against_the_ranks(tmp_path, synth, capsys):
    ckpt = _checkpoint(tmp_path / "vae.safetensors", synth, "vae")
    out = tmp_path / "run" / "eval.json"
    assert main(_eval_args(ckpt, synth, "--uncertainty", "--out", str(out),
                           "--save-sim", str(tmp_path / "sim"))) == 0
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

    # the reference: sigma of every clip from the Python API (its own decoding of the files),
    # ranks counted by hand in the saved matrix (no ties in it, so counting is exact)
    sim = np.load(tmp_path / "sim.npy").astype(np.float64)
    ids = json.loads((tmp_path / "sim.json").read_text())
    t2v = np.array(ids["text_to_video"])
    assert len(np.unique(sim)) == sim.size
    videos = synth / "msrvtt" / "videos"
    sigma = load(ckpt).uncertainty([videos / f"{v}.mp4" for v in ids["video_ids"]],
                                   signal="sigma").double().numpy()
    true = sim[np.arange(len(t2v)), t2v]
    text_rank = 1 + (sim > true[:, None]).sum(axis=1)
    own_best = np.array([true[t2v == v].max() for v in range(sim.shape[1])])
    video_rank = 1 + (sim > own_best[None, :]).sum(axis=0)

    v = unc["sigma"]
    assert v["spearman"] == pytest.approx(_spearman(sigma, video_rank), abs=1e-6)
    hits = (video_rank[np.argsort(sigma)] == 1).astype(float)  # least uncertain first
    kept = [max(1, 12 - int(np.floor(f * 12 + 1e-9))) for f in unc["fractions"]]
    assert unc["fractions"] == pytest.approx([k / 10 for k in range(10)])
    assert v["sparsification"] == pytest.approx([100 * hits[:k].mean() for k in kept], abs=1e-6)
    assert v["sparsification"][0] == pytest.approx(result["v2t"]["R@1"])
    assert len(v["bins_r1"]) == 10 and v["bins_r1"][0] == pytest.approx(100 * hits[:2].mean())
    top2 = -np.sort(-sim, axis=0)[:2]
    margin = unc["baselines"]["margin"]
    assert margin["spearman"] == pytest.approx(_spearman(top2[1] - top2[0], video_rank), abs=1e-6)
    assert set(unc["baselines"]) == {"vp_entropy", "margin", "top1_prob", "random"}
    assert unc["baselines"]["random"]["spearman"] == 0.0

    text = unc["text_query"]
    assert text["n_queries"] == result["n_texts"] == len(t2v)
    assert text["sigma"]["spearman"] == pytest.approx(_spearman(sigma[t2v], text_rank), abs=1e-6)
    assert set(text) >= {*SIGNALS, "sp_entropy", "baselines", "oracle", "calibration"}
    assert text["n_queries"] == result["n_texts"]
    assert text["sigma"]["sparsification"][0] == pytest.approx(result["t2v"]["R@1"])
    assert set(text) >= {"sigma", "sp_entropy", "baselines", "oracle"}

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
