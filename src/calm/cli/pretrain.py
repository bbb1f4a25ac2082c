"""`calm pretrain-clip --data SYNTH_DIR [--out FILE]`: the toy CLIP the synthetic configs start from."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("pretrain-clip", help="train (or reuse) a small CLIP on synthetic image-captions")
    p.add_argument("--data", required=True, help="a `calm synth` output folder")
    p.add_argument("--out", help="write the weights here (default: the user cache, reused if present)")
    p.add_argument("--cache-dir", help="cache folder (default: $CALM_CACHE or ~/.cache/calm)")
    p.add_argument("--model", default="calm-small")
    p.add_argument("--steps", type=int, default=2500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    from calm.demo.pretrain import PretrainConfig, pretrain_clip, pretrained_clip

    cfg = PretrainConfig(model=args.model, steps=args.steps, batch_size=args.batch_size,
                         lr=args.lr, seed=args.seed)
    if args.out:
        info = pretrain_clip(args.data, args.out, cfg)
    else:
        _, info = pretrained_clip(args.data, cfg, args.cache_dir)
    print(json.dumps(info, indent=2))
    return 0
