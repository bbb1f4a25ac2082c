"""The synthetic benchmark: deterministic, in the real formats, ambiguous, domain-shifted.

Every test reads the files the way datasets.md describes the real benchmarks (json / csv / tabs),
then through calm's own loaders, so a format slip shows up here rather than in a training run.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from calm.data.synthetic import ANCHOR_LABELS, DOMAINS, SCALES, Difficulty, generate
from calm.data.synthetic.captions import clip_captions, didemo_paragraph, pretrain_caption
from calm.data.synthetic.pretrain_pairs import HELD_OUT, pretrain_pair
from calm.data.synthetic.world import fits, oracle_recall_at_1, sample_clip

LSMDC_CLIP = re.compile(r"^(?P<movie>.+)_(\d\d\.\d\d\.\d\d\.\d{3})-(\d\d\.\d\d\.\d\d\.\d{3})$")
DOMAIN_NAMES = ("msrvtt", "didemo", "lsmdc")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny benchmarks: two with seed 0 (one rendered by 2 processes), one with seed 1."""
    base = tmp_path_factory.mktemp("synth")
    out = {}
    for name, seed, workers in (("a", 0, 1), ("b", 0, 2), ("c", 1, 1)):
        summary = generate(base / name, scale="tiny", seed=seed, workers=workers)
        out[name] = (base / name, summary)
    return out


@pytest.fixture(scope="module")
def root(runs) -> Path:
    return runs["a"][0]


@pytest.fixture(scope="module")
def manifest(root) -> dict:
    return json.loads((root / "manifest.json").read_text())


def _domain(manifest, name) -> dict:
    return next(d for d in manifest["domains"] if d["name"] == name)


