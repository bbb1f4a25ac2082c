"""Typed dataclass configs from YAML plus `key=value` overrides.

Every key is checked: unknown keys, wrong types and bad values raise ConfigError naming
the dotted key, so a typo never silently falls back to a default; `load` adds where the key was
set (the config file, unless a `--set` override set it).
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from calm.config.errors import ConfigError

T = TypeVar("T")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(
            errors[0] if len(errors) == 1 else f"{key}: {value!r} fits none of {args}"
        )
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item = args[0] if args else Any
        out = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, prefix=key)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-5 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{key}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: Any, prefix: str = "") -> T:
    """Builds dataclass `cls` from a mapping, rejecting unknown keys by their dotted name."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(f"unknown config key {where!r}; valid keys here: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        kwargs[name] = _coerce(value, hints[name], key)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if prefix and not str(exc).startswith(prefix):
            raise ConfigError(f"{prefix}.{exc}") from None
        raise


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.split("."), value


def set_key(data: dict, key: str | list[str], value: Any, source: str | None = None) -> dict:
    """data['a']['b'] = value for the dotted key 'a.b', creating missing sections; what the key
    names is validated when the dataclass is built (an unknown key is an error there)."""
    path = key.split(".") if isinstance(key, str) else list(key)
    node = data
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"{source or '.'.join(path)}: {part!r} is not a config section")
        node = child
    node[path[-1]] = value
    return data


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Sets `key=value` overrides (dotted keys) in a nested mapping."""
    for text in overrides:
        path, value = parse_override(text)
        set_key(data, path, value, source=f"override {text!r}")
    return data


def merged(defaults: dict, changes: dict) -> dict:
    """`defaults` with `changes` on top, section by section (a nested mapping merges, any other
    value replaces); neither input is modified."""
    out = dict(defaults)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


REQUIRED = "???"


def check_required(data: Any, prefix: str = "", allow_missing: bool = False) -> Any:
    """Shipped configs mark fields the user must fill (a checkpoint path, a data folder) as ???.

    With `allow_missing` (commands that need no data or weights) they become None instead.
    """
    if isinstance(data, dict):
        return {
            key: check_required(value, f"{prefix}.{key}" if prefix else str(key), allow_missing)
            for key, value in data.items()
        }
    if data == REQUIRED:
        if allow_missing:
            return None
        raise ConfigError(f"{prefix}: required; set it in the config or with --set {prefix}=VALUE")
    return data


def located(exc: ConfigError, path: str | Path | None, overrides=()) -> ConfigError:
    """`exc` prefixed with the config file `path` when its key was set there, not by a `--set`
    override (whose key the message names already)."""
    text = str(exc)
    unknown = re.match(r"unknown config key '([^']+)'", text)
    key = unknown.group(1) if unknown else text.split(":", 1)[0]
    for override in reversed(list(overrides)):
        set_here = override.split("=", 1)[0].strip()
        if key == set_here or key.startswith(set_here + "."):
            return exc
    return ConfigError(f"{path}: {text}") if path is not None else exc


def load(
    cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
    allow_missing: bool = False,
) -> T:
    data = read_yaml(path) if path is not None else {}
    data = apply_overrides(data, list(overrides or []))
    try:
        return from_dict(cls, check_required(data, allow_missing=allow_missing))
    except ConfigError as exc:
        raise located(exc, path, overrides or []) from None


def dump_yaml(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
