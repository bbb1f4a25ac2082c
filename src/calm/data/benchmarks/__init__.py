"""The four public benchmarks (MSR-VTT, MSVD, DiDeMo, LSMDC), one module each, found by name,
and your own data in one file (`jsonl`, `csv`; own_data.py), which `convert` writes from any of them.

`get_loader(name, ...)` builds a registered loader; `common` holds the file-reading helpers the
loaders share so every annotation problem names its file and row.
"""

from calm.data.benchmarks.common import get_loader, load_split

__all__ = ["get_loader", "load_split"]
