"""`calm experiment --config GRID.yaml --out DIR`: a resumable grid of runs on the synthetic
benchmark, with mean ± std over seeds and paired bootstrap intervals (results.md, results.json)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("experiment", help="run a grid (axes or named variants, x seeds) on the "
                       "synthetic benchmark; resumable; writes results.md and results.json")
    p.add_argument("--config", required=True, help="grid YAML (see configs/experiments/)")
    p.add_argument("--out", required=True, help="experiment folder; rerun to resume")
    p.add_argument("--data", default=None,
                   help="benchmark folder (default: OUT/data; reused if it fits)")
    p.add_argument("--report-only", action="store_true",
                   help="only rewrite results.md / results.json from the finished runs")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    import shlex
    import sys
    from pathlib import Path

    from calm.experiments.grid import load_grid
    from calm.experiments.results import write_results
    from calm.experiments.runs import run_experiment

    grid = load_grid(args.config)
    command = shlex.join(["calm", "experiment", "--config", args.config, "--out", args.out]
                         + (["--data", args.data] if args.data else []))
    if args.report_only:
        summary = write_results(args.out, grid, command)
    else:
        summary = run_experiment(grid, args.out, args.data, progress=not args.no_progress,
                                 command=command)
    print(f"{summary['finished_runs']} of {summary['planned_runs']} runs finished; "
          f"results: {args.out}/results.md", file=sys.stderr)
    print((Path(args.out) / "results.md").read_text())
    return 0