def _text_files(root: Path) -> dict[str, bytes]:
    """Every file except videos and the image array, by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "videos" not in p.parts and p.suffix != ".npy"
    }


def _videos(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and "videos" in p.parts)


def _decode(path: Path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _metadata(root, name) -> dict:
    return json.loads((root / name / "metadata.json").read_text())


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z][a-z'-]*", text.lower())


# ---- determinism -------------------------------------------------------------------------------


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_the_same_bytes_whatever_the_number_of_processes(runs):
    """Videos and pretraining pairs are rendered in parallel over clips: 1 and 2 processes
    write byte-identical files, videos and the pretraining image array included."""
    (a, summary_a), (b, summary_b) = runs["a"], runs["b"]
    assert summary_b["workers"] == 2 and summary_a["workers"] == 1
    hashes_a, hashes_b = _hashes(a), _hashes(b)
    assert len(_videos(a)) == summary_a["videos_written"] > 0
    assert hashes_a.keys() == hashes_b.keys() and "pretrain/images.npy" in hashes_a
    assert {name for name in hashes_a if hashes_a[name] != hashes_b[name]} == set()


def test_pretraining_pairs_come_out_in_order_from_parallel_chunks(tmp_path, monkeypatch):
    """More chunks than processes, the last one short: pair i still lands at row i."""
    import calm.data.synthetic as synthetic

    monkeypatch.setattr(synthetic, "PRETRAIN_CHUNK", 48)  # tiny: 128 pairs -> 48, 48, 32
    generate(tmp_path / "b", scale="tiny", seed=0, workers=2)
    images = np.load(tmp_path / "b" / "pretrain/images.npy")
    captions = json.loads((tmp_path / "b" / "pretrain/captions.json").read_text())
    for i in (0, 47, 48, 100, 127):
        image, text, _ = pretrain_pair(0, i, SCALES["tiny"], Difficulty(), HELD_OUT)
        assert np.array_equal(images[i], image) and captions[i] == text


def test_different_seed_differs(runs):
    (a, _), (c, _) = runs["a"], runs["c"]
    files_a, files_c = _text_files(a), _text_files(c)
    for name in ("msrvtt/annotations/MSRVTT_data.json", "lsmdc/annotations/LSMDC16_annos_val.csv"):
        assert files_a[name] != files_c[name]
    va = _decode(a / "msrvtt/videos/video0.mp4")
    vc = _decode(c / "msrvtt/videos/video0.mp4")
    assert va.shape == vc.shape and not np.array_equal(va, vc)


# ---- layout and formats ------------------------------------------------------------------------


def test_manifest_describes_the_layout(root, manifest):
    assert manifest["scale"] == "tiny" and manifest["seed"] == 0
    assert [d["name"] for d in manifest["domains"]] == list(DOMAIN_NAMES)
    assert [d["loader"] for d in manifest["domains"]] == list(DOMAIN_NAMES)
    for d in manifest["domains"]:
        assert (root / d["annotations"]).is_dir() and (root / d["videos"]).is_dir()
        assert (root / d["metadata"]).is_file()
    assert (root / manifest["anchors"]["file"]).is_file()
    assert manifest["video"]["width"] == manifest["video"]["height"] == SCALES["tiny"].size


def test_msrvtt_files_follow_the_published_format(root, manifest):
    ann = root / "msrvtt/annotations"
    data = json.loads((ann / "MSRVTT_data.json").read_text())
    video_ids = [v["video_id"] for v in data["videos"]]
    assert all(re.fullmatch(r"video\d+", v) for v in video_ids)
    captions = Counter(s["video_id"] for s in data["sentences"])
    assert set(captions) == set(video_ids)
    assert min(captions.values()) >= 5  # several captions per video
    assert len({s["sen_id"] for s in data["sentences"]}) == len(data["sentences"])
    with open(ann / "MSRVTT_train.9k.csv", newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["video_id"]
    train_ids = [r[0] for r in rows[1:]]
    with open(ann / "MSRVTT_JSFUSION_test.csv", newline="") as f:
        test = list(csv.DictReader(f))
    assert list(test[0]) == ["key", "vid_key", "video_id", "sentence"]
    assert [r["key"] for r in test] == [f"ret{i}" for i in range(len(test))]
    assert all(r["vid_key"] == "msr" + r["video_id"][len("video") :] for r in test)
    test_ids = [r["video_id"] for r in test]
    assert len(set(test_ids)) == len(test_ids) == SCALES["tiny"].test  # one caption per video
    assert not set(test_ids) & set(train_ids)
    by_video = {}
    for s in data["sentences"]:
        by_video.setdefault(s["video_id"], []).append(s["caption"])
    assert all(r["sentence"] in by_video[r["video_id"]] for r in test)
    for v in train_ids + test_ids:
        assert (root / "msrvtt/videos" / f"{v}.mp4").is_file()
    for name in ("7k", "full"):
        assert any(ann.glob(f"MSRVTT_*{name}.csv"))


def test_didemo_files_follow_the_published_format(root):
    ann = root / "didemo/annotations"
    ids = set()
    for split in ("train", "val", "test"):
        entries = json.loads((ann / f"{split}_data.json").read_text())
        assert isinstance(entries, list)
        for e in entries:
            assert set(e) >= {"video", "description", "times", "annotation_id"}
            assert isinstance(e["annotation_id"], int) and e["times"] == [[0, 0]]
            assert Path(e["video"]).suffix in (".mp4", ".mov", ".m4v")
            assert e["description"].endswith(".")
            assert (root / "didemo/videos" / e["video"]).is_file()
            ids.add(e["annotation_id"])
        per_video = Counter(e["video"] for e in entries)
        assert max(per_video.values()) >= 2  # paragraphs of several sentences
        listed = (ann / f"{split}_list.txt").read_text().split("\n")[:-1]
        assert listed == list(dict.fromkeys(e["video"] for e in entries))
    assert len(ids) == sum(
        len(json.loads((ann / f"{s}_data.json").read_text())) for s in ("train", "val", "test")
    )


def test_lsmdc_files_follow_the_published_format(root):
    ann = root / "lsmdc/annotations"
    files = {
        "train": "LSMDC16_annos_training.csv",
        "val": "LSMDC16_annos_val.csv",
        "test": "LSMDC16_challenge_1000_publictect.csv",
    }
    sentences = []
    for split, name in files.items():
        lines = (ann / name).read_text().splitlines()
        clips = []
        for line in lines:
            fields = line.split("\t")
            assert len(fields) == 6, line
            clip_id, a0, a1, e0, e1, sentence = fields
            match = LSMDC_CLIP.match(clip_id)
            assert match, clip_id
            assert clip_id.endswith(f"_{a0}-{a1}") and (a0, a1) == (e0, e1)
            assert (root / "lsmdc/videos" / match["movie"] / f"{clip_id}.avi").is_file()
            clips.append(clip_id)
            sentences.append(sentence)
        if split == "test":
            assert len(set(clips)) == len(clips) == SCALES["tiny"].test
    assert any("SOMEONE" in s for s in sentences)


def test_videos_decode_with_the_expected_frames(root, manifest):
    size = manifest["video"]["width"]
    for d in manifest["domains"]:
        videos = _videos(root / d["name"])
        expected = sum(info["videos"] for info in d["splits"].values() if isinstance(info, dict))
        assert len(videos) == expected
        for path in videos:
            frames = _decode(path)
            assert frames.shape == (d["frames"], size, size, 3), path
        with av.open(str(videos[0])) as container:
            assert container.streams.video[0].average_rate == d["fps"]


# ---- what the benchmark models -----------------------------------------------------------------


def test_information_imbalance(root, manifest):
    for name in DOMAIN_NAMES:
        meta = _metadata(root, name)
        clips = [it["attributes"] for it in meta["splits"]["train"]]
        mentions = [t["mention"] for it in meta["splits"]["train"] for t in it["texts"]]
        owners = [i for i, it in enumerate(meta["splits"]["train"]) for _ in it["texts"]]
        # every caption is true of its own clip, and names only part of it
        assert all(fits(m, clips[v]) for m, v in zip(mentions, owners))
        named_everything = [
            m for m in mentions if {"shape", "colour", "motion", "background"} <= set(m)
        ]
        assert len(named_everything) <= 0.2 * len(mentions)
        # one caption fits several clips
        assert any(sum(fits(m, c) for c in clips) >= 2 for m in mentions), name
    # one clip fits several captions
    msr = _metadata(root, "msrvtt")["splits"]["train"]
    assert all(len({t["text"] for t in it["texts"]}) >= 2 for it in msr)
    for d in manifest["domains"]:
        assert 0 < d["test_oracle"]["oracle_t2v_r1"] <= 100


def test_oracle_counts_fitting_clips():
    clip_a = {
        "background": "sky",
        "main": {"shape": "circle", "colour": "red", "size": "small", "motion": "left"},
        "second": {"shape": "star", "colour": "blue", "size": "large", "motion": "stay"},
    }
    clip_b = {
        "background": "sky",
        "main": {"shape": "star", "colour": "blue", "size": "small", "motion": "up"},
        "second": None,
    }
    assert fits({"shape": "star"}, clip_a) and fits({"shape": "star"}, clip_b)
    assert fits({"colour": "red", "second": {"shape": "star"}}, clip_a)
    assert not fits({"colour": "red", "second": {}}, clip_b)
    assert not fits({"shape": "circle", "background": "night"}, clip_a)
    result = oracle_recall_at_1([{"shape": "star"}, {"motion": "left"}], [1, 0], [clip_a, clip_b])
    assert result["oracle_t2v_r1"] == 75.0 and result["texts_fitting_several"] == 1


def test_domains_differ_in_wording_and_pixels(root):
    vocab = {}
    for name in DOMAIN_NAMES:
        meta = _metadata(root, name)
        texts = [t["text"] for s in meta["splits"].values() for it in s for t in it["texts"]]
        vocab[name] = {w for t in texts for w in _words(t)}
    for a, b in (("msrvtt", "didemo"), ("msrvtt", "lsmdc"), ("didemo", "lsmdc")):
        shared = vocab[a] & vocab[b]
        assert len(shared) / len(vocab[a] | vocab[b]) < 0.6, (a, b)
        assert shared, (a, b)  # the concepts are shared; out of domain is not impossible
    assert "someone" in vocab["lsmdc"] and "someone" not in vocab["msrvtt"]

    def stats(name):
        frames = np.concatenate([_decode(p) for p in _videos(root / name)]).astype(np.float32)
        lum = frames.mean(-1)
        return lum.mean(), lum[:, :2].mean(), np.abs(np.diff(lum, axis=2)).mean()

    msr, did, lsm = stats("msrvtt"), stats("didemo"), stats("lsmdc")
    assert lsm[0] < 0.8 * msr[0]  # darker film look
    assert lsm[1] < 12  # letterbox bars
    assert did[2] > 1.2 * msr[2]  # textured, noisier backgrounds


def test_anchor_labels_are_their_own_vocabulary(root):
    labels = (root / "anchors.txt").read_text().splitlines()
    assert labels == list(ANCHOR_LABELS)
    assert 30 <= len(labels) <= 80 and len(set(labels)) == len(labels)
    model_anchors = pytest.importorskip("calm.model.anchors")
    assert model_anchors.load_labels(str(root / "anchors.txt")) == labels

    def norm(s):
        return " ".join(_words(s))

    captions = {
        norm(t["text"])
        for name in DOMAIN_NAMES
        for s in _metadata(root, name)["splits"].values()
        for it in s
        for t in it["texts"]
    }
    # many more captions than a tiny benchmark holds, straight from the caption generators
    difficulty = Difficulty()
    for i in range(1500):
        rng = np.random.default_rng([11, i])
        name = DOMAIN_NAMES[i % 3]
        clip = sample_clip(rng, DOMAINS[name], difficulty)
        if name == "didemo":
            texts = didemo_paragraph(rng, clip, difficulty, DOMAINS[name], 4)
        else:
            texts = clip_captions(rng, clip, difficulty, DOMAINS[name], 4)
        captions.update(norm(t) for t, _ in texts)
    for label in labels:
        assert norm(label) not in captions
        assert not any(norm(label) in c for c in captions), label


def test_anchor_words_are_taught_by_pretraining_captions():
    difficulty, style = Difficulty(), DOMAINS["msrvtt"]
    vocab = set()
    for i in range(3000):
        rng = np.random.default_rng([7, i])
        clip = sample_clip(rng, DOMAINS[("msrvtt", "didemo", "lsmdc")[i % 3]], difficulty)
        text, _ = pretrain_caption(rng, clip, difficulty, style, 0.35, 0.5)
        vocab.update(_words(text))
    missing = {w for label in ANCHOR_LABELS for w in _words(label)} - vocab
    assert not missing


def test_pretrain_split(root, manifest):
    images = np.load(root / "pretrain/images.npy")
    captions = json.loads((root / "pretrain/captions.json").read_text())
    n, size = SCALES["tiny"].pretrain, SCALES["tiny"].size
    assert images.shape == (n, size, size, 3) and images.dtype == np.uint8
    assert len(captions) == n and all(isinstance(c, str) and c for c in captions)
    assert manifest["pretrain"]["shape"] == [n, size, size, 3]
    meta = json.loads((root / "pretrain/metadata.json").read_text())
    assert len(meta) == n
    with_motion = sum("motion" in m["mention"] for m in meta)
    assert with_motion < 0.6 * n  # mostly static descriptions: a frame cannot show much motion
    assert len({m["style"] for m in meta}) == 3


# ---- through calm's loaders and command line ---------------------------------------------------


def test_loaders_read_every_split(root, manifest):
    loaders = pytest.importorskip("calm.data.benchmarks.common")
    for d in manifest["domains"]:
        for split, info in d["splits"].items():
            if not isinstance(info, dict):
                continue
            options = {"val_size": 0} if d["loader"] == "msrvtt" else {}
            ann = loaders.load_split(
                d["loader"], root / d["annotations"], root / d["videos"], split, options
            )
            assert len(ann.videos) == info["videos"], (d["name"], split)
            assert len(ann.texts) == info["texts"], (d["name"], split)
            assert all(v.path.is_file() for v in ann.videos)
    msr = _domain(manifest, "msrvtt")
    carved = loaders.load_split(
        "msrvtt", root / msr["annotations"], root / msr["videos"], "val", msr["loader_options"]
    )
    assert len(carved.videos) == SCALES["tiny"].val


def test_cli_writes_and_refuses_foreign_folders(tmp_path, capsys):
    from calm.cli.main import main

    out = tmp_path / "bench"
    assert main(["synth", "--out", str(out), "--scale", "tiny", "--seed", "2"]) == 0
    assert "msrvtt" in capsys.readouterr().out
    # an earlier calm synth output is replaced without --force
    assert main(["synth", "--out", str(out), "--scale", "tiny", "--seed", "3"]) == 0
    assert json.loads((out / "manifest.json").read_text())["seed"] == 3
    foreign = tmp_path / "foreign"
    (foreign / "msrvtt").mkdir(parents=True)
    assert main(["synth", "--out", str(foreign), "--scale", "tiny"]) == 2
    assert "not written by calm synth" in capsys.readouterr().err
    assert (foreign / "msrvtt").is_dir()


def test_object_radius_sets_how_large_objects_are():
    """Difficulty.object_radius is the medium object's radius (fraction of the frame width), scaled
    by the size word and the domain: doubling it doubles every object, nothing else changes."""
    style = DOMAINS["msrvtt"]
    small, large = Difficulty(object_radius=0.05), Difficulty(object_radius=0.1)
    for i in range(50):
        a = sample_clip(np.random.default_rng([3, i]), style, small)
        b = sample_clip(np.random.default_rng([3, i]), style, large)
        assert [o.shape for o in a.objects] == [o.shape for o in b.objects]
        for oa, ob in zip(a.objects, b.objects):
            assert ob.radius == pytest.approx(2 * oa.radius)
            factor = {"small": 0.65, "medium": 1.0, "large": 1.45}[oa.size]
            assert oa.radius == pytest.approx(0.05 * factor * style.object_scale)


def test_the_large_scale_trains_as_the_default_and_tests_on_1000_clips():
    """Issue 20's evidence scale: a run on `large` trains exactly as on `default` (same training
    and validation clips: every clip's stream is seeded by its index), with 1,000 test clips a
    domain; the CLI offers every scale."""
    import dataclasses

    from calm.cli.synth import SCALE_NAMES
    from calm.data.synthetic import SCALES

    assert SCALE_NAMES == tuple(SCALES)
    large, default = SCALES["large"], SCALES["default"]
    assert large.test == 1000
    assert dataclasses.replace(large, name="default", test=default.test) == default
