"""`calm` command line: each subcommand lives in its own module with `register(subparsers)`.

Modules are imported only when listed here, and each imports torch-heavy code lazily inside its
`run` function so `calm --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from calm.cli.common import UserError
from calm.config.errors import ConfigError
from calm.data.errors import DataError
from calm.model.errors import CheckpointError

COMMAND_MODULES = [
    "calm.cli.train",
    "calm.cli.evaluate",
    "calm.cli.ood",
    "calm.cli.caption",
    "calm.cli.model_info",
    "calm.cli.pretrain",
    "calm.cli.demo",
    "calm.cli.experiment",
    "calm.cli.data_check",
    "calm.cli.convert_annotations",
    "calm.cli.prepare_videos",
    "calm.cli.prepare_frames",
    "calm.cli.synth",
    "calm.cli.index",
    "calm.cli.search",
    "calm.cli.serve",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="calm", description="CALM video-text representation learning: train, evaluate, search."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except (ConfigError, DataError, CheckpointError, UserError, FileNotFoundError) as exc:
        print(f"calm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)
