"""`calm eval --checkpoint PATH --dataset NAME --annotations DIR --videos DIR [--split test]`.

`calm eval --config FILE [--set ...]` without `--checkpoint` evaluates the model the config
builds (a zero-shot CLIP, e.g. OpenAI's ViT-B-32.pt with meanP); the data flags are optional
then and default to the config's `data` section.
"""

from __future__ import annotations

import json

from calm.cli.common import add_data_args, add_set_arg


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint (or a config's zero-shot model) on "
                       "one split; writes metrics JSON")
    p.add_argument("--checkpoint", help="a calm .safetensors checkpoint")
    p.add_argument("--config", help="instead of --checkpoint: evaluate the model this experiment "
                   "YAML builds, untrained (a zero-shot CLIP)")
    add_data_args(p, required=False)
    p.add_argument("--out", help="write the metrics JSON here too")
    p.add_argument(
        "--save-sim",
        metavar="PREFIX",
        help="also write PREFIX.npy (texts x videos) and PREFIX.json (ids, ground truth)",
    )
    p.add_argument(
        "--score",
        choices=["base", "anchor_agreement"],
        default=None,
        help="ranking score (default: the checkpoint's config)",
    )
    p.add_argument(
        "--uncertainty",
        action="store_true",
        help="also measure whether the VAE's sigma predicts retrieval errors (needs a vae model): "
        "an \"uncertainty\" block in the JSON and a figure (see --figure)",
    )
    p.add_argument(
        "--figure",
        metavar="PNG",
        help="where --uncertainty draws its figure (default: uncertainty.png beside --out)",
    )
    add_set_arg(p, "override data.* or train.* keys (e.g. data.num_frames=8)")
    p.add_argument("--progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from calm.cli.common import UserError, print_dropped
    from calm.engine.drivers import evaluate_checkpoint

    if args.figure and not args.uncertainty:
        raise UserError("--figure draws the --uncertainty figure; pass --uncertainty too")
    figure = args.figure
    if args.uncertainty and figure is None and args.out:
        figure = Path(args.out).parent / "uncertainty.png"
    common = dict(score_mode=args.score, save_sim=args.save_sim, progress=args.progress,
                  uncertainty=args.uncertainty)
    if (args.checkpoint is None) == (args.config is None):
        raise UserError("give --checkpoint (a trained model) or --config (the model it builds, "
                        "zero-shot), not both")
    if args.config is not None:
        from calm.engine.drivers import evaluate_config, load_config

        flags = {"dataset": args.dataset, "annotations": args.annotations, "videos": args.videos}
        cfg = load_config(args.config, args.overrides, flags)
        result = evaluate_config(cfg, args.split, **common)
    else:
        missing = [f"--{k}" for k in ("dataset", "annotations", "videos") if not getattr(args, k)]
        if missing:
            raise UserError(f"--checkpoint needs {', '.join(missing)}")
        result = evaluate_checkpoint(args.checkpoint, args.dataset, args.annotations, args.videos,
                                     args.split, overrides=args.overrides, **common)
    if figure is not None:
        from calm.reports.uncertainty import uncertainty_figure

        result["uncertainty"]["figure"] = str(uncertainty_figure(result["uncertainty"], figure))
    print_dropped("eval", f"{result['dataset']}/{result['split']}", result)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0
