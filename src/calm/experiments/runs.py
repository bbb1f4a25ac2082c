"""`calm experiment`: a grid of fine-tuning runs on the synthetic benchmark, resumable, with
statistics.

For every run (a cell of the grid with one seed) in order: train on the demo's training domain
with the demo's recipe, then evaluate the best checkpoint on the test split of every domain and
keep each test query's rank of its true video, which the paired bootstrap needs. The in-domain
evaluation also gives the run's mechanism numbers (`calm.experiments.mechanism`: anchor
diagnostics, and for a model with a VAE the uncertainty of its sigma) in the same pass.

A run is finished when its `result.json` exists with those blocks and is never run again; a
`result.json` written before the blocks existed is completed from its checkpoint (one evaluation,
no training); a run that was stopped continues from its resume point (`train(..., resume=True)`,
as `calm train --resume` does); a run whose training finished but whose evaluation did not is only
evaluated. After each run `results.json` and `results.md` are rewritten from all finished runs.

Layout under OUT:
    grid.yaml                         the grid as read (defaults filled in)
    data/                             the synthetic benchmark, unless --data points elsewhere
    cells/<cell>/seed<k>/recipe.json  what the grid decided for this run (checked on reuse)
    cells/<cell>/seed<k>/train/       the `calm train` run directory
    cells/<cell>/seed<k>/sim/         per domain: similarity matrix (.npy) and query ids (.json)
    cells/<cell>/seed<k>/uncertainty.json  (VAE models) the in-domain uncertainty block in full
    cells/<cell>/seed<k>/result.json  metrics and per-query ranks per domain, the in-domain
                                      `anchors` and `uncertainty` blocks: the run is finished
    results.json, results.md
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm import tqdm

from calm.config import ConfigError, ExperimentConfig
from calm.engine.drivers import Target, evaluate_checkpoint, synthetic_targets
from calm.engine.models import open_model
from calm.engine.runtime import pick_device
from calm.engine.train import train
from calm.experiments.benchmark import prepare_benchmark, training_frame_cache, training_videos
from calm.experiments.grid import Cell, Grid, run_config, run_folder
from calm.experiments.mechanism import (
    MECHANISM_BLOCKS,
    in_domain_blocks,
)
from calm.experiments.recipe import Recipe
from calm.experiments.results import write_results
from calm.io import write_json_atomic
from calm.metrics.retrieval import TIE_RULES, hit_rates, ranks_t2v
from calm.toy_clip.pretrain import PretrainConfig, pretrained_clip


@dataclass
class Setting:
    """What every run shares: the benchmark, its training domain, and the toy CLIPs (one per
    distinct `pretrain` section among the cells; most grids have one)."""

    data_root: Path
    domain: dict
    n_train: int
    targets: list[Target]
    progress: bool = False
    clips: dict[str, Path] = field(default_factory=dict)
    frame_caches: dict[tuple[int, str], Path] = field(default_factory=dict)

    @property
    def in_domain(self) -> Target:
        return next(t for t in self.targets if t.name == self.domain["name"])

    def clip_path(self, pretrain: PretrainConfig) -> Path:
        """The toy CLIP `pretrain` describes: trained once, then read from the cache."""
        key = json.dumps(dataclasses.asdict(pretrain), sort_keys=True)
        if key not in self.clips:
            self.clips[key], _ = pretrained_clip(self.data_root, pretrain, progress=self.progress)
        return self.clips[key]

    def frame_cache(self, recipe: Recipe) -> Path:
        """The training domain's complete frame cache for the recipe's frames and model."""
        key = (recipe.num_frames, recipe.pretrain.model)
        if key not in self.frame_caches:
            self.frame_caches[key] = training_frame_cache(self.data_root, self.domain, *key)
        return self.frame_caches[key]

    def steps_per_epoch(self, recipe: Recipe) -> int:
        return max(1, self.n_train // recipe.batch_size)

    def run_config(self, grid: Grid, cell: Cell, seed: int) -> ExperimentConfig:
        recipe = grid.cell_recipe(cell, seed)
        return run_config(grid, cell, seed, self.data_root, self.domain,
                          self.clip_path(recipe.pretrain), self.steps_per_epoch(recipe),
                          self.frame_cache(recipe))


def prepare(grid: Grid, data_root: Path, progress: bool) -> Setting:
    """The demo's set-up: benchmark generated or reused, the base recipe's toy CLIP trained or read
    from the cache (a cell with its own `recipe.pretrain` gets its own when it runs)."""
    base = grid.base
    manifest, _ = prepare_benchmark(data_root, base.scale, base.data_seed)
    domain = manifest["domains"][0]
    setting = Setting(data_root, domain, training_videos(data_root, domain),
                      synthetic_targets(data_root), progress)
    setting.clip_path(base.pretrain)
    return setting


def machine(device: str) -> dict:
    """Where a run ran: results are bit-identical only on the same CPU, threads and torch."""
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
            "platform": platform.platform(), "torch": torch.__version__,
            "device": str(pick_device(device))}


def _write_json(path: Path, data) -> None:
    write_json_atomic(path, data, indent=1)


def check_recipe(folder: Path, recipe: dict) -> None:
    """A run folder made with another recipe is an error, not silently reused or resumed."""
    path = folder / "recipe.json"
    if not path.is_file():
        return
    stored = json.loads(path.read_text())
    current = json.loads(json.dumps(recipe))  # tuples -> lists, as stored
    if stored != current:
        changed = sorted(k for k in set(stored) | set(current) if stored.get(k) != current.get(k))
        raise ConfigError(
            f"{path}: this run was made with a different recipe (differs in {changed}); delete "
            f"{folder} to run it again with the grid as it is now, or use another --out")


def train_run(cfg: ExperimentConfig, train_dir: Path) -> dict:
    """Trains, resumes a stopped run, or reuses a finished one; returns train's summary."""
    done = train_dir / "train_result.json"
    if done.is_file():
        return {**json.loads(done.read_text()), "reused": True}
    resume = (train_dir / "checkpoints" / "last.json").is_file()
    if not resume and train_dir.exists():
        shutil.rmtree(train_dir)  # stopped before its first resume point: start afresh
    started = time.perf_counter()
    result = train(cfg, train_dir, resume=resume, progress=False)
    info = {"steps": result["steps"], "best_val_r1_sum": result["best_val_r1_sum"],
            "skipped_videos": result["skipped_videos"], "skipped_steps": result["skipped_steps"],
            "resumed": resume, "seconds": time.perf_counter() - started}
    _write_json(done, info)
    for resume_point in (train_dir / "checkpoints").glob("last*"):
        resume_point.unlink()  # two thirds of a finished run's disk, never read again
    return {**info, "reused": False}


