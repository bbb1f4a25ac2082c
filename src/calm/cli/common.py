"""Arguments shared by several subcommands."""

from __future__ import annotations


def add_set_arg(p, help: str = "override a config key (repeatable), e.g. --set train.lr=1e-5"):
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=help)


def add_config_args(p) -> None:
    p.add_argument("--config", help="experiment YAML file")
    add_set_arg(p)


def add_data_args(p, split_default: str = "test") -> None:
    p.add_argument("--dataset", required=True, help="msrvtt | msvd | didemo | lsmdc")
    p.add_argument("--annotations", required=True, help="the benchmark's annotation folder")
    p.add_argument("--videos", required=True, help="the benchmark's video folder")
    p.add_argument("--split", default=split_default)
