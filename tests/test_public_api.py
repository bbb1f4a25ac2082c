"""The names re-exported from `calm` resolve to the real objects, and `import calm` stays light."""

from __future__ import annotations

import subprocess
import sys

import pytest

import calm


@pytest.mark.parametrize("name", sorted(calm._EXPORTS))
def test_every_exported_name_resolves(name):
    module, attribute = calm._EXPORTS[name]
    import importlib

    assert getattr(calm, name) is getattr(importlib.import_module(module), attribute)
    assert name in dir(calm)


def test_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        calm.nope  # noqa: B018


def test_import_calm_does_not_import_torch():
    code = "import sys, calm; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