def evaluate_in_domain(checkpoint: Path, loaded, target: Target, anchor_prompts,
                       save_sim=None) -> dict:
    """The training domain's test evaluation with the anchor diagnostics (zero-shot ones for a
    model without anchors) and, for a model with a VAE, the uncertainty block: one pass gives the
    metrics and the mechanism numbers."""
    return evaluate_checkpoint(checkpoint, target.dataset, target.annotations, target.videos,
                               target.split, save_sim=save_sim, loaded=loaded,
                               uncertainty=loaded.model.has_vae, anchor_prompts=anchor_prompts)


def evaluate_run(checkpoint: Path, setting: Setting, folder: Path,
                 anchor_cfg) -> tuple[dict, dict]:
    """Metrics per domain, and per test query its rank of its true video and its R@1 term (1 for
    a hit; under random tie-breaking, the probability of one), by the tie rule the metrics used,
    so that the mean of the terms is the reported R@1; and the in-domain mechanism blocks."""
    loaded = open_model(checkpoint)
    rule_key = {name: key for key, name in TIE_RULES.items()}
    domains, blocks = {}, {}
    for target in setting.targets:
        in_domain = target.name == setting.domain["name"]
        prefix = folder / "sim" / target.name
        if in_domain:
            result = evaluate_in_domain(checkpoint, loaded, target, anchor_cfg, save_sim=prefix)
            blocks = in_domain_blocks(loaded.model, result, folder)
        else:
            result = evaluate_checkpoint(checkpoint, target.dataset, target.annotations,
                                         target.videos, target.split, save_sim=prefix,
                                         loaded=loaded)
        ids = json.loads(prefix.with_suffix(".json").read_text())
        sim, truth = np.load(prefix.with_suffix(".npy")), np.asarray(ids["text_to_video"])
        ties = rule_key[result["tie_rule"]]
        domains[target.name] = {
            "in_domain": in_domain,
            "n_texts": result["n_texts"], "n_videos": result["n_videos"],
            "t2v": result["t2v"], "v2t": result["v2t"], "tie_rule": result["tie_rule"],
            "text_ids": ids["text_ids"],
            # each query's true video (a column of the similarity matrix): the cluster the
            # hierarchical bootstrap draws a video's captions by
            "t2v_videos": truth.tolist(),
            "t2v_ranks": ranks_t2v(sim, truth, ties).tolist(),
            "t2v_hits_at_1": hit_rates(sim, truth, "t2v", 1, ties).tolist(),
        }
    return domains, blocks


