"""Run-directory logging: metrics.jsonl (one JSON object a line) and TensorBoard scalars."""

from __future__ import annotations

import json
import time
from pathlib import Path


class RunLog:
    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.path = Path(run_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(Path(run_dir) / "tensorboard"))

    def log(self, kind: str, step: int, values: dict, **extra) -> None:
        record = {"kind": kind, "step": step, **extra, **values, "time": time.time()}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in _flatten(values).items():
                if isinstance(value, int | float):
                    self.writer.add_scalar(f"{kind}/{key}", value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _flatten(values: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}/"))
        else:
            out[name] = value
    return out


def read_log(path: Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class NullLog:
    """What ranks other than 0 log to: nothing."""

    def log(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass


def truncate_log(path: Path, step: int) -> None:
    """On resume, drops records written after the checkpoint so the log reads as one clean run."""
    records = [r for r in read_log(path) if r["step"] <= step]
    Path(path).write_text("".join(json.dumps(r) + "\n" for r in records))
