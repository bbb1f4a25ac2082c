"""Own data (`data.dataset: jsonl` / `csv`): parsing, errors by line, the carved val split, and a
synthetic benchmark converted to JSONL / CSV evaluating to exactly its MSR-VTT-format metrics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calm.cli.main import main
from calm.data.benchmarks.common import get_loader, load_split
from calm.data.benchmarks.convert import convert_annotations
from calm.data.check import check_split
from calm.data.errors import DataError
from calm.data.synthetic import generate


def write_jsonl(path: Path, items: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in items))
    return path


ITEMS = [
    {"video": "a.mp4", "captions": ["a dog runs", "  a dog   running "], "split": "train"},
    {"video": "sub/b.mp4", "caption": "a cat sleeps", "split": "train", "note": "ignored"},
    {"video": "/abs/c.mp4", "caption": "rain on a window", "split": "test"},
    {"video": "a.mp4", "caption": "the dog again", "split": "train"},
    {"video": "d.mp4", "caption": "a bird", "split": "val"},
]


def test_jsonl_splits_paths_and_order(tmp_path):
    ann = write_jsonl(tmp_path / "ann" / "data.jsonl", ITEMS[:2] + [""] + ITEMS[2:])
    train = load_split("jsonl", ann, tmp_path / "vids", "train")
    assert [v.video_id for v in train.videos] == ["a.mp4", "sub/b.mp4"]
    assert [v.path for v in train.videos] == [tmp_path / "vids/a.mp4", tmp_path / "vids/sub/b.mp4"]
    assert [(t.text, t.video_index) for t in train.texts] == [
        ("a dog runs", 0), ("a dog running", 0), ("a cat sleeps", 1), ("the dog again", 0)]
    assert [t.text_id for t in train.texts] == ["line1:0", "line1:1", "line2", "line5"]
    test = load_split("jsonl", ann, tmp_path / "vids", "test")
    assert test.videos[0].path == Path("/abs/c.mp4")
    # --annotations may be the folder holding data.jsonl
    assert load_split("jsonl", ann.parent, tmp_path / "vids", "val").texts[0].text == "a bird"
    assert get_loader("jsonl", ann, tmp_path).splits() == ["train", "test", "val"]


def test_csv_rows_one_caption_each(tmp_path):
    ann = tmp_path / "data.csv"
    ann.write_text('video,caption,split,extra\na.mp4,"a dog, running",train,x\n'
                   "b.mp4,a cat,test,y\na.mp4,the dog again,train,z\n")
    train = load_split("csv", tmp_path, tmp_path / "v", "train")
    assert [(t.text, t.video_index, t.text_id) for t in train.texts] == [
        ("a dog, running", 0, "line2"), ("the dog again", 0, "line4")]
    assert len(train.videos) == 1


@pytest.mark.parametrize("line, message", [
    ("{not json", "line 2: not valid JSON"),
    ('["a list"]', "line 2: expected a JSON object"),
    ('{"caption": "x", "split": "train"}', "line 2: missing key 'video'"),
    ('{"video": "a.mp4", "caption": "x"}', "line 2: missing key 'split'"),
    ('{"video": "a.mp4", "split": "train"}', "line 2: give either 'captions'"),
    ('{"video": "a.mp4", "caption": "x", "captions": ["y"], "split": "train"}', "give either"),
    ('{"video": "a.mp4", "captions": [], "split": "train"}', "line 2: 'captions' must be"),
    ('{"video": "a.mp4", "captions": ["ok", 3], "split": "train"}', "line 2: caption 1"),
    ('{"video": "a.mp4", "caption": "   ", "split": "train"}', "line 2: caption 0: empty"),
    ('{"video": "", "caption": "x", "split": "train"}', "line 2: 'video' must be"),
    ('{"video": "a.mp4", "caption": "x", "split": ""}', "line 2: 'split' must be"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, line, message):
    ann = write_jsonl(tmp_path / "data.jsonl", [ITEMS[0], line])
    with pytest.raises(DataError, match=message) as exc:
        load_split("jsonl", ann, tmp_path, "train")
    assert str(ann) in str(exc.value)


@pytest.mark.parametrize("text, message", [
    ("video,caption\na.mp4,x\n", "line 1: missing column"),
    ("video,caption,split\na.mp4,x\n", "line 2: too few fields"),
    ("video,caption,split\na.mp4,x,train\n,y,train\n", "line 3: 'video' must be"),
    ("video,caption,split\na.mp4,,train\n", "line 2: caption 0: empty"),
])
def test_csv_errors_name_file_and_line(tmp_path, text, message):
    (tmp_path / "data.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        load_split("csv", tmp_path / "data.csv", tmp_path, "train")


def test_missing_file_folder_and_split(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        get_loader("jsonl", tmp_path / "nope.jsonl", tmp_path)
    with pytest.raises(DataError, match="holds no data.csv"):
        get_loader("csv", tmp_path, tmp_path)
    ann = write_jsonl(tmp_path / "data.jsonl", ITEMS)
    with pytest.raises(DataError, match="unknown split 'dev'"):
        load_split("jsonl", ann, tmp_path, "dev")
    with pytest.raises(DataError, match="unknown option"):
        get_loader("jsonl", ann, tmp_path, {"val_sise": 2})
    with pytest.raises(DataError, match="already has 'val' entries"):
        load_split("jsonl", ann, tmp_path, "train", {"val_size": 1})
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no entries"):
        load_split("jsonl", tmp_path / "empty.jsonl", tmp_path, "test")


def _train_only(n: int) -> list[dict]:
    return [{"video": f"v{i:02d}.mp4", "captions": [f"clip {i}", f"clip {i} again"],
             "split": "train"} for i in range(n)] + [
        {"video": "t.mp4", "caption": "test clip", "split": "test"}]


def test_val_is_carved_from_train_when_absent_and_recorded(tmp_path):
    ann = write_jsonl(tmp_path / "data.jsonl", _train_only(30))
    assert "val" in get_loader("jsonl", ann, tmp_path).splits()
    train = load_split("jsonl", ann, tmp_path, "train")
    val = load_split("jsonl", ann, tmp_path, "val")
    carve = val.info["val_carve"]
    assert carve["size"] == 3 == len(val.videos)  # 10% of 30 by default
    assert carve == train.info["val_carve"] and carve["seed"] == 0
    assert carve["video_ids"] == [v.video_id for v in val.videos]
    assert not {v.video_id for v in train.videos} & {v.video_id for v in val.videos}
    assert len(train.videos) + len(val.videos) == 30 and len(val.texts) == 6
    other = load_split("jsonl", ann, tmp_path, "val", {"val_size": 5, "val_seed": 1})
    assert len(other.videos) == 5 and other.info["val_carve"]["seed"] == 1
    # the same carve every time (seeded), and val_size 0 disables it
    assert load_split("jsonl", ann, tmp_path, "val").info == val.info
    assert "val" not in get_loader("jsonl", ann, tmp_path, {"val_size": 0}).splits()
    with pytest.raises(DataError, match="leaves no training videos"):
        load_split("jsonl", ann, tmp_path, "val", {"val_size": 30})


caption_text = st.text(alphabet="abc xyz,\"'é", min_size=1, max_size=12).filter(
    lambda s: s.split())


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.integers(0, 4), st.lists(caption_text, min_size=1, max_size=3),
                               st.sampled_from(["train", "test"])), min_size=1, max_size=12),
       fmt=st.sampled_from(["jsonl", "csv"]))
def test_conversion_round_trips_any_split(tmp_path_factory, rows, fmt):
    """JSONL -> loader -> convert (either format) -> loader gives the same texts, videos, order."""
    tmp = tmp_path_factory.mktemp("rt")
    items = [{"video": f"d/v{v}.mp4", "captions": caps, "split": split} for v, caps, split in rows]
    src = write_jsonl(tmp / "src.jsonl", items)
    options = {"val_size": 0}
    out = convert_annotations("jsonl", src, tmp / "vids", tmp / f"data.{fmt}",
                              splits=get_loader("jsonl", src, tmp, options).splits(),
                              options=options)
    for split in out["splits"]:
        a = load_split("jsonl", src, tmp / "vids", split, options)
        b = load_split(fmt, tmp / f"data.{fmt}", tmp / "vids", split, options)
        assert [v.path for v in a.videos] == [v.path for v in b.videos]
        assert [(t.text, t.video_index) for t in a.texts] == [
            (t.text, t.video_index) for t in b.texts]


# ---- a synthetic benchmark as own data, through the engine and the command line ----------------


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("own_synth")
    generate(root, scale="tiny", seed=4)
    manifest = json.loads((root / "manifest.json").read_text())
    domain = next(d for d in manifest["domains"] if d["name"] == "msrvtt")
    return root, domain


def _domain_paths(synth):
    root, domain = synth
    return root / domain["annotations"], root / domain["videos"], domain["loader_options"]


def test_converted_synthetic_domain_evaluates_to_identical_metrics(synth, tmp_path):
    from calm.config import ExperimentConfig, from_dict
    from calm.engine.drivers import evaluate_checkpoint
    from calm.engine.models import model_from_config

    ann, vids, options = _domain_paths(synth)
    jsonl = tmp_path / "own" / "data.jsonl"
    csv_file = tmp_path / "own" / "data.csv"
    assert main(["convert-annotations", "--dataset", "msrvtt", "--annotations", str(ann),
                 "--videos", str(vids), "--out", str(jsonl),
                 "--option", f"val_size={options['val_size']}"]) == 0
    convert_annotations("msrvtt", ann, vids, csv_file, options=options)
    cfg = from_dict(ExperimentConfig, {
        "model": {"backbone": {"name": "calm-micro"}, "anchors": {"labels": "coco"},
                  "fusion": {"name": "xpool", "dropout": 0.0}, "alignment": {"name": "vae"}},
        "data": {"num_frames": 4, "num_workers": 0},
        "train": {"eval_batch_size": 8},
    })
    loaded = model_from_config(cfg)  # one random-init model, scored on both copies of the data
    for split in ("test", "val", "train"):
        ref = evaluate_checkpoint("m", "msrvtt", ann, vids, split, loaded=loaded, options=options)
        for name, path in (("jsonl", jsonl.parent), ("csv", csv_file)):
            own = evaluate_checkpoint("m", name, path, vids, split, loaded=loaded)
            assert own["n_texts"] == ref["n_texts"] and own["n_videos"] == ref["n_videos"]
            for key in ("t2v", "v2t"):
                assert own[key] == ref[key], (name, split, key)


def test_data_check_reads_own_data(synth, tmp_path):
    ann, vids, options = _domain_paths(synth)
    jsonl = tmp_path / "data.jsonl"
    convert_annotations("msrvtt", ann, vids, jsonl, options=options)
    report = check_split("jsonl", jsonl, vids, "test")
    assert report["ok"] and report["n_videos"] == 6 and report["annotations"] == str(jsonl)
    # a broken and a missing video are reported, not fatal
    lines = jsonl.read_text().splitlines()
    (tmp_path / "broken.mp4").write_bytes(b"not a video")
    lines += [json.dumps({"video": str(tmp_path / "broken.mp4"), "caption": "x", "split": "test"}),
              json.dumps({"video": "gone.mp4", "caption": "y", "split": "test"})]
    jsonl.write_text("\n".join(lines) + "\n")
    report = check_split("jsonl", jsonl, vids, "test")
    assert not report["ok"]
    assert report["missing_videos"]["first"] == ["gone.mp4"]
    assert report["undecodable_videos"]["count"] == 1


def test_train_and_ood_on_own_data(synth, tmp_path, capsys):
    """A short `calm train` on JSONL with a carved val split (missing videos skipped), then
    `calm ood` with a JSONL target."""
    ann, vids, options = _domain_paths(synth)
    jsonl = tmp_path / "data.jsonl"
    convert_annotations("msrvtt", ann, vids, jsonl, splits=["train", "test"],
                        options={"val_size": 0})
    lost = {"video": "gone.mp4", "caption": "a lost clip", "split": "train"}
    with open(jsonl, "a") as f:
        f.write(json.dumps(lost) + "\n")
    cfg = {
        "model": {"backbone": {"name": "calm-micro"}, "anchors": {"labels": "coco"},
                  "fusion": {"name": "meanP"}, "alignment": {"name": "vae"}},
        "data": {"dataset": "jsonl", "annotations": str(jsonl), "videos": str(vids),
                 "num_frames": 4, "num_workers": 0, "missing_video": "skip",
                 "options": {"val_size": 3}},
        "train": {"epochs": 1, "max_steps": 2, "batch_size": 8, "eval_batch_size": 8},
    }
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(cfg))
    run = tmp_path / "run"
    assert main(["train", "--config", str(tmp_path / "exp.yaml"), "--out", str(run),
                 "--no-progress"]) == 0
    splits = json.loads((run / "splits.json").read_text())
    assert "val_carve" in json.dumps(splits) and '"size": 3' in json.dumps(splits)
    test = json.loads((run / "test_metrics.json").read_text())
    assert test["n_videos"] == 6
    capsys.readouterr()
    assert main(["ood", "--checkpoint", f"m={run / 'checkpoints' / 'best.safetensors'}",
                 "--targets", f"own=jsonl:{jsonl}:{vids}:test",
                 f"msr=msrvtt:{ann}:{vids}:test", "--out", str(tmp_path / "ood")]) == 0
    table = json.loads((tmp_path / "ood" / "ood.json").read_text())["results"]["m"]
    assert table["own"]["t2v"] == table["msr"]["t2v"]
