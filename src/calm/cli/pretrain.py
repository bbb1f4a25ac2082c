"""`calm pretrain-clip --data SYNTH_DIR [--out FILE]`: the toy CLIP the synthetic configs start from."""

from __future__ import annotations

import json
from dataclasses import asdict, replace


def register(sub) -> None:
    from calm.experiments.recipe import Recipe
    from calm.toy_clip.pretrain import SOURCES

    defaults = asdict(Recipe().pretrain)  # the synthetic recipe's toy CLIP
    p = sub.add_parser("pretrain-clip", help="train (or reuse) a small CLIP on synthetic image-captions")
    p.add_argument("--data", required=True,
                   help="a `calm synth` output folder (its pretrain/ pairs are held out for evaluation)")
    p.add_argument("--out", help="write the weights here (default: the user cache, reused if present)")
    p.add_argument("--cache-dir", help="cache folder (default: $CALM_CACHE or ~/.cache/calm)")
    p.add_argument("--model", default=defaults["model"])
    p.add_argument("--steps", type=int, default=defaults["steps"])
    p.add_argument("--batch-size", type=int, default=defaults["batch_size"])
    p.add_argument("--lr", type=float, default=defaults["lr"])
    p.add_argument("--seed", type=int, default=defaults["seed"])
    p.add_argument("--source", choices=SOURCES, default=defaults["source"],
                   help="stream: fresh pairs every step (default); split: the folder's fixed pairs")
    p.add_argument("--workers", type=_workers, default=defaults["workers"],
                   help="processes rendering stream pairs (auto: from the cores and the device; "
                        "0: render in the training process); the result does not depend on it")
    p.add_argument("--device", default=defaults["device"], help="auto (CUDA if there is one), cpu, cuda")
    p.add_argument("--eval-pairs", type=int, default=defaults["eval_pairs"],
                   help="held-out pairs for zero-shot R@1 and anchor mAP (0: skip)")
    p.set_defaults(func=run)


def _workers(value: str) -> int | str:
    import argparse

    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected auto or an integer, got {value!r}") from None


def run(args) -> int:
    from calm.cli.common import UserError
    from calm.experiments.recipe import Recipe
    from calm.toy_clip.pretrain import pretrain_clip, pretrained_clip

    for name in ("steps", "batch_size"):
        if getattr(args, name) < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if (args.workers != "auto" and args.workers < 0) or args.eval_pairs < 0:
        raise UserError("--workers and --eval-pairs must be >= 0")
    cfg = replace(Recipe().pretrain, model=args.model, steps=args.steps, batch_size=args.batch_size,
                         lr=args.lr, seed=args.seed, source=args.source, workers=args.workers,
                         device=args.device, eval_pairs=args.eval_pairs)
    if args.out:
        info = pretrain_clip(args.data, args.out, cfg)
    else:
        _, info = pretrained_clip(args.data, cfg, args.cache_dir)
    print(json.dumps(info, indent=2))
    return 0
