"""`calm data-check`: parse a benchmark split and check its videos before a long run.

Prints a JSON report (see calm.data.check.check_split). Exit status 0 when every listed video is
present (and its evaluation frames decode, unless --no-decode; only the first with --quick), 1
when some are not, 2 on bad annotations.
"""

from __future__ import annotations

import argparse
import json

from calm.cli.common import ANNOTATIONS_HELP, DATASET_HELP, VIDEOS_HELP, loader_option


def register(sub) -> None:
    p = sub.add_parser("data-check", help="parse a benchmark split and check its videos (JSON)")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--annotations", required=True, help=ANNOTATIONS_HELP)
    p.add_argument("--videos", required=True, help=VIDEOS_HELP)
    p.add_argument("--split", required=True, help="split name, e.g. train, val, test")
    p.add_argument(
        "--option",
        dest="options",
        action="append",
        default=[],
        type=loader_option,
        metavar="KEY=VALUE",
        help="a loader option, e.g. --option val_size=500",
    )
    p.add_argument(
        "--decode",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="decode every video the way evaluation samples it (default); --no-decode only "
        "checks that the files exist",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="decode only the first frame of each video (faster, misses damage further in)",
    )
    p.add_argument(
        "--frames",
        type=int,
        default=12,
        help="frames per clip, as data.num_frames (default 12): the positions evaluation decodes",
    )
    p.add_argument(
        "--workers", type=int, default=2, help="processes decoding videos in parallel (default 2)"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from calm.data.check import check_split

    report = check_split(
        args.dataset,
        args.annotations,
        args.videos,
        args.split,
        options=dict(args.options),
        decode=args.decode,
        quick=args.quick,
        num_frames=args.frames,
        workers=max(1, args.workers),
    )
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1
