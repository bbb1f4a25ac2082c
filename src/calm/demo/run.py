"""`calm demo`: the whole method on the synthetic benchmark, baseline against CALM, in minutes.

Steps: generate the benchmark (or reuse it), build or reuse the pretrained toy CLIP, fine-tune the
baseline (alignment `none`) and CALM (`vae`) with the same seed and budget on the first domain,
evaluate both on every domain's test split, and write `report.md` with the table and plots.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import torch

from calm.clock import Phase
from calm.config import ExperimentConfig
from calm.data.video import FrameSampler
from calm.engine.drivers import ood_matrix, synthetic_targets
from calm.engine.inputs import data_setup
from calm.engine.models import open_model
from calm.engine.runtime import threads_beside, torch_threads
from calm.engine.train import train
from calm.experiments.benchmark import prepare_benchmark, training_frame_cache, training_videos
from calm.experiments.mechanism import DIAGNOSTICS_LEGEND, diagnostics_table
from calm.experiments.recipe import Recipe, experiment_config
from calm.reports.ood import markdown_table, write_ood
from calm.reports.training import anchor_figure, training_curves
from calm.reports.uncertainty import uncertainty_figure
from calm.toy_clip.pretrain import pretrained_clip


def _anchor_pairs(ckpt: Path, cfg: ExperimentConfig, n: int = 3) -> tuple[list[str], list[dict]]:
    """V_p, S_p and S_p-hat for the first test pairs of the training domain."""
    model, _, _ = open_model(ckpt)
    model.eval()
    data = data_setup(cfg.data, model.backbone.preprocess, model.backbone.tokenizer)
    ann = data.split(cfg.data.test_split)
    pairs = []
    with torch.no_grad(), model.evaluation_anchors():
        for text in ann.texts[:n]:
            video = ann.videos[text.video_index]
            frames, mask = FrameSampler(data.spec, mode="test")(video.path)
            feats = model.encode_frames(frames[None], mask[None])
            sentence = model.encode_text(data.tokenize([text.text]))
            d = model.anchor_distributions(sentence, feats, mask[None])
            pairs.append({"caption": text.text, "V_p": d.vp[0], "S_p": d.sp[0],
                          "S_hat": d.s_hat[0]})
    return model.anchor_labels, pairs


def run_demo(out: str | Path, demo: Recipe | None = None, progress: bool = True,
             data_root: str | Path | None = None) -> dict:
    demo = demo or Recipe()
    # torch's threads take the cores the runs' loader processes leave: all of them, as the runs
    # read the training domain from its frame cache in-process (`experiment_config`); the toy
    # CLIP's pretraining sets its own plan (`calm.toy_clip.pretrain.machine_plan`)
    with torch_threads(threads_beside(0)):
        return _run_demo(out, demo, progress, data_root)


def _run_demo(out: str | Path, demo: Recipe, progress: bool, data_root: str | Path | None) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    @contextmanager
    def timed(name: str):
        # wall seconds per phase, and CPU seconds (this process and its finished workers): on a
        # shared machine wall time says who else was busy, CPU time what the phase cost
        with Phase() as phase:
            yield
        timings[f"{name}_s"], timings[f"{name}_cpu_s"] = phase.wall_s, phase.cpu_s

    total = Phase().start()
    data_root = Path(data_root) if data_root else out / "data"
    with timed("synth"):
        manifest, synth_s = prepare_benchmark(data_root, demo.scale, demo.data_seed)
    if synth_s is None:  # reused: nothing was generated
        del timings["synth_s"], timings["synth_cpu_s"]

    with timed("pretrain"):
        clip_path, clip_info = pretrained_clip(data_root, demo.pretrain, progress=progress)

    domain = manifest["domains"][0]
    n_train = training_videos(data_root, domain)
    with timed("frame_cache"):  # both runs read the training domain's frames from it
        frames = training_frame_cache(data_root, domain, demo.num_frames, demo.pretrain.model,
                                      workers=max(1, demo.num_workers))
    runs, checkpoints, configs, results = {}, [], {}, {}
    for label, alignment in demo.methods.items():
        cfg = experiment_config(demo, data_root, domain, clip_path, alignment,
                                max(1, n_train // demo.batch_size), frames)
        run_dir = out / "runs" / label
        with timed(f"train_{label}"):
            result = train(cfg, run_dir, progress=progress)
        runs[label] = run_dir
        configs[label] = cfg
        checkpoints.append((label, str(run_dir / "checkpoints" / "best.safetensors")))
        results[label] = result

    calm_label = next((lab for lab, a in demo.methods.items() if a == "vae"), None)
    first_cfg = next(iter(configs.values()))
    anchor_prompts = first_cfg.model.anchors  # the baseline is measured with the same prompts
    with timed("ood_eval"):  # one pass per model and domain gives every number below
        matrix = ood_matrix(checkpoints, synthetic_targets(data_root),
                            anchor_prompts=anchor_prompts, in_domain_uncertainty=True)
        files = write_ood(matrix, out)

    curves = training_curves(runs, out / "training_curves.png")
    in_domain = {label: next(r for r in row.values() if r["in_domain"])
                 for label, row in matrix["results"].items()}
    diagnostics = {label: result["anchors"] for label, result in in_domain.items()}
    anchors_png, uncertainty = None, None
    with timed("diagnostics"):
        if calm_label:
            ckpt = Path(dict(checkpoints)[calm_label])
            labels, pairs = _anchor_pairs(ckpt, configs[calm_label])
            anchors_png = anchor_figure(labels, pairs, out / "anchor_distributions.png")
            uncertainty = in_domain[calm_label]["uncertainty"]
            uncertainty["figure"] = str(uncertainty_figure(uncertainty, out / "uncertainty.png"))
    total.stop()
    timings["total_s"], timings["total_cpu_s"] = total.wall_s, total.cpu_s

    table = markdown_table(matrix, "R@1", "t2v")
    report = [
        "# calm demo: baseline vs CALM on the synthetic benchmark",
        "",
        f"Trained on domain `{domain['name']}` ({domain['loader']} format), "
        f"{demo.steps} steps, batch {demo.batch_size}, {demo.num_frames} frames, seed {demo.seed}, "
        f"fusion `{demo.fusion}`, backbone `{demo.pretrain.model}` pretrained on the synthetic "
        f"image-caption split ({clip_info.get('path')}).",
        "Selection on the validation split carved from training videos; test evaluated once.",
        "Ceiling: a perfect reader of the clips' attributes reaches t2v R@1 "
        + ", ".join(f"{d['name']} {d['test_oracle']['oracle_t2v_r1']:.1f}"
                    for d in manifest["domains"] if "test_oracle" in d)
        + " (captions fit several clips); chance is 100 / test clips.",
        "",
        table,
        markdown_table(matrix, "R@1", "v2t"),
        "![out-of-domain heatmap](ood_heatmap.png)",
        "",
        "## Training curves",
        "![training curves](training_curves.png)",
        "",
    ]
    report += ["## CALM's mechanism (in-domain test split)", DIAGNOSTICS_LEGEND, "",
               diagnostics_table(diagnostics)]
    if uncertainty:
        sig, base = uncertainty["sigma"], uncertainty["baselines"]
        report += ["## Uncertainty (CALM, video as query)",
                   f"R@1 per sigma bin (lowest first): {[round(v, 1) for v in sig['bins_r1'] if v is not None]}; "
                   f"Spearman(sigma, rank) {sig['spearman']}; AUSE sigma {sig['ause']:.2f}, "
                   f"V_p entropy {base['vp_entropy']['ause']:.2f}, margin "
                   f"{base['margin']['ause']:.2f}, random {base['random']['ause']:.2f} "
                   f"(± {base['random']['ause_std']:.2f}); lower is better.", "",
                   "![uncertainty](uncertainty.png)", ""]
    if anchors_png:
        report += ["## Anchor distributions of test pairs (CALM)",
                   "V_p: video vs anchors (frame mean); S_p: text vs anchors; Ŝ_p: the VAE's "
                   "generation from V_p (its predictive distribution over z).", "", "![anchors](anchor_distributions.png)", ""]
    report += ["## Timings (s)", "", "```", json.dumps(timings, indent=1), "```", ""]
    (out / "report.md").write_text("\n".join(report))
    summary = {"report": str(out / "report.md"), "timings": timings, "table": table,
               "files": {k: str(v) for k, v in files.items()} | {"curves": str(curves)},
               "runs": results, "diagnostics": diagnostics, "uncertainty": uncertainty,
               "demo": asdict(demo)}
    (out / "demo_summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary
