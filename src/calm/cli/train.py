"""`calm train --config FILE [--set key=value ...] [--out RUN_DIR] [--resume RUN_DIR]`."""

from __future__ import annotations

import json
import os
import sys

from calm.cli.common import add_config_args, print_dropped


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model; evaluates on validation each epoch, test once")
    add_config_args(p)
    p.add_argument("--out", default=None, help="run directory (default: runs/<config name>)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue a stopped run from RUN_DIR/checkpoints/last.*",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from calm.config import ExperimentConfig, load
    from calm.engine.train import train

    if args.resume:
        run_dir = Path(args.resume)
        config = args.config or run_dir / "config.yaml"
    else:
        config = args.config
        name = Path(args.config).stem if args.config else "default"
        run_dir = Path(args.out or f"runs/{name}")
    cfg = load(ExperimentConfig, config, args.overrides)
    try:
        result = train(cfg, run_dir, resume=bool(args.resume), progress=not args.no_progress)
    except KeyboardInterrupt:
        print(f"\ninterrupted; a resume point was saved. Continue with: calm train --resume {run_dir}",
              file=sys.stderr)
        return 130
    if os.environ.get("RANK", "0") == "0":
        print_skipped(run_dir, result["skipped_videos"])
        print_dropped("train", "test split", result["test"])
        print(json.dumps({"run_dir": str(run_dir), **result}, indent=2))
    return 0


def print_skipped(run_dir, count: int) -> None:
    """Lists on stderr the training videos the `skip` policy left out (from skipped_videos.json)."""
    if not count:
        return
    from pathlib import Path

    log = Path(run_dir) / "skipped_videos.json"
    print(f"calm train: {count} training videos could not be decoded and were skipped "
          f"(listed in {log}):", file=sys.stderr)
    for record in json.loads(log.read_text())["videos"]:
        print(f"  skipped: {record['path']}: {record['reason']}", file=sys.stderr)
