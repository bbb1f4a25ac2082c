"""`calm demo --out DIR`: synthetic benchmark, toy CLIP, baseline vs CALM, report.md."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("demo", help="run baseline vs CALM end to end on the synthetic benchmark")
    p.add_argument("--out", default="runs/demo")
    p.add_argument("--scale", default=None, choices=["tiny", "small", "default", "large"],
                   help="benchmark scale (default: the recipe's)")
    p.add_argument("--seed", type=int, default=0, help="fine-tuning seed")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the generated benchmark")
    p.add_argument("--data", default=None, help="benchmark folder (default: OUT/data; reused if it fits)")
    p.add_argument("--steps", type=int, default=None, help="fine-tuning steps per method")
    p.add_argument("--pretrain-steps", type=int, default=None)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    import dataclasses

    from calm.demo.run import run_demo
    from calm.experiments.recipe import Recipe

    demo = Recipe(seed=args.seed, data_seed=args.data_seed)
    if args.scale:
        demo.scale = args.scale
    if args.steps:
        demo.steps = args.steps
    if args.pretrain_steps:
        demo.pretrain = dataclasses.replace(demo.pretrain, steps=args.pretrain_steps)
    summary = run_demo(args.out, demo, progress=not args.no_progress, data_root=args.data)
    print(summary["table"])
    print(f"report: {summary['report']}")
    return 0
