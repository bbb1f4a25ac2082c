"""`calm data-check`: parse a benchmark split and check its videos before a long run.

Prints a JSON report (see calm.data.check.check_split). Exit status 0 when every listed video is
present (and decodes, unless --no-decode), 1 when some are not, 2 on bad annotations.
"""

from __future__ import annotations

import argparse
import json


def _option(text: str) -> tuple[str, object]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    import yaml

    return key.strip(), yaml.safe_load(value)


def register(sub) -> None:
    p = sub.add_parser("data-check", help="parse a benchmark split and check its videos (JSON)")
    p.add_argument("--dataset", required=True, help="msrvtt | msvd | didemo | lsmdc")
    p.add_argument("--annotations", required=True, help="the benchmark's annotation folder")
    p.add_argument("--videos", required=True, help="the benchmark's video folder")
    p.add_argument("--split", required=True, help="split name, e.g. train, val, test")
    p.add_argument(
        "--option",
        dest="options",
        action="append",
        default=[],
        type=_option,
        metavar="KEY=VALUE",
        help="a loader option, e.g. --option val_size=500",
    )
    p.add_argument(
        "--decode",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="decode the first frame of every video (default); --no-decode only "
        "checks that the files exist",
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
    )
    print(json.dumps(report, indent=2))
    return 0 if report["ok"] else 1
