"""A tiny name -> factory registry so configs can pick components by name."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to factories; unknown names fail with the list of valid ones."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def decorator(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = factory
            return factory

        return decorator

    def get(self, name: str) -> Callable[..., T]:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; choose one of {sorted(self._items)}"
            ) from None

    def build(self, name: str, *args, **kwargs) -> T:
        return self.get(name)(*args, **kwargs)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items


class IgnoredSettingWarning(UserWarning):
    """A config field set for one component while another is chosen (e.g. `free_bits` with the
    `kl` objective): legal, so that switching components by `--set` keeps working, but said."""


def ignored_options(cfg: Any, used: tuple[str, ...]) -> list[str]:
    """The fields of a component's config section set away from their defaults that the
    component does not read (`used`: the fields it owns; `name` is always read)."""
    defaults = type(cfg)()
    return [f.name for f in dataclasses.fields(cfg)
            if f.name != "name" and f.name not in used
            and getattr(cfg, f.name) != getattr(defaults, f.name)]


def check_options(cfg: Any, used: tuple[str, ...], section: str, component: str) -> list[str]:
    """Warns (IgnoredSettingWarning) about each setting of `section` that `component` ignores,
    so a setting meant for another component never passes unnoticed; returns their names."""
    ignored = ignored_options(cfg, used)
    for name in ignored:
        warnings.warn(f"{section}.{name}={getattr(cfg, name)!r} has no effect: {component!r} "
                      f"reads {sorted(used) or 'no setting'} of {section}",
                      IgnoredSettingWarning, stacklevel=3)
    return ignored
