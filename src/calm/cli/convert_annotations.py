"""`calm convert-annotations --dataset NAME --annotations DIR --videos DIR --out data.jsonl`.

Writes a benchmark's splits as own data (JSONL or CSV, by the --out suffix), e.g. to start your
own dataset from a benchmark, or to check that `data.dataset: jsonl` reads what the benchmark
loader reads.
"""

from __future__ import annotations

import json

from calm.cli.common import ANNOTATIONS_HELP, DATASET_HELP, VIDEOS_HELP, loader_option


def register(sub) -> None:
    p = sub.add_parser("convert-annotations",
                       help="write a benchmark's splits as own data (data.jsonl or data.csv)")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--annotations", required=True, help=ANNOTATIONS_HELP)
    p.add_argument("--videos", required=True, help=VIDEOS_HELP)
    p.add_argument("--out", required=True, help="the file to write: .jsonl or .csv")
    p.add_argument("--splits", nargs="+", default=None,
                   help="splits to write (default: train, val and test, those the loader knows)")
    p.add_argument("--option", dest="options", action="append", default=[], type=loader_option,
                   metavar="KEY=VALUE", help="a loader option, e.g. --option val_size=500")
    p.set_defaults(func=run)


def run(args) -> int:
    from calm.data.benchmarks.convert import convert_annotations

    report = convert_annotations(args.dataset, args.annotations, args.videos, args.out,
                                 args.splits, dict(args.options))
    print(json.dumps(report, indent=2))
    return 0
