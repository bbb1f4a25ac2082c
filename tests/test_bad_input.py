"""Bad input never ends in a traceback, whatever the number of loader workers.

Every row of `MATRIX` runs one real command through `calm.cli.main.main` (in this process, so one
import serves all rows; DataLoader workers and multiprocessing pools are real forked processes)
and checks what a user sees on the terminal (file descriptors 1 and 2, workers included): a
non-zero exit, the bad file named, and no "Traceback".

Which (command, case) combinations exist, and why the others do not:

- Bad videos (missing file, zero-byte file, text file named .mp4, truncated mp4, audio-only mp4)
  apply to every command that decodes video. `train`, `eval` and `ood` read them through a
  JSONL annotation file under the `error` policy: exit 2, one line `calm CMD: error: PATH:
  reason`. `caption`, `data-check`, `index` and `prepare-frames` always report per file and go
  on: exit 1, every bad file listed. `index` and `prepare-frames` take a folder, which cannot
  hold a missing file: there the missing case is a missing folder (exit 2, one line).
- "every bad video" is the `skip` policy: all five bad videos in one split; `train`, `eval`
  and `ood` exit 0 and list each skipped or dropped video with its reason (console and JSON);
  `data-check`, `index` and `prepare-frames` list and count all of them (exit 1).
- A broken annotation line applies to the commands that read annotations (`train`, `eval`,
  `ood`, `data-check`): exit 2 naming the file and the line.
- A truncated .safetensors applies to the commands that read one: a calm checkpoint (`eval`,
  `ood`, `caption`, `index`) or, for `train`, the backbone weights of its config.
- A config with a wrong type applies to the commands that take `--config` (`train`, `eval`).
- Loader workers 0 and 2 for every command that has workers: `data.num_workers` of the config
  (`train`, `eval --config`) or of the checkpoint (`eval --checkpoint`, `ood`: the checkpoint's
  config is the one a user has), `--workers` for `data-check`, `index`, `prepare-frames`.
  `caption` decodes in its own process and has no workers: its rows run once.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import pytest

from calm.cli.main import main
from tests.bad_input_fixtures import (
    BAD_VIDEOS,
    GOOD,
    WORKERS,
    World,
    build_world,
    model_config,
    slug,
)

VIDEO_CASES = list(BAD_VIDEOS)
EVERY = "every bad video"
ANNOTATION = "broken annotation line"
CHECKPOINT = "truncated .safetensors"
CONFIG = "config with a wrong type"
DECODED_IN_FOLDERS = [c for c in VIDEO_CASES if c != "missing file"]


@dataclass(frozen=True)
class Row:
    command: str
    case: str
    workers: int | None  # None: the command has no loader workers

    @property
    def id(self) -> str:
        return f"{self.command}-{slug(self.case)}" + (
            "" if self.workers is None else f"-w{self.workers}")


def _matrix() -> list[Row]:
    rows = []
    for w in WORKERS:
        for command in ("train", "eval", "ood"):
            cases = VIDEO_CASES + [EVERY, ANNOTATION, CHECKPOINT]
            rows += [Row(command, c, w) for c in cases]
        rows += [Row("train", CONFIG, w), Row("eval", CONFIG, w)]
        rows += [Row("data-check", c, w) for c in VIDEO_CASES + [EVERY, ANNOTATION]]
        rows += [Row("index", c, w) for c in VIDEO_CASES + [EVERY, CHECKPOINT]]
        rows += [Row("prepare-frames", c, w) for c in VIDEO_CASES + [EVERY]]
    rows += [Row("caption", c, None) for c in VIDEO_CASES + [CHECKPOINT]]
    return rows


MATRIX = _matrix()


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    return build_world(tmp_path_factory.mktemp("bad_input"))


def _train_config(world: World, row: Row) -> dict:
    policy = "skip" if row.case == EVERY else "error"
    cfg = model_config(row.workers, policy)
    case = row.case if row.case in BAD_VIDEOS or row.case in (EVERY, ANNOTATION) else EVERY
    cfg["data"].update(annotations=str(world.annotations(case)), videos=str(world.clips))
    # one batch of every training pair: the first step meets each bad video
    cfg["train"]["batch_size"] = len(GOOD) + (len(BAD_VIDEOS) if case == EVERY else 1)
    if row.case == CHECKPOINT:
        cfg["model"]["backbone"]["checkpoint"] = str(world.truncated_backbone)
    if row.case == CONFIG:
        cfg["train"]["epochs"] = "two"
    return cfg


def argv_for(world: World, row: Row, out) -> list:
    """The command line of one row; `out` is a fresh folder for what the command writes."""
    w, case = row.workers, row.case
    ann = world.annotations(case if case in BAD_VIDEOS or case in (EVERY, ANNOTATION) else EVERY)
    policy = "skip" if case == EVERY else "error"
    ckpt = world.truncated_checkpoint if case == CHECKPOINT else world.checkpoint(w or 0, policy)
    data = ["--dataset", "jsonl", "--annotations", ann, "--videos", world.clips]
    if row.command == "train":
        config = world.config(row.id, _train_config(world, row))
        return ["train", "--config", config, "--out", out / "run", "--no-progress"]
    if row.command == "eval" and case == CONFIG:
        cfg = model_config(w)
        cfg["data"]["num_frames"] = "four"
        return ["eval", "--config", world.config(row.id, cfg), *data]
    if row.command == "eval":
        return ["eval", "--checkpoint", ckpt, *data]
    if row.command == "ood":
        return ["ood", "--checkpoint", ckpt, "--targets", f"t=jsonl:{ann}:{world.clips}",
                "--out", out / "ood"]
    if row.command == "data-check":
        return ["data-check", *data, "--split", "test", "--frames", "4", "--workers", w]
    folder = out / "no_such_folder" if case == "missing file" else world.folder(
        DECODED_IN_FOLDERS[0] if case == CHECKPOINT else case)
    if row.command == "index":
        return ["index", "--checkpoint", ckpt, "--videos", folder, "--out", out / "index",
                "--workers", w, "--no-progress"]
    if row.command == "prepare-frames":
        return ["prepare-frames", "--src", folder, "--dst", out / "cache", "--frames", "4",
                "--size", "32", "--workers", w, "--no-progress"]
    assert row.command == "caption"
    video = world.clips / GOOD[0]
    return ["caption", "--checkpoint", world.captioner if case != CHECKPOINT else ckpt, video,
            world.video(case) if case in BAD_VIDEOS else video]


def expected(world: World, row: Row, out) -> tuple[int, list[str]]:
    """(exit code, what the output must name) of a row."""
    command, case = row.command, row.case
    folders = command in ("index", "prepare-frames")
    if case == CHECKPOINT:
        return 2, [str(world.truncated_backbone if command == "train"
                       else world.truncated_checkpoint)]
    if case == ANNOTATION:
        return 2, [f"{world.annotations(ANNOTATION)}: line 3"]  # the file and the line
    if case == CONFIG:
        key = "train.epochs" if command == "train" else "data.num_frames"
        return 2, [f"{world.root / 'cfg' / row.id}.yaml: {key}"]  # the file and the key
    if case == "missing file" and folders:
        return 2, [str(out / "no_such_folder")]
    if case == EVERY:
        bad = [n for c, n in BAD_VIDEOS.items() if not (folders and c == "missing file")]
        return (0 if command in ("train", "eval", "ood") else 1), bad
    name = BAD_VIDEOS[case]
    if command in ("train", "eval", "ood"):
        return 2, [str(world.video(case))]
    return 1, [name]


def run(capfd, argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capfd.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("row", MATRIX, ids=[r.id for r in MATRIX])
def test_bad_input(world, row, tmp_path, capfd):
    code, out, err = run(capfd, argv_for(world, row, tmp_path))
    printed = out + err
    want_code, names = expected(world, row, tmp_path)
    assert "Traceback" not in printed, printed
    assert code == want_code, printed
    for name in names:
        assert name in printed, (name, printed)
    if want_code == 2:  # one line, the real message
        assert re.fullmatch(rf"calm {row.command}: error: [^\n]+\n", err), err
    if row.case == EVERY:
        _check_every_bad_video_is_counted(world, row, tmp_path, out, err)


def _check_every_bad_video_is_counted(world: World, row: Row, tmp_path, out: str, err: str):
    bad = sorted(BAD_VIDEOS.values())
    if row.command == "eval":
        result = json.loads(out)
        assert sorted(d["video_id"] for d in result["dropped"]) == bad
        assert all(d["reason"] and d["texts"] for d in result["dropped"])
        assert result["gallery"] == {"videos": 2, "texts": 2, "split_videos": 7,
                                     "split_texts": 7}
        for d in result["dropped"]:
            assert f"dropped: {d['path']}: {d['reason']}" in err
    elif row.command == "ood":
        result = json.loads((tmp_path / "ood" / "ood.json").read_text())["results"]
        (cell,) = (r for row_ in result.values() for r in row_.values())
        assert sorted(d["video_id"] for d in cell["dropped"]) == bad
        assert cell["gallery"]["videos"] == 2
        assert all(name in (tmp_path / "ood" / "ood.md").read_text() for name in bad)
    elif row.command == "train":
        run_dir = tmp_path / "run"
        log = json.loads((run_dir / "skipped_videos.json").read_text())
        assert sorted(v["video_id"] for v in log["videos"]) == bad
        for v in log["videos"]:
            assert f"skipped: {v['path']}: {v['reason']}" in err
        test = json.loads((run_dir / "test_metrics.json").read_text())
        assert sorted(d["video_id"] for d in test["dropped"]) == bad
        assert test["gallery"]["videos"] == 2
    elif row.command == "data-check":
        report = json.loads(out)
        assert report["missing_videos"]["count"] == 1
        assert report["undecodable_videos"]["count"] == 4
    elif row.command == "index":
        assert '"failed": 4' in out and "2 videos indexed" in out
    elif row.command == "prepare-frames":
        assert "2 cached, 0 already cached, 4 failed" in out


def test_debug_prints_the_traceback_of_a_worker_error(world, tmp_path, capfd):
    """`calm --debug`: the worker's traceback, then the main process's, then the one line."""
    row = Row("eval", "zero-byte file", 2)
    code, _, err = run(capfd, ["--debug", *argv_for(world, row, tmp_path)])
    assert code == 2
    assert err.count("Traceback") >= 2 and "WorkerTraceback" in err
    assert err.rstrip().splitlines()[-1].startswith("calm eval: error: ")
