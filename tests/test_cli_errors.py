"""A missing or unreadable backbone or calm checkpoint is one clear line and exit code 2, from
every subcommand that reads one, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from calm.cli.main import main
from tests.engine_fixtures import tiny_config, write_config, write_tiny_msrvtt


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_errors")
    ann, vid = write_tiny_msrvtt(root)
    junk = root / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint at all")
    return root, ann, vid, junk


def _run(capsys, *argv) -> str:
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("\n") == 1, err
    return err


def test_missing_backbone_weights(tiny, capsys):
    root, ann, vid, _ = tiny
    cfg = tiny_config(ann, vid)
    cfg["model"]["backbone"]["checkpoint"] = str(root / "nope.pt")
    path = write_config(root / "cfg.yaml", cfg)
    err = _run(capsys, "train", "--config", str(path), "--out", str(root / "run"))
    assert "nope.pt" in err and "model.backbone.checkpoint" in err


@pytest.mark.parametrize("which", ["missing", "junk"])
def test_eval_and_caption_with_a_bad_calm_checkpoint(tiny, capsys, which):
    root, ann, vid, junk = tiny
    ckpt = str(root / "missing.safetensors") if which == "missing" else str(junk)
    for argv in (["eval", "--checkpoint", ckpt, "--dataset", "msrvtt", "--annotations", str(ann),
                  "--videos", str(vid)],
                 ["caption", "--checkpoint", ckpt, str(vid / "video0.mp4")],
                 ["ood", "--checkpoint", ckpt, "--targets", f"m=msrvtt:{ann}:{vid}",
                  "--out", str(root / "ood")]):
        err = _run(capsys, *argv)
        assert ckpt in err and ("does not exist" in err or "not a readable" in err)


def test_the_installed_command_prints_no_traceback(tiny):
    root, ann, vid, junk = tiny
    proc = subprocess.run([sys.executable, "-m", "calm", "eval", "--checkpoint", str(junk),
                           "--dataset", "msrvtt", "--annotations", str(ann), "--videos", str(vid)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("calm eval: error:")
