"""`calm eval --checkpoint PATH --dataset NAME --annotations DIR --videos DIR [--split test]`."""

from __future__ import annotations

import json

from calm.cli.common import add_data_args, add_set_arg


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate a checkpoint on one split; writes metrics JSON")
    p.add_argument("--checkpoint", required=True, help="a calm .safetensors checkpoint")
    add_data_args(p)
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
    add_set_arg(p, "override data.* or train.* keys (e.g. data.num_frames=8)")
    p.add_argument("--progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from calm.engine.evaluation.checkpoint import evaluate_checkpoint

    result = evaluate_checkpoint(
        args.checkpoint,
        args.dataset,
        args.annotations,
        args.videos,
        args.split,
        overrides=args.overrides,
        score_mode=args.score,
        save_sim=args.save_sim,
        progress=args.progress,
    )
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0
