"""`calm` command line: each subcommand lives in its own module with `register(subparsers)`.

Modules are imported only when listed here, and each imports torch-heavy code lazily inside its
`run` function so `calm --help` stays fast.

A user error (`calm.errors.USER_ERRORS`: a bad file, line, key or flag) ends a command with one
line, `calm COMMAND: error: MESSAGE`, and exit code 2, also when it was raised in a DataLoader
worker (calm.data.worker_errors hands it over intact). `calm --debug COMMAND ...` prints its
traceback first (with the worker's, where there was one). Any other exception is a bug in calm
and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from calm.errors import USER_ERRORS

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
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an error in what was given, too")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except USER_ERRORS as exc:
        if args.debug:
            traceback.print_exc()
        print(f"calm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    return int(result or 0)
