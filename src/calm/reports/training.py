"""Figures of training runs: loss and validation curves, and anchor distributions of test pairs."""

from __future__ import annotations

from pathlib import Path

import torch

from calm.engine.runlog import read_log
from calm.reports.plotting import pyplot, save


def training_curves(runs: dict[str, Path], path: Path) -> Path:
    """Task loss per step and validation t2v R@1 per evaluation, one line per run."""
    plt = pyplot()
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(10, 3.6))
    for label, run_dir in runs.items():
        records = read_log(Path(run_dir) / "metrics.jsonl")
        train = [r for r in records if r["kind"] == "train"]
        val = [r for r in records if r["kind"] == "val"]
        ax_loss.plot([r["step"] for r in train], [r["task"] for r in train], label=f"{label} task")
        if train and "align" in train[0]:
            ax_loss.plot([r["step"] for r in train], [r["align"] for r in train], "--",
                         label=f"{label} align")
        ax_val.plot([r["step"] for r in val], [r["t2v"]["R@1"] for r in val], "o-", label=label)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss")
    ax_loss.set_title("training loss")
    ax_loss.legend(fontsize=8)
    ax_val.set_xlabel("step")
    ax_val.set_ylabel("t2v R@1 (%)")
    ax_val.set_title("validation")
    ax_val.legend(fontsize=8)
    return save(fig, path)


def anchor_figure(
    labels: list[str], pairs: list[dict[str, torch.Tensor]], path: Path, top: int = 8
) -> Path:
    """For each test pair: V_p, S_p and S_p-hat on the anchors the text puts most weight on."""
    plt = pyplot()
    fig, axes = plt.subplots(len(pairs), 1, figsize=(10, 2.6 * len(pairs)), squeeze=False)
    for ax, pair in zip(axes[:, 0], pairs):
        order = torch.argsort(pair["S_p"], descending=True)[:top].tolist()
        xs = torch.arange(len(order)).float()
        width = 0.27
        ax.bar(xs - width, pair["V_p"][order].tolist(), width, label="V_p (video)")
        ax.bar(xs, pair["S_p"][order].tolist(), width, label="S_p (text)")
        ax.bar(xs + width, pair["S_hat"][order].tolist(), width, label="Ŝ_p (VAE from video)")
        ax.set_xticks(xs.tolist(), [labels[i][:28] for i in order], rotation=20, ha="right",
                      fontsize=7)
        ax.set_title(pair["caption"][:110], fontsize=9)
        ax.legend(fontsize=7)
    return save(fig, path)
