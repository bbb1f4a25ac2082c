"""`calm ood --checkpoint PATH --targets NAME=DATASET:ANN:VIDEOS[:SPLIT] ... --out DIR`."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("ood", help="evaluate checkpoints on several datasets: table + heatmap")
    p.add_argument(
        "--checkpoint",
        action="append",
        required=True,
        metavar="[LABEL=]PATH",
        help="a calm checkpoint (repeatable; rows of the table)",
    )
    p.add_argument(
        "--targets",
        nargs="*",
        default=[],
        metavar="NAME=DATASET:ANN:VIDEOS[:SPLIT]",
        help="evaluation targets (columns of the table)",
    )
    p.add_argument("--synthetic", metavar="DIR", help="add every domain of a `calm synth` folder")
    p.add_argument("--split", default="test", help="split for --synthetic targets")
    p.add_argument("--out", default="runs/ood", help="folder for ood.json, ood.md, ood_heatmap.png")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from calm.cli.common import UserError, print_dropped
    from calm.engine.drivers import Target, ood_matrix, synthetic_targets
    from calm.reports.ood import write_ood

    targets = [Target.parse(t) for t in args.targets]
    if args.synthetic:
        targets += synthetic_targets(args.synthetic, args.split)
    if not targets:
        raise UserError("give --targets or --synthetic")
    checkpoints = []
    for spec in args.checkpoint:
        label, _, path = spec.rpartition("=") if "=" in spec else ("", "", spec)
        checkpoints.append((label or Path(path).parent.parent.name or Path(path).stem, path))
    matrix = ood_matrix(checkpoints, targets)
    for label, row in matrix["results"].items():
        for name, result in row.items():
            print_dropped("ood", f"{label} on {name}", result)
    files = write_ood(matrix, args.out)
    print(Path(files["markdown"]).read_text())
    print(json.dumps({k: str(v) for k, v in files.items()}))
    return 0