def run_one(out: Path, grid: Grid, cell: Cell, seed: int, setting: Setting) -> dict:
    folder = run_folder(out, cell, seed)
    recipe = grid.recipe(cell, seed)
    check_recipe(folder, recipe)
    _write_json(folder / "recipe.json", recipe)
    cfg = setting.run_config(grid, cell, seed)
    trained = train_run(cfg, folder / "train")
    started = time.perf_counter()
    domains, blocks = evaluate_run(folder / "train" / "checkpoints" / "best.safetensors",
                                   setting, folder, cfg.model.anchors)
    eval_s = time.perf_counter() - started
    train_s = 0.0 if trained["reused"] else trained["seconds"]
    result = {
        "cell": cell.name, "axes": dict(cell.values), "seed": seed, "recipe": recipe,
        "trained_on": setting.domain["name"], "train": trained,
        "seconds": {"train": train_s, "eval": eval_s, "total": train_s + eval_s},
        "machine": machine(cfg.train.device), "domains": domains, **blocks,
    }
    _write_json(folder / "result.json", result)
    return result


def missing_blocks(result: dict) -> list[str]:
    return [name for name in MECHANISM_BLOCKS if name not in result]


def complete_run(out: Path, grid: Grid, cell: Cell, seed: int, setting: Setting) -> dict:
    """Adds the mechanism blocks to a run finished before they existed: one evaluation of its
    best checkpoint on the training domain (none for a model with neither anchors nor VAE), no
    training; the stored metrics and ranks are left as they are."""
    folder = run_folder(out, cell, seed)
    path = folder / "result.json"
    result = json.loads(path.read_text())
    checkpoint = folder / "train" / "checkpoints" / "best.safetensors"
    if not checkpoint.is_file():
        raise ConfigError(f"{path}: lacks the {missing_blocks(result)} block(s), and the "
                          f"checkpoint to measure them with, {checkpoint}, is gone; delete "
                          f"{folder} to run it again")
    cfg = setting.run_config(grid, cell, seed)
    started = time.perf_counter()
    loaded = open_model(checkpoint)
    evaluated = evaluate_in_domain(checkpoint, loaded, setting.in_domain, cfg.model.anchors)
    result.update(in_domain_blocks(loaded.model, evaluated, folder))
    seconds = time.perf_counter() - started
    result["seconds"] = {**result["seconds"], "mechanism_added": seconds,
                         "eval": result["seconds"]["eval"] + seconds,
                         "total": result["seconds"]["total"] + seconds}
    _write_json(path, result)
    return result


def run_state(out: Path, grid: Grid, cell: Cell, seed: int) -> str:
    """`finished`, `incomplete` (a result.json without the mechanism blocks) or `pending`."""
    folder = run_folder(out, cell, seed)
    check_recipe(folder, grid.recipe(cell, seed))
    path = folder / "result.json"
    if not path.is_file():
        return "pending"
    return "incomplete" if missing_blocks(json.loads(path.read_text())) else "finished"


def run_experiment(grid: Grid, out: str | Path, data_root: str | Path | None = None,
                   progress: bool = True, command: str | None = None) -> dict:
    """Runs every unfinished run of the grid, one progress bar over runs; returns the summary
    that `results.json` holds."""
    out = Path(out)
    runs = grid.runs()
    states = {(cell.name, seed): run_state(out, grid, cell, seed) for cell, seed in runs}
    pending = [(cell, seed) for cell, seed in runs if states[(cell.name, seed)] != "finished"]
    out.mkdir(parents=True, exist_ok=True)
    (out / "grid.yaml").write_text(yaml.safe_dump(grid.to_dict(), sort_keys=False))
    data_root = Path(data_root) if data_root else out / "data"
    setting = prepare(grid, data_root, progress) if pending else None
    bar = tqdm(total=len(runs), initial=len(runs) - len(pending), desc="experiment", unit="run",
               disable=not progress, dynamic_ncols=True)
    for cell, seed in pending:
        bar.set_postfix_str(f"{cell.name} seed {seed}")
        if states[(cell.name, seed)] == "incomplete":
            result = complete_run(out, grid, cell, seed, setting)
        else:
            result = run_one(out, grid, cell, seed, setting)
        write_results(out, grid, command)
        bar.update(1)
        if progress:
            r1 = ", ".join(f"{d} {r['t2v']['R@1']:.1f}" for d, r in result["domains"].items())
            bar.write(f"{cell.name} seed {seed}: t2v R@1 {r1} ({result['seconds']['total']:.0f} s)")
    bar.close()
    return write_results(out, grid, command)
