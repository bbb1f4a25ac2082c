"""Faults during training: a corrupt video under `skip`, Ctrl-C, and the `error` policy."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from calm.config import ExperimentConfig, from_dict
from calm.data.benchmarks.common import load_split
from calm.engine.train import train
from tests.engine_fixtures import tiny_config, write_config, write_tiny_msrvtt
from tests.videos import moving_image, truncate_file, write_clip, write_garbage

pytestmark = pytest.mark.slow


def test_corrupt_videos_are_counted_and_training_goes_on_under_skip(tmp_path):
    ann, vid = write_tiny_msrvtt(tmp_path)
    cfg = from_dict(ExperimentConfig, tiny_config(ann, vid, epochs=1))
    train_ids = [v.video_id for v in load_split("msrvtt", ann, vid, "train", cfg.data.options).videos]
    bad = train_ids[2], train_ids[5]
    truncate_file(vid / f"{bad[0]}.mp4", fraction=0.2)
    write_garbage(vid / f"{bad[1]}.mp4")
    cfg.data.missing_video = "skip"
    result = train(cfg, tmp_path / "run", progress=False)
    assert result["skipped_videos"] == 2
    log = json.loads((tmp_path / "run" / "skipped_videos.json").read_text())
    assert {v["video_id"] for v in log["videos"]} == set(bad)
    assert all(v["reason"] for v in log["videos"])
    assert log["skipped_samples"] >= 2
    assert (tmp_path / "run" / "test_metrics.json").is_file()


def test_a_corrupt_video_stops_the_run_naming_it_under_error(tmp_path):
    ann, vid = write_tiny_msrvtt(tmp_path)
    write_garbage(vid / "video5.mp4")
    cfg = from_dict(ExperimentConfig, tiny_config(ann, vid, epochs=1))
    with pytest.raises(Exception, match="video5.mp4"):
        train(cfg, tmp_path / "run", progress=False)


def test_ctrl_c_saves_a_resumable_checkpoint(tmp_path):
    ann, vid = write_tiny_msrvtt(tmp_path)
    # long enough that the interrupt always lands mid-run, even on a loaded machine
    cfg = write_config(tmp_path / "cfg.yaml", tiny_config(ann, vid, epochs=2000))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # a shell that starts jobs in the background sets SIGINT to ignored, and Python then never
    # raises KeyboardInterrupt: give the child the default disposition, as a terminal would
    proc = subprocess.Popen([sys.executable, "-m", "calm", "train", "--config", str(cfg), "--out",
                             str(run), "--no-progress"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    log = run / "metrics.jsonl"
    deadline = time.time() + 180
    while time.time() < deadline and not (log.is_file() and log.read_text().count('"train"') >= 5):
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0
    pointer = json.loads((run / "checkpoints" / "last.json").read_text())
    assert pointer["step"] >= 5, out.decode()[-2000:]
    assert (run / "checkpoints" / pointer["weights"]).is_file()


def test_a_skipped_step_keeps_the_schedule_in_step_with_the_step_counter(tmp_path):
    """Three good and three undecodable training videos in batches of three: every epoch has
    exactly one step with fewer than two pairs, which is skipped (the path a non-finite loss
    takes under `nonfinite_loss: skip`). The schedule still advances with every step, so the
    resume point's scheduler is at the run's step count and the run ends at the cosine's end
    (rate 0), not three steps short of it."""
    from calm.engine.checkpoint import load_state
    from tests.bad_input_fixtures import model_config, write_jsonl

    clips = tmp_path / "clips"
    good = [f"good{i}.mp4" for i in range(3)]
    for i, name in enumerate(good):
        write_clip(clips / name, num_frames=8, width=32, height=32,
                   frame_fn=lambda k, w, h, i=i: moving_image(k + 5 * i, w, h))
    bad = [write_garbage(clips / f"bad{i}.mp4", seed=i).name for i in range(3)]
    raw = model_config(workers=0, policy="skip")
    raw["data"].update(annotations=str(write_jsonl(tmp_path / "data.jsonl", good + bad, good[:2])),
                       videos=str(clips))
    raw["train"].update(batch_size=3, epochs=3, nonfinite_loss="skip")
    result = train(from_dict(ExperimentConfig, raw), tmp_path / "run", progress=False)
    assert (result["steps"], result["skipped_steps"], result["skipped_videos"]) == (6, 3, 3)
    ckpt = tmp_path / "run" / "checkpoints"
    state = load_state(ckpt / json.loads((ckpt / "last.json").read_text())["state"])
    assert state["position"]["step"] == 6
    assert state["scheduler"]["last_epoch"] == 6
    assert state["scheduler"]["_last_lr"] == [0.0] * len(state["scheduler"]["_last_lr"])
