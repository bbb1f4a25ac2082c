"""Arguments shared by several subcommands."""

from __future__ import annotations

import argparse

from calm.errors import CalmUserError


class UserError(CalmUserError):
    """An error in what the user asked for; printed without a traceback."""


def add_set_arg(p, help: str = "override a config key (repeatable), e.g. --set train.lr=1e-5"):
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=help)


def add_config_args(p) -> None:
    p.add_argument("--config", help="experiment YAML file")
    add_set_arg(p)


DATASET_HELP = "msrvtt | msvd | didemo | lsmdc | jsonl | csv (your own data)"
ANNOTATIONS_HELP = (
    "the benchmark's annotation folder (jsonl/csv: the file, or a folder holding data.jsonl / "
    "data.csv)"
)
VIDEOS_HELP = "the benchmark's video folder (jsonl/csv: where relative video paths start)"


def add_data_args(p, split_default: str = "test", required: bool = True) -> None:
    p.add_argument("--dataset", required=required, help=DATASET_HELP)
    p.add_argument("--annotations", required=required, help=ANNOTATIONS_HELP)
    p.add_argument("--videos", required=required, help=VIDEOS_HELP)
    p.add_argument("--split", default=split_default)


def loader_option(text: str) -> tuple[str, object]:
    """`--option KEY=VALUE` of a dataset loader; the value is read as YAML (numbers, lists)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    import yaml

    return key.strip(), yaml.safe_load(value)


def print_dropped(command: str, where: str, metrics: dict, file=None) -> None:
    """Says on stderr which videos an evaluation left out and on how many it was computed.

    `metrics` is an evaluation result (calm.engine.evaluation.gallery adds `gallery` and
    `dropped`); nothing is printed when nothing was dropped.
    """
    import sys

    dropped = metrics.get("dropped") or []
    if not dropped:
        return
    file = file or sys.stderr
    g = metrics["gallery"]
    print(f"calm {command}: {where}: {len(dropped)} of {g['split_videos']} videos could not be "
          f"decoded and were left out with their {g['split_texts'] - g['texts']} texts; the "
          f"metrics are on {g['videos']} videos and {g['texts']} texts", file=file)
    for d in dropped:
        texts = "; ".join(repr(t) for t in d["texts"]) or "none"
        print(f"  dropped: {d['path']}: {d['reason']} (texts: {texts})", file=file)
